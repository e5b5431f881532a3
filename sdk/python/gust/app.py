"""App: the named group that functions and sandboxes belong to, as in ``modal.App``.

``@app.function(...)`` and ``@app.cls(...)`` only describe functions (and check their options):
nothing reaches the server until ``with app.run():`` (or ``gust run``) publishes them for the
length of the block, or ``app.deploy()`` (``gust deploy``) publishes them until the next deploy.
Publishing resolves (builds) the images, uploads the code (see _code.py) and sends
``POST /v1/apps/publish``. Inside a function's container the decorators run again when the
runner imports the module, and publish nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import _code, _container, _local_files, _web, output
from . import exception as exc
from ._http import Client, get_client
from .cls import Cls, class_methods
from .functions import Function, _Handle, _is_generator_function, add_aio
from .image import Image
from .retries import Retries
from .schedule import Schedule
from .secret import Secret

DEFAULT_SANDBOX_APP = "sandboxes"

# GPU types as Modal spells them (matched case-insensitively), each with an optional ":count".
GPU_TYPES = ("T4", "L4", "A10", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200", "ANY")

# Modal options that change nothing on gust: accepted so Modal programs run unchanged.
_IGNORED_OPTIONS = frozenset({
    "region", "cloud", "enable_memory_snapshot", "ephemeral_disk", "startup_timeout", "nonpreemptible",
    "restrict_modal_access", "max_inputs", "single_use_containers", "i6pn", "include_source",
    "experimental_options", "checkpointing_enabled", "serialized", "mounts", "environment_name",
    "_experimental_buffer_containers", "_experimental_proxy_ip", "_experimental_custom_scaling_factor",
    "_experimental_enable_gpu_snapshot", "_experimental_restrict_output", "_experimental_scheduler_placement",
    "_experimental_gpus", "rdma", "name", "scheduler_placement",
})
# Modal options gust cannot honour: accepted only when unset.
_UNSUPPORTED_OPTIONS = frozenset({"network_file_systems", "proxy", "cloud_bucket_mounts"})
# The containers' outbound network, as on Sandbox.create: passed to the server as they are.
_NETWORK_OPTIONS = ("block_network", "outbound_cidr_allowlist", "cidr_allowlist", "outbound_domain_allowlist")


class LocalEntrypoint:
    """A function marked ``@app.local_entrypoint()``: ``gust run FILE`` calls it on this machine,
    with the app running and its parameters taken from the command line."""

    def __init__(self, raw_f: Callable, app: "App", name: str):
        self._raw_f = raw_f
        self._gust_raw_f = raw_f
        self._app = app
        self.name = name
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(self, attr, getattr(raw_f, attr, None))
        self.__wrapped__ = raw_f

    @property
    def app(self) -> "App":
        return self._app

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LocalEntrypoint({self.name!r})"


def _check_number(name: str, v: Any, *, low: float, integer: bool = False, allow_none: bool = False,
                  strict: bool = False, hint: str = "") -> Any:
    if v is None and allow_none:
        return None
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok_type or isinstance(v, bool) or (v <= low if strict else v < low):
        bound = f"more than {low:g}" if strict else f"at least {low:g}"
        kind = "an integer" if integer else "a number"
        raise exc.InvalidError(f"{name} must be {kind} {bound}, got {v!r}" + (f" ({hint})" if hint else ""))
    return v


def _parse_gpu(gpu: Any) -> Any:
    """Check gpu= and spell it the server's way: "H100", "A100-80GB:2" or a list of such."""
    if gpu is None or gpu is False:
        return None
    if isinstance(gpu, (list, tuple)):
        if not gpu:
            raise exc.InvalidError("gpu=[] is empty: give GPU types in order of preference, e.g. ['H100', 'A100']")
        return [_parse_gpu_one(g) for g in gpu]
    return _parse_gpu_one(gpu)


def _parse_gpu_one(g: Any) -> str:
    if not isinstance(g, str):
        raise exc.InvalidError(f"gpu must be a string such as 'H100' or 'A100-80GB:2', got {g!r}")
    name, sep, count = g.strip().partition(":")
    t = name.strip().upper()
    if t not in GPU_TYPES:
        raise exc.InvalidError(f"gpu {g!r} is not a known GPU type; use one of {', '.join(GPU_TYPES)}, "
                               "optionally with a count as in 'H100:2'")
    if not sep:
        return t
    if not count.strip().isdigit() or not 1 <= int(count) <= 8:
        raise exc.InvalidError(f"gpu {g!r}: the count after ':' must be 1 to 8")
    return f"{t}:{int(count)}"


