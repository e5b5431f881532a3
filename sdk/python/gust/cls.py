"""Classes: what ``@app.cls()`` returns, as ``modal.Cls``.

``Model(size=3)`` is an ``Obj`` holding the parameters; ``Model(size=3).predict`` is a
``Function`` bound to the method and parameters, so ``.remote()``, ``.map()``, ``.spawn()`` ...
work as for functions. A container makes one instance per distinct parameters, sets the
parameters as attributes, runs the ``@gust.enter()`` methods once, then serves calls.
"""

from __future__ import annotations

import inspect
import threading
import typing
from typing import Any, Callable, Dict, Optional

from . import exception as exc
from ._http import Client
from ._partial import MISSING, class_parameters
from .functions import Function, _Handle, _is_generator_function, encode_params
from ._lazy import LazyModule

asyncio = LazyModule("asyncio")

_PARAM_TYPES = (str, int, float, bool, bytes)


def class_methods(raw_cls: type) -> Dict[str, Callable]:
    """The ``@gust.method()`` methods of a class (base classes first), name → function."""
    out: Dict[str, Callable] = {}
    for klass in reversed(raw_cls.__mro__):
        for name, v in vars(klass).items():
            if getattr(v, "_gust_method", False) is True:
                out[name] = v
            else:
                out.pop(name, None)
    return out


def _hooks(raw_cls: type, attr: str) -> list:
    names: Dict[str, None] = {}
    for klass in reversed(raw_cls.__mro__):
        for name, v in vars(klass).items():
            if getattr(v, attr, False) is True:
                names[name] = None
            else:
                names.pop(name, None)
    return list(names)


class Cls:
    """A class registered with ``@app.cls()``. Call it with its parameters (keyword arguments
    declared with ``gust.parameter()``) to get an object whose methods run remotely."""

    def __init__(self, handle: _Handle, raw_cls: Optional[type] = None, *, app: Any = None,
                 options: Optional[dict] = None):
        self._handle = handle
        self._raw_cls = raw_cls
        self._gust_raw_cls = raw_cls  # the runner unwraps this (docs/functions.md)
        self._app = app
        self._options = options
        self._method_fns: Optional[Dict[str, Callable]] = class_methods(raw_cls) if raw_cls is not None else None
        self._parameters = class_parameters(raw_cls) if raw_cls is not None else None
        if raw_cls is not None:
            for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
                setattr(self, attr, getattr(raw_cls, attr, None))

    # Identity.

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: Optional[str] = None,
                  client: Optional[Client] = None) -> "Cls":
        """The class ``name`` of the deployed app ``app_name``; looked up on first use.
        Parameters are checked by the container, not here."""
        if not isinstance(app_name, str) or not app_name or not isinstance(name, str) or not name:
            raise exc.InvalidError("Cls.from_name needs the app's name and the class's name")
        return Cls(_Handle(name, lookup=(app_name, name, client)))

    @staticmethod
    def lookup(app_name: str, name: str, *, environment_name: Optional[str] = None,
               client: Optional[Client] = None) -> "Cls":
        return Cls.from_name(app_name, name, client=client).hydrate()

    def hydrate(self, client: Optional[Client] = None) -> "Cls":
        self._handle.resolve()
        return self

    @property
    def object_id(self) -> str:
        return self._handle.resolve()[1]

    def _web(self) -> Optional[dict]:
        """The class's web endpoint (its ``cls_method``), or None."""
        if self._options is not None:
            return self._options.get("web")
        if self._raw_cls is not None:
            return None
        self._handle.resolve()
        return ((self._handle.data or {}).get("spec") or {}).get("web")

    def _methods(self) -> Dict[str, bool]:
        """Method name → is_generator."""
        if self._method_fns is not None:
            return {n: _is_generator_function(f) for n, f in self._method_fns.items()}
        self._handle.resolve()
        data = self._handle.data or {}
        if data.get("kind", "class") != "class":
            raise exc.InvalidError(f"{self._handle.name!r} is a function, not a class: use gust.Function.from_name")
        return {n: bool((m or {}).get("is_generator")) for n, m in (data.get("methods") or {}).items()}

    def _gust_set_concurrency(self, max_inputs: int, target_inputs: Optional[int]) -> None:
        if self._options is None:
            raise exc.InvalidError("@gust.concurrent goes on a class defined with @app.cls")
        self._options["max_inputs"], self._options["target_inputs"] = max_inputs, target_inputs

    def with_options(self, **kwargs: Any) -> "Cls":
        """The class with some options changed (Modal's ``Cls.with_options``): cpu, memory,
        gpu, env, secrets, retries, timeout, min/max/buffer_containers, scaledown_window.
        ``Model.with_options(gpu="A100")(size=3).predict.remote(x)`` runs in containers of
        their own with those options; the class itself is unchanged."""
        from .app import _variant_options
        return self._variant(_variant_options(kwargs, "Cls.with_options()"))

    def with_concurrency(self, *, max_inputs: int, target_inputs: Optional[int] = None) -> "Cls":
        """The class with ``@gust.concurrent`` limits changed (Modal's ``Cls.with_concurrency``)."""
        from ._partial import concurrent
        concurrent(max_inputs=max_inputs, target_inputs=target_inputs)  # the same checks
        opts = {"max_inputs": max_inputs}
        if target_inputs is not None:
            opts["target_inputs"] = target_inputs
        return self._variant(opts)

    def _variant(self, opts: Dict[str, Any]) -> "Cls":
        from .functions import _VariantHandle
        c = Cls(_VariantHandle(self._handle, opts), self._raw_cls, app=self._app)
        if self._raw_cls is None:
            c._method_fns, c._parameters = None, None
        return c

    # Instances.

    def _check_params(self, kwargs: dict) -> Dict[str, Any]:
        declared = self._parameters
        if declared is None:  # looked up by name: the container checks them
            return dict(sorted(kwargs.items()))
        name = self._handle.name
        unknown = sorted(set(kwargs) - set(declared))
        if unknown:
            have = ", ".join(declared) or "none"
            raise exc.InvalidError(f"{name}() got unknown parameters {', '.join(unknown)} (declared with "
                                   f"gust.parameter(): {have})")
        try:
            hints = typing.get_type_hints(self._raw_cls)
        except Exception:  # noqa: BLE001 - annotations that do not resolve are not checked
            hints = {}
        values: Dict[str, Any] = {}
        for pname, p in declared.items():
            if pname in kwargs:
                if not p.init:
                    raise exc.InvalidError(f"{name}(): parameter {pname!r} has init=False and cannot be set")
                v = kwargs[pname]
                t = hints.get(pname)
                if t in _PARAM_TYPES and not isinstance(v, t) and not (t is float and isinstance(v, int)):
                    raise exc.InvalidError(
                        f"{name}(): parameter {pname!r} must be {t.__name__}, got {type(v).__name__}")
            elif p.default is not MISSING:
                v = p.default
            else:
                raise exc.InvalidError(f"{name}() is missing the parameter {pname!r} (it has no default)")
            values[pname] = v
        return dict(sorted(values.items()))

    def __call__(self, *args: Any, **kwargs: Any) -> "Obj":
        if args:
            raise exc.InvalidError(f"{self._handle.name}(...) takes its parameters as keyword arguments, "
                                   "e.g. Model(size=3)")
        return Obj(self, self._check_params(kwargs))

    def __repr__(self) -> str:
        return f"Cls({self._handle.name!r})"


