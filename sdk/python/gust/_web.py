"""Modal's web endpoint decorators: ``@gust.asgi_app()``, ``@gust.wsgi_app()``,
``@gust.web_server(port)``, ``@gust.fastapi_endpoint()`` (and its older name ``web_endpoint``).

Like the other markers (``_partial.py``) they only record an attribute, ``_gust_web``, on the
user's function; ``@app.function()`` publishes it, the server gives the function a URL
(``https://<workspace>--<label>.<base domain>``) and its containers' runner serves the app
(``_webserve.py``). Put them under ``@app.function()``::

    @app.function()
    @gust.wsgi_app()
    def web():
        return my_wsgi_app
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from . import exception as exc

_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _check_label(label: Optional[str]) -> None:
    if label is None:
        return
    if not isinstance(label, str) or not _LABEL_RE.match(label) or "--" in label:
        raise exc.InvalidError(
            f"Invalid label: {label!r}. A label may contain only lowercase letters, digits and dashes, "
            "at most 63 characters, without a leading, trailing or double dash.")


def _check_common(name: str, positional: Any, label: Optional[str], custom_domains: Any,
                  requires_proxy_auth: Any) -> None:
    if positional is not None:
        raise exc.InvalidError(f"Positional arguments are not allowed. Did you forget parentheses? "
                               f"Suggestion: `@modal.{name}()`.")
    _check_label(label)
    if custom_domains:
        raise exc.InvalidError(f"@modal.{name}(custom_domains=...) is not supported by gust: web endpoints are "
                               "served under the server's --ingress-domain")
    if not isinstance(requires_proxy_auth, bool):
        raise exc.InvalidError(f"@modal.{name}(requires_proxy_auth=...) must be a bool")


def _mark(name: str, conf: dict) -> Callable[[Callable], Callable]:
    def mark(f: Callable) -> Callable:
        if not callable(f) or isinstance(f, type):
            raise exc.InvalidError(f"@modal.{name}() must decorate a function, got {f!r}")
        if getattr(f, "_gust_raw_f", None) is not None:
            raise exc.InvalidError(f"@modal.{name}() goes under @app.function(), not above it")
        if getattr(f, "_gust_web", None) is not None:
            raise exc.InvalidError(f"{getattr(f, '__name__', f)} has two web endpoint decorators")
        f._gust_web = conf  # type: ignore[attr-defined]
        return f
    return mark


def asgi_app(_warn_parentheses_missing: Any = None, *, label: Optional[str] = None,
             custom_domains: Any = None, requires_proxy_auth: bool = False) -> Callable:
    """Serve the ASGI app that the decorated function returns (FastAPI, Starlette, or a plain
    ``async def app(scope, receive, send)``); websockets pass through."""
    _check_common("asgi_app", _warn_parentheses_missing, label, custom_domains, requires_proxy_auth)
    return _mark("asgi_app", {"type": "asgi", "label": label, "requires_proxy_auth": requires_proxy_auth})


def wsgi_app(_warn_parentheses_missing: Any = None, *, label: Optional[str] = None,
             custom_domains: Any = None, requires_proxy_auth: bool = False) -> Callable:
    """Serve the WSGI app that the decorated function returns (Flask, Django, or a plain callable)."""
    _check_common("wsgi_app", _warn_parentheses_missing, label, custom_domains, requires_proxy_auth)
    return _mark("wsgi_app", {"type": "wsgi", "label": label, "requires_proxy_auth": requires_proxy_auth})


def web_server(port: Any = None, *, startup_timeout: float = 5.0, label: Optional[str] = None,
               custom_domains: Any = None, requires_proxy_auth: bool = False) -> Callable:
    """Expose a server that the decorated function starts (e.g. a subprocess) on ``port``; the
    container takes requests once the port accepts connections, within ``startup_timeout``."""
    if port is None or callable(port):
        raise exc.InvalidError("The first argument of `@web_server` must be the local port the server listens "
                               "on, such as `@modal.web_server(8000)`.")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise exc.InvalidError(f"The first argument of `@web_server` must be a local port (1-65535), such as "
                               f"`@modal.web_server(8000)`; got {port!r}.")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
        raise exc.InvalidError("The `startup_timeout` argument of `@web_server` must be positive.")
    _check_common("web_server", None, label, custom_domains, requires_proxy_auth)
    return _mark("web_server", {"type": "web_server", "port": port, "startup_timeout": float(startup_timeout),
                                "label": label, "requires_proxy_auth": requires_proxy_auth})


def fastapi_endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: Optional[str] = None,
                     custom_domains: Any = None, docs: bool = False, requires_proxy_auth: bool = False) -> Callable:
    """Serve the decorated function as one FastAPI route at ``/``. FastAPI must be in the
    function's image (``Image.debian_slim().pip_install("fastapi[standard]")``), as on Modal."""
    _check_common("fastapi_endpoint", _warn_parentheses_missing, label, custom_domains, requires_proxy_auth)
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise exc.InvalidError(f"@modal.fastapi_endpoint(method=...) must be one of {', '.join(_METHODS)}; got {method!r}")
    return _mark("fastapi_endpoint", {"type": "fastapi", "method": method.upper(), "docs": bool(docs), "label": label,
                                      "requires_proxy_auth": requires_proxy_auth})