def _pair(name: str, v: Any) -> Tuple[Any, Any]:
    """Modal's cpu and memory: a number (the request) or a (request, limit) pair."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise exc.InvalidError(f"{name} must be a number or a (request, limit) pair, got {v!r}")
        return v[0], v[1]
    return v, None


def _options(*, image: Any, secrets: Any, env: Any, gpu: Any, cpu: Any, memory: Any, timeout: Any, retries: Any,
             min_containers: Any, max_containers: Any, buffer_containers: Any, scaledown_window: Any,
             schedule: Any = None, isolation: Any = None, concurrency_limit: Any = None, keep_warm: Any = None,
             container_idle_timeout: Any = None, allow_concurrent_inputs: Any = None, extra: Dict[str, Any],
             where: str) -> Dict[str, Any]:
    """Check a decorator's options before anything is sent; return them normalised."""
    network = _network_options(extra, where)
    volumes: list = []
    if extra.get("volumes"):
        from .volume import volume_mounts
        volumes = volume_mounts(extra["volumes"], where)
    for k, v in extra.items():
        if k in _NETWORK_OPTIONS or k == "volumes":
            continue
        if k in _UNSUPPORTED_OPTIONS:
            if v:
                raise exc.InvalidError(f"{where}: {k}= is not supported by gust yet")
        elif k not in _IGNORED_OPTIONS and not k.startswith("_experimental"):
            raise TypeError(f"{where} got an unexpected keyword argument '{k}'")
    # Modal's older names.
    if max_containers is None and concurrency_limit is not None:
        max_containers = concurrency_limit
    if keep_warm is not None and not min_containers:
        min_containers = keep_warm
    if container_idle_timeout is not None and scaledown_window == 60:
        scaledown_window = container_idle_timeout
    if image is not None and not isinstance(image, Image):
        raise exc.InvalidError(f"{where}: image must be a gust.Image, e.g. Image.debian_slim(), got {image!r}")
    secret_list = list(secrets or ())
    for s in secret_list:
        if not isinstance(s, Secret):
            raise exc.InvalidError(f"{where}: secrets must be gust.Secret objects, got {s!r}")
    env_d: Dict[str, str] = {}
    for k, v in (env or {}).items():
        if v is None:
            continue
        if not isinstance(k, str) or not isinstance(v, str):
            raise exc.InvalidError(f"{where}: env must map strings to strings, got {k!r}: {v!r}")
        env_d[k] = v
    cpu, cpu_limit = _pair("cpu", cpu)
    # A container's CPU quota is cpu × 100 ms per 100 ms; the kernel takes no less than 1 ms.
    _check_number("cpu", cpu, low=0.01, allow_none=True, hint="cores, e.g. cpu=2")
    _check_number("cpu limit", cpu_limit, low=0.01, allow_none=True)
    if cpu_limit is not None and cpu is not None and cpu_limit < cpu:
        raise exc.InvalidError(f"{where}: cpu=(request, limit): the limit {cpu_limit} is less than the request {cpu}")
    memory_request, memory_limit = _pair("memory", memory)
    memory = memory_limit if memory_limit is not None else memory_request  # gust's is one number: the limit
    _check_number("memory", memory, low=16, integer=True, allow_none=True, hint="MiB, e.g. memory=4096")
    _check_number("timeout", timeout, low=1, hint="seconds per input")
    _check_number("min_containers", min_containers, low=0, integer=True)
    _check_number("buffer_containers", buffer_containers, low=0, integer=True)
    _check_number("max_containers", max_containers, low=1, integer=True, allow_none=True)
    if max_containers is not None and max_containers < min_containers:
        raise exc.InvalidError(
            f"{where}: max_containers ({max_containers}) is less than min_containers ({min_containers})")
    _check_number("scaledown_window", scaledown_window, low=1, hint="seconds an idle container is kept")
    max_inputs, target_inputs = 1, None
    if allow_concurrent_inputs is not None:
        max_inputs = _check_number("allow_concurrent_inputs", allow_concurrent_inputs, low=1, integer=True)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise exc.InvalidError(f"{where}: schedule must be gust.Period(...) or gust.Cron(...), got {schedule!r}")
    if isolation not in (None, "runc", "gvisor"):
        raise exc.InvalidError(f"{where}: isolation must be 'runc' or 'gvisor', got {isolation!r}")
    return {"image": image, "secrets": secret_list, "env": env_d, "gpu": _parse_gpu(gpu), "cpu": cpu,
            "cpu_limit": cpu_limit,
            "memory": memory, "timeout": timeout, "retries": Retries._from(retries), "min_containers": min_containers,
            "max_containers": max_containers, "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window, "max_inputs": max_inputs, "target_inputs": target_inputs,
            "schedule": schedule, "isolation": isolation, "network": network, "volumes": volumes}