class Obj:
    """An instance of a ``Cls``: its parameters, and its methods as Functions."""

    def __init__(self, cls: Cls, params: Dict[str, Any]):
        self._cls = cls
        self._param_values = params
        has_params = bool(params) or bool(cls._parameters)
        self._payload = encode_params(params) if has_params else None
        self._local: Any = None
        self._local_lock = threading.Lock()

    def _local_instance(self) -> Any:
        """The instance ``.local()`` calls run on: made once, parameters set, @enter methods run."""
        with self._local_lock:
            if self._local is None:
                raw = self._cls._raw_cls
                if raw is None:
                    raise exc.InvalidError("a class looked up by name cannot run locally; use .remote()")
                inst = raw()
                for k, v in self._param_values.items():
                    setattr(inst, k, v)
                for name in _hooks(raw, "_gust_enter"):
                    r = getattr(inst, name)()
                    if inspect.iscoroutine(r):
                        asyncio.run(r)
                self._local = inst
            return self._local

    def __getattr__(self, name: str) -> Function:
        if name.startswith("_"):  # also keeps copy/pickle from recursing before __init__
            raise AttributeError(name)
        web = self._cls._web()
        if web is not None and web.get("cls_method") == name:  # the web endpoint: get_web_url(), .local()
            raw_w = getattr(self._cls._raw_cls, name, None)
            fn = Function(self._cls._handle, raw_w, method=name, params=self._payload, app=self._cls._app,
                          local_self=self._local_instance if raw_w is not None else None, options={"web": web})
            fn._web_url = getattr(self._cls, "_web_url", None)
            self.__dict__[name] = fn
            return fn
        methods = self._cls._methods()
        if name not in methods:
            raise AttributeError(f"{self._cls._handle.name} has no method {name!r} "
                                 f"(its @gust.method()s: {', '.join(sorted(methods)) or 'none'})")
        raw_f = (self._cls._method_fns or {}).get(name)
        fn = Function(self._cls._handle, raw_f, is_generator=methods[name], method=name, params=self._payload,
                      local_self=self._local_instance if raw_f is not None else None, app=self._cls._app)
        self.__dict__[name] = fn  # later lookups skip __getattr__
        return fn

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._param_values.items())
        return f"{self._cls._handle.name}({args})"


__all__ = ["Cls", "Obj"]


from .functions import add_aio  # noqa: E402

add_aio(Cls, ["hydrate"])