def web_endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: Optional[str] = None,
                 custom_domains: Any = None, docs: bool = False, requires_proxy_auth: bool = False) -> Callable:
    """Modal's older name for ``fastapi_endpoint``."""
    if _warn_parentheses_missing is not None:
        _check_common("web_endpoint", _warn_parentheses_missing, None, None, False)
    return fastapi_endpoint(method=method, label=label, custom_domains=custom_domains, docs=docs,
                            requires_proxy_auth=requires_proxy_auth)


def class_web(raw_cls: type) -> Optional[dict]:
    """The ``web`` spec of an ``@app.cls`` class: its one web endpoint method, or None."""
    found = {}
    for klass in reversed(raw_cls.__mro__):
        for name, v in vars(klass).items():
            if getattr(v, "_gust_web", None) is not None:
                found[name] = v
    if not found:
        return None
    if len(found) > 1:
        raise exc.InvalidError(f"class {raw_cls.__name__} has {len(found)} web endpoints ({', '.join(sorted(found))}): "
                               "gust serves one per class yet; put the others on classes or functions of their own")
    name, f = next(iter(found.items()))
    if getattr(f, "_gust_method", False):
        raise exc.InvalidError(f"{raw_cls.__name__}.{name}: a web endpoint is not also a @modal.method()")
    out = spec(f) or {}
    out["cls_method"] = name
    return out


def spec(f: Any) -> Optional[dict]:
    """The ``web`` part of a function's spec, or None."""
    conf = getattr(f, "_gust_web", None)
    if conf is None:
        return None
    return {k: v for k, v in conf.items() if v is not None and v is not False}


def web_url(fn: Any) -> Optional[str]:
    """``Function.get_web_url()``: the URL of a web endpoint, None for other functions."""
    if getattr(fn, "_web_url", None):
        return fn._web_url
    opts = getattr(fn, "_options", None)
    if opts is not None and not opts.get("web"):
        return None
    client, fid = fn._handle.resolve()
    data = client.json("GET", f"/v1/functions/{fid}")
    url = data.get("web_url") or None
    fn._web_url = url
    return url


def refuse_remote(fn: Any, how: str) -> None:
    """Modal refuses ``.remote()`` and the like on web endpoints."""
    opts = getattr(fn, "_options", None)
    if opts and opts.get("web"):
        url = getattr(fn, "_web_url", None) or "(its web URL)"
        raise exc.InvalidError(f"A webhook function cannot be invoked for remote execution with `.{how}`. "
                               f"Invoke this function via its web url {url} instead.")