def _network_options(opts: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The network options of a decorator or a sandbox, as the API takes them (checked by the
    server, which answers Modal's errors for the combinations it refuses)."""
    out: Dict[str, Any] = {}
    if opts.get("block_network"):
        out["block_network"] = True
    for k in ("outbound_cidr_allowlist", "cidr_allowlist", "outbound_domain_allowlist"):
        v = opts.get(k)
        if v is None:
            continue
        if isinstance(v, str) or not all(isinstance(x, str) for x in v):
            raise exc.InvalidError(f"{where}: {k} must be a list of strings, got {v!r}")
        out[k] = list(v)
    if out.get("block_network") and any(k in out for k in ("outbound_cidr_allowlist", "cidr_allowlist", "outbound_domain_allowlist")):
        raise exc.InvalidError(f"{where}: an allowlist cannot be used when `block_network` is enabled")
    return out


def _apply_concurrency(opts: dict, obj: Any, batched: Any = None) -> None:
    conc = getattr(obj, "_gust_concurrency", None)
    if batched is not None:
        # The container gathers a batch from the inputs it holds at once: it must be sent
        # up to max_batch_size of them, and the autoscaler plans a batch per container.
        if conc is not None or opts.get("max_inputs", 1) > 1:
            raise exc.InvalidError(f"{getattr(obj, '__name__', obj)}: @gust.batched and @gust.concurrent (or "
                                   "allow_concurrent_inputs) cannot be used together")
        opts["max_inputs"] = opts["target_inputs"] = batched[0]
        return
    if conc is not None:
        opts["max_inputs"], opts["target_inputs"] = conc


class App:
    """An app: functions and classes registered with its decorators, and sandboxes.

    ``App.lookup(name, create_if_missing=True)`` finds (or makes) it on the server; ``App(name)``
    does so lazily, the first time its id is needed."""

    def __init__(self, name: Optional[str] = None, *, image: Any = None, secrets: Any = (),
                 volumes: Optional[dict] = None, include_source: Optional[bool] = None,
                 tags: Optional[dict] = None):
        if image is not None and not isinstance(image, Image):
            raise exc.InvalidError(f"App(image=...) must be a gust.Image, got {image!r}")
        self._volumes: list = []
        if volumes:
            from .volume import volume_mounts
            self._volumes = volume_mounts(volumes, "App(volumes=...)")
        for s in secrets or ():
            if not isinstance(s, Secret):
                raise exc.InvalidError(f"App(secrets=...) must be gust.Secret objects, got {s!r}")
        self._name = name
        self._image = image
        self._secrets = list(secrets or ())
        self._tags = dict(tags or {})
        self._app_id: Optional[str] = None
        self._data: Optional[dict] = None
        self._client: Optional[Client] = None  # the client that resolved _app_id
        self._lock = threading.Lock()
        self._functions: Dict[str, Function] = {}
        self._classes: Dict[str, Cls] = {}
        self._local_entrypoints: Dict[str, LocalEntrypoint] = {}
        self._running = False

    @classmethod
    def lookup(cls, name: str, *, client: Optional[Client] = None, environment_name: Optional[str] = None,
               create_if_missing: bool = False) -> "App":
        """The app called ``name``; create it if missing and ``create_if_missing`` (else NotFoundError)."""
        app = cls(name)
        app._lookup(client or get_client(), create_if_missing)
        return app

    def _lookup(self, client: Client, create: bool) -> str:
        data = client.json("POST", "/v1/apps/lookup", json={"name": self.name, "create_if_missing": create})
        self._data = data
        self._app_id = data["app_id"]
        self._client = client
        self._name = data.get("name") or self._name
        self._push_tags(client)
        return self._app_id

    def _push_tags(self, client: Client) -> None:
        """App(tags=...): merged into the server's tags once the app is known."""
        if self._tags and self._app_id and _container.is_local():  # a container's credential may not tag apps
            have = client.json("GET", f"/v1/apps/{self._app_id}/tags").get("tags") or {}
            if any(have.get(k) != v for k, v in self._tags.items()):
                client.json("PUT", f"/v1/apps/{self._app_id}/tags", json={"tags": {**have, **self._tags}})

    def set_tags(self, tags: Dict[str, str], *, client: Optional[Client] = None) -> None:
        """Attach key-value metadata to the app, merged with the tags it has on the server; usage
        recorded from now on carries them (billing reports, ``tag_names``)."""
        for k, v in (tags or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise exc.InvalidError(f"tags must map strings to strings, got {k!r}: {v!r}")
        client = client or get_client()
        self._tags.update(tags or {})
        self._resolve(client)
        self._push_tags(client)

    def get_tags(self, *, client: Optional[Client] = None) -> Dict[str, str]:
        """The app's tags, as the server has them."""
        client = client or get_client()
        return client.json("GET", f"/v1/apps/{self._resolve(client)}/tags").get("tags") or {}

    def _resolve(self, client: Client) -> str:
        if self._app_id is None or self._client is not client:
            with self._lock:
                if self._app_id is None or self._client is not client:
                    self._lookup(client, True)
        return self._app_id  # type: ignore[return-value]

    def _forget(self) -> None:
        with self._lock:
            self._app_id = None

    @property
    def name(self) -> str:
        return self._name or DEFAULT_SANDBOX_APP

    @property
    def app_id(self) -> str:
        """The app id (``ap-...``), looking the app up (creating it) on first use."""
        return self._resolve(get_client())

    @property
    def image(self) -> Any:
        return self._image

    @property
    def registered_functions(self) -> Dict[str, Function]:
        """The app's functions by name."""
        return dict(self._functions)

    @property
    def registered_classes(self) -> Dict[str, Cls]:
        """The app's classes by name."""
        return dict(self._classes)

    @property
    def registered_web_endpoints(self) -> List[str]:
        """The names of the app's functions that are web endpoints (Modal's ``registered_web_endpoints``)."""
        return [n for n, f in self._functions.items() if getattr(f._raw_f, "_gust_web", None) is not None]

    @property
    def registered_entrypoints(self) -> Dict[str, LocalEntrypoint]:
        """The app's local entrypoints by name."""
        return dict(self._local_entrypoints)

    def hydrate(self, client: Optional[Client] = None) -> "App":
        self._resolve(client or get_client())
        return self

    # Decorators.

    def function(self, _f: Optional[Callable] = None, *, image: Optional[Image] = None, schedule: Any = None,
                 secrets: Any = (), env: Optional[Dict[str, Optional[str]]] = None, gpu: Any = None,
                 cpu: Any = None, memory: Any = None, timeout: float = 300, retries: Any = None,
                 min_containers: int = 0, max_containers: Optional[int] = None, buffer_containers: int = 0,
                 scaledown_window: float = 60, name: Optional[str] = None, is_generator: Optional[bool] = None,
                 concurrency_limit: Optional[int] = None, keep_warm: Optional[int] = None,
                 container_idle_timeout: Optional[float] = None, allow_concurrent_inputs: Optional[int] = None,
                 isolation: Optional[str] = None, **kwargs: Any) -> Any:
        """Register a function to run in containers: ``@app.function(gpu="H100", timeout=600)``.
        Returns a ``gust.Function``. Options are checked here, before anything is sent."""
        opts = _options(image=image, secrets=secrets, env=env, gpu=gpu, cpu=cpu, memory=memory, timeout=timeout,
                        retries=retries, min_containers=min_containers, max_containers=max_containers,
                        buffer_containers=buffer_containers, scaledown_window=scaledown_window, schedule=schedule,
                        isolation=isolation, concurrency_limit=concurrency_limit, keep_warm=keep_warm,
                        container_idle_timeout=container_idle_timeout,
                        allow_concurrent_inputs=allow_concurrent_inputs, extra=kwargs, where="@app.function()")
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise exc.InvalidError(f"@app.function(name=...) must be a Python identifier, got {name!r}")

        def wrap(f: Any) -> Function:
            if isinstance(f, (Function, Cls)):
                raise exc.InvalidError("@app.function() is applied twice, or to an object an app already registered")
            if inspect.isclass(f):
                raise exc.InvalidError(f"@app.function() cannot decorate the class {f.__name__}: use @app.cls() "
                                       "and mark its methods with @gust.method()")
            if not callable(f):
                raise exc.InvalidError(f"@app.function() must decorate a function, got {f!r}")
            parts = (getattr(f, "__qualname__", "") or "").split(".")
            if len(parts) > 1 and parts[-2] != "<locals>":
                raise exc.InvalidError(
                    f"@app.function() cannot be used on the method {'.'.join(parts)}: put @app.cls() on the "
                    "class and @gust.method() on the method")
            fn_opts = dict(opts)
            _apply_concurrency(fn_opts, f, getattr(f, "_gust_batched", None))
            fn_opts["web"] = _web.spec(f)
            gen = bool(is_generator) if is_generator is not None else _is_generator_function(f)
            fname = name or f.__name__
            fn = Function(_Handle(fname), f, is_generator=gen, app=self, options=fn_opts)
            self._functions[fname] = fn
            return fn

        return wrap(_f) if _f is not None else wrap

    def cls(self, _c: Optional[type] = None, *, image: Optional[Image] = None, secrets: Any = (),
            env: Optional[Dict[str, Optional[str]]] = None, gpu: Any = None, cpu: Any = None, memory: Any = None,
            timeout: float = 300, retries: Any = None, min_containers: int = 0,
            max_containers: Optional[int] = None, buffer_containers: int = 0, scaledown_window: float = 60,
            concurrency_limit: Optional[int] = None, keep_warm: Optional[int] = None,
            container_idle_timeout: Optional[float] = None, allow_concurrent_inputs: Optional[int] = None,
            isolation: Optional[str] = None, **kwargs: Any) -> Any:
        """Register a class whose ``@gust.method()`` methods run in containers; returns a ``gust.Cls``."""
        opts = _options(image=image, secrets=secrets, env=env, gpu=gpu, cpu=cpu, memory=memory, timeout=timeout,
                        retries=retries, min_containers=min_containers, max_containers=max_containers,
                        buffer_containers=buffer_containers, scaledown_window=scaledown_window,
                        isolation=isolation, concurrency_limit=concurrency_limit, keep_warm=keep_warm,
                        container_idle_timeout=container_idle_timeout,
                        allow_concurrent_inputs=allow_concurrent_inputs, extra=kwargs, where="@app.cls()")

        def wrap(c: Any) -> Cls:
            if isinstance(c, (Function, Cls)) or not inspect.isclass(c):
                raise exc.InvalidError(f"@app.cls() must decorate a class, got {c!r}")
            web = _web.class_web(c)
            if not class_methods(c) and web is None:
                raise exc.InvalidError(f"class {c.__name__} has no methods marked @gust.method(): mark the methods "
                                       "to call remotely")
            init = getattr(c, "__init__", object.__init__)
            if init is not object.__init__:
                required = [p for p in list(inspect.signature(init).parameters.values())[1:]
                            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                if required:
                    raise exc.InvalidError(
                        f"class {c.__name__}: __init__ arguments are not supported; declare parameters as class "
                        "attributes with gust.parameter(), e.g. size: int = gust.parameter(default=3)")
            batched = {n: m for n, m in class_methods(c).items() if getattr(m, "_gust_batched", None)}
            if len(batched) > 1:
                raise exc.InvalidError(f"Modal class {c.__name__} can only have one batched function.")
            if batched and len(class_methods(c)) > 1:
                raise exc.InvalidError(f"Modal class {c.__name__} with a modal batched function cannot have other modal methods.")
            cls_opts = dict(opts)
            _apply_concurrency(cls_opts, c, next(iter(batched.values()))._gust_batched if batched else None)
            cls_opts["web"] = web
            obj = Cls(_Handle(c.__name__), c, app=self, options=cls_opts)
            self._classes[c.__name__] = obj
            return obj

        return wrap(_c) if _c is not None else wrap

    def local_entrypoint(self, _f: Optional[Callable] = None, *, name: Optional[str] = None) -> Any:
        """Mark the function ``gust run FILE`` calls on this machine, with the app running."""
        def wrap(f: Callable) -> LocalEntrypoint:
            if not callable(f):
                raise exc.InvalidError(f"@app.local_entrypoint() must decorate a function, got {f!r}")
            ep = LocalEntrypoint(f, self, name or f.__name__)
            self._local_entrypoints[ep.name] = ep
            return ep

        return wrap(_f) if _f is not None else wrap

    def include(self, other_app: "App", inherit_tags: bool = True) -> "App":
        """Add another app's functions and classes to this one (they publish with it)."""
        if not isinstance(other_app, App):
            raise exc.InvalidError(f"App.include needs a gust.App, got {other_app!r}")
        self._functions.update(other_app._functions)
        self._classes.update(other_app._classes)
        if inherit_tags:
            self._tags = {**other_app._tags, **self._tags}
        return self

    # Publishing.

    def _objects(self) -> List[Tuple[str, Any]]:
        return sorted({**self._functions, **self._classes}.items())

    def _spec(self, name: str, obj: Any, client: Client) -> dict:
        o = obj._options
        defining_app = obj._app or self
        image = o["image"] or defining_app._image or self._image or _default_image()
        secrets = list(defining_app._secrets) + list(o["secrets"])
        spec: Dict[str, Any] = {"name": name}
        if isinstance(obj, Cls):
            spec["kind"] = "class"
            spec["methods"] = {m: {"is_generator": g} for m, g in sorted(obj._methods().items())}
            spec["is_generator"] = False
        else:
            spec["kind"] = "function"
            spec["is_generator"] = bool(obj._is_generator)
        retries = o["retries"]
        spec.update({
            "image_id": image._resolve(client),
            "cpu": o["cpu"], "memory": o["memory"], "gpu": o["gpu"], "timeout": o["timeout"],
            "retries": retries._to_spec() if retries is not None else None,
            "env": o["env"] or None,
            "secrets": [s._to_spec() for s in secrets] or None,
            "min_containers": o["min_containers"], "max_containers": o["max_containers"],
            "buffer_containers": o["buffer_containers"], "scaledown_window": o["scaledown_window"],
            "max_inputs": o["max_inputs"], "target_inputs": o["target_inputs"],
            "schedule": o["schedule"]._to_spec() if o["schedule"] is not None else None,
        })
        if o["cpu_limit"] is not None:
            spec["cpu_limit"] = o["cpu_limit"]
        if o["isolation"]:
            spec["isolation"] = o["isolation"]
        spec.update(o.get("network") or {})
        if o.get("web"):
            spec["web"] = o["web"]
        mounts = dict(getattr(defining_app, "_volumes", None) or ())
        mounts.update(dict(o.get("volumes") or ()))
        if mounts:
            spec["volumes"] = [v.hydrate(client)._to_mount(p) for p, v in sorted(mounts.items())]
        return spec

    def _images(self) -> List[Image]:
        out = []
        for _, obj in self._objects():
            app = obj._app or self
            out.append(obj._options["image"] or app._image or self._image or _default_image())
        return out

    def _publish(self, client: Client, mode: str, name: Optional[str], heartbeat: bool = False) -> dict:
        objects = self._objects()
        if not objects:
            raise exc.InvalidError(f"app {self.name!r} has no functions: decorate some with @app.function()")
        raws = [(n, o, o._raw_f if isinstance(o, Function) else o._raw_cls) for n, o in objects]
        tar, module = _code.package(raws)
        self._alias_main(raws, module)
        blob = _local_files.upload(client, tar)
        for attempt in (0, 1):
            code = {"blob": blob, "module": module}
            if "gust._compat" in sys.modules and sys.modules["gust._compat"].active():
                code["modal_compat"] = True  # the containers resolve `import modal` to gust too
            body = {"name": name or "", "mode": mode, "code": code,
                    "functions": [self._spec(n, o, client) for n, o in objects], "heartbeat": heartbeat}
            try:
                data = client.json("POST", "/v1/apps/publish", json=body, timeout=600)
                break
            except exc.NotFoundError:
                # A cached image id may be stale (e.g. the server was reset): resolve again once.
                if attempt == 1 or not any([img._forget() for img in self._images()]):
                    raise
        ids = data.get("functions") or {}
        for n, o in objects:
            if n not in ids:
                raise exc.RemoteError(f"the server did not publish {n!r}")
            o._handle.set(client, ids[n])
            url = (data.get("web_urls") or {}).get(n)
            if url:
                o._web_url = url
                where = f"{n}.{o._options['web']['cls_method']}" if isinstance(o, Cls) else n
                output.log(f"Created web function {where} => {url}")
        with self._lock:
            self._app_id, self._client, self._data = data.get("app_id"), client, data
        self._push_tags(client)
        output.log(f"{'Deployed' if mode == 'deployed' else 'Running'} app {data.get('app_name') or name} "
                   f"({data.get('app_id')}): {', '.join(n for n, _ in objects)}")
        return data

    @staticmethod
    def _alias_main(raws: List[Tuple[str, Any, Any]], module: str) -> None:
        """A script's functions run in the container under the script's module name, so their
        exceptions (and results) unpickle here as that module's: make it this ``__main__``."""
        main = sys.modules.get("__main__")
        if main is None or not any(getattr(r, "__module__", None) == "__main__" for _, _, r in raws):
            return
        entry_name, _ = _code.entrypoint(raws)
        sys.modules.setdefault(entry_name, main)

    def _stop(self, client: Client, data: dict) -> None:
        ids = list((data.get("functions") or {}).values())
        try:
            client.request("POST", f"/v1/apps/{data['app_id']}/stop", json={"functions": ids}, timeout=30)
        except exc.Error as e:
            print(f"gust: could not stop app {data.get('app_name')}: {e}", file=sys.stderr)

    def run(self, *, client: Optional[Client] = None, detach: bool = False, interactive: bool = False,
            environment_name: Optional[str] = None) -> Any:
        """``with app.run():`` or ``async with app.run():``; see _run."""
        from .functions import AsyncContext
        return AsyncContext(self._run(client=client, detach=detach, interactive=interactive,
                                      environment_name=environment_name))

    @contextlib.contextmanager
    def _run(self, *, client: Optional[Client] = None, detach: bool = False, interactive: bool = False,
             environment_name: Optional[str] = None) -> Iterator["App"]:
        """Publish the app's functions for the length of the block (an ephemeral app); they stop
        at its end unless ``detach``. An app without functions is just made to exist."""
        if not _container.is_local():
            yield self  # inside a container the functions already run
            return
        client = client or get_client()
        if not self._functions and not self._classes:
            self._resolve(client)
            yield self
            return
        if self._running:
            raise exc.InvalidError(f"app {self.name!r} is already running")
        self._running = True
        try:
            data = self._publish(client, "ephemeral", self._name, heartbeat=not detach)
            beats = None if detach else _Heartbeat(client, data)
            try:
                yield self
            finally:
                if beats is not None:
                    beats.stop()
                if not detach:
                    self._stop(client, data)
                    for _, o in self._objects():
                        o._handle.clear()
        finally:
            self._running = False

    def deploy(self, name: Optional[str] = None, *, environment_name: Optional[str] = None, tag: str = "",
               client: Optional[Client] = None) -> "App":
        """Publish the app's functions until the next deploy; ``Function.from_name`` finds them
        and schedules run."""
        if not _container.is_local():
            return self
        name = name or self._name
        if not name:
            raise exc.InvalidError("a deployed app needs a name: App('my-app'), or app.deploy(name='my-app')")
        self._publish(client or get_client(), "deployed", name)
        if self._name is None:
            self._name = name
        return self

    def __repr__(self) -> str:
        return f"App({self.name!r}" + (f", app_id={self._app_id!r})" if self._app_id else ")")


class _Heartbeat:
    """Tells the server, while ``app.run()`` lasts, that this client is still there: an
    ephemeral app whose client vanished (killed, or its machine gone) is stopped by the server
    after a minute without one, as Modal does."""

    INTERVAL = 10.0

    def __init__(self, client: Client, data: dict):
        self._client = client
        self._path = f"/v1/apps/{data['app_id']}/heartbeat"
        self._ids = list((data.get("functions") or {}).values())
        self._done = threading.Event()
        threading.Thread(target=self._run, name="gust-heartbeat", daemon=True).start()

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL):
            try:
                self._client.request("POST", self._path, json={"functions": self._ids}, timeout=10)
            except exc.Error:
                pass  # the server may be restarting; the next beat tries again

    def stop(self) -> None:
        self._done.set()


_default_image_obj: Optional[Image] = None


def _default_image() -> Image:
    global _default_image_obj
    if _default_image_obj is None:
        _default_image_obj = Image.debian_slim()
    return _default_image_obj


# with_options: Modal's Function.with_options / Cls.with_options (and Cls.with_concurrency).
_WITH_OPTIONS = frozenset({"cpu", "memory", "gpu", "env", "secrets", "volumes", "retries", "timeout", "min_containers",
                           "max_containers", "buffer_containers", "scaledown_window", "concurrency_limit",
                           "container_idle_timeout", "allow_concurrent_inputs"})


def _variant_options(kwargs: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Check with_options(...)'s arguments and spell the ones given as the server's variant
    options (POST /v1/functions/{id}/variants). Options left out keep the function's values."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    for k in list(given):
        if k in _IGNORED_OPTIONS:
            given.pop(k)
        elif k not in _WITH_OPTIONS:
            raise TypeError(f"{where} got an unexpected keyword argument '{k}'")
    if given.pop("volumes", None):
        raise exc.InvalidError(f"{where}: volumes= is not supported by gust's with_options yet; mount volumes in the decorator")
    if "concurrency_limit" in given:
        given.setdefault("max_containers", given.pop("concurrency_limit"))
    if "container_idle_timeout" in given:
        given.setdefault("scaledown_window", given.pop("container_idle_timeout"))
    if "allow_concurrent_inputs" in given:
        given.setdefault("max_inputs", given.pop("allow_concurrent_inputs"))
    out: Dict[str, Any] = {}
    if "cpu" in given:
        cpu, limit = _pair("cpu", given["cpu"])
        out["cpu"] = _check_number("cpu", cpu, low=0.01, hint="cores, e.g. cpu=2")
        if limit is not None:
            out["cpu_limit"] = _check_number("cpu limit", limit, low=0.01)
            if limit < cpu:
                raise exc.InvalidError(f"{where}: cpu=(request, limit): the limit {limit} is less than the request {cpu}")
    if "memory" in given:
        req, limit = _pair("memory", given["memory"])
        out["memory"] = _check_number("memory", limit if limit is not None else req, low=16, integer=True,
                                      hint="MiB, e.g. memory=4096")
    if "gpu" in given:
        out["gpu"] = _parse_gpu(given["gpu"])
    if "timeout" in given:
        out["timeout"] = _check_number("timeout", given["timeout"], low=1, hint="seconds per input")
    if "retries" in given:
        out["retries"] = Retries._from(given["retries"])._to_spec()
    for k in ("min_containers", "buffer_containers"):
        if k in given:
            out[k] = _check_number(k, given[k], low=0, integer=True)
    for k in ("max_containers", "max_inputs", "target_inputs"):
        if k in given:
            out[k] = _check_number(k, given[k], low=1, integer=True)
    if "scaledown_window" in given:
        out["scaledown_window"] = _check_number("scaledown_window", given["scaledown_window"], low=1,
                                                hint="seconds an idle container is kept")
    if "env" in given:
        env = {k: v for k, v in given["env"].items() if v is not None}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise exc.InvalidError(f"{where}: env must map strings to strings")
        if env:
            out["env"] = env
    if "secrets" in given:
        secs = list(given["secrets"])
        for s in secs:
            if not isinstance(s, Secret):
                raise exc.InvalidError(f"{where}: secrets must be gust.Secret objects, got {s!r}")
        if secs:
            out["secrets"] = [s._to_spec() for s in secs]
    return out


add_aio(App, ["lookup", "deploy", "hydrate"])
