"""Functions: what ``@app.function`` returns and how it is called, as ``modal.Function`` and
``modal.FunctionCall``.

A call is ``POST /v1/functions/{id}/calls``. Its answer, and ``GET /v1/calls/{id}/stream``, is
an NDJSON stream of log lines (written to this process's stdout/stderr as they come), generator
items and outputs (docs/functions.md). A stream that stops early (its ``timeout`` line, or a
broken connection) is opened again from the next output, skipping the lines already seen.

``.map`` sends its inputs in batches: the first with the call, the rest from a background
thread while this thread reads outputs, so inputs are read lazily and thousands of inputs a
second go through.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import _container, _web
from ._lazy import LazyModule
from . import exception as exc
from ._http import Client, get_client
from ._serialization import PICKLE, b64d, b64e, deserialize, encode_args, serialize

asyncio = LazyModule("asyncio")

_MAP_BATCH = 500  # inputs per request of a map
_MAP_BATCH_BYTES = 16 << 20  # encoded arguments per request of a map (the server takes 64 MiB)
_MAP_MAX_PENDING = 10_000  # inputs sent without an output yet, before the sender waits
_RESUME_ATTEMPTS = 8  # broken connections in a row before a call's stream gives up
_STREAM_TIMEOUT = 60  # seconds a resumed stream is held open by the server before a timeout line


# Sync and async flavours: Modal's objects let `f.remote(x)` and `await f.remote.aio(x)` both work.

class _Aio:
    """A method usable as ``obj.m(...)`` and ``await obj.m.aio(...)``; with ``gen`` the method
    returns an iterator and ``.aio`` an async iterator. The blocking work runs in a thread."""

    def __init__(self, fn: Callable, gen: bool = False):
        self._fn, self._gen = fn, gen
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return _BoundAio(self._fn, obj, self._gen)


class _BoundAio:
    __slots__ = ("_fn", "_obj", "_gen")

    def __init__(self, fn: Callable, obj: Any, gen: bool):
        self._fn, self._obj, self._gen = fn, obj, gen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self._obj, *args, **kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        if self._gen:
            return _async_iter(functools.partial(self._fn, self._obj, *args, **kwargs))
        return asyncio.to_thread(self._fn, self._obj, *args, **kwargs)

    @property
    def __doc__(self) -> Optional[str]:  # type: ignore[override]
        return self._fn.__doc__


async def _async_iter(make: Callable[[], Iterable]) -> Any:
    it = iter(await asyncio.to_thread(make))
    end = object()
    try:
        while True:
            v = await asyncio.to_thread(next, it, end)
            if v is end:
                return
            yield v
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _AioStatic:
    """A static method usable as ``Cls.m(...)`` and ``await Cls.m.aio(...)``."""

    def __init__(self, fn: Callable, gen: bool = False):
        self._bound = _BoundAio(lambda _none, *a, **k: fn(*a, **k), None, gen)
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._bound(*args, **kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        return self._bound.aio(*args, **kwargs)


class _AioClass:
    """A class method usable as ``Cls.m(...)`` and ``await Cls.m.aio(...)``."""

    def __init__(self, fn: Callable, gen: bool = False):
        self._fn, self._gen = fn, gen
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return _BoundAio(self._fn, owner if owner is not None else type(obj), self._gen)


def add_aio(cls: type, names: Iterable[str], gen: Iterable[str] = ()) -> None:
    """Give methods (and static methods) of cls Modal's ``.aio`` flavour, after the class is
    defined, so its body stays plain."""
    gens = set(gen)
    for name in list(names) + list(gens):
        raw = cls.__dict__[name]
        if isinstance(raw, staticmethod):
            setattr(cls, name, _AioStatic(raw.__func__, name in gens))
        elif isinstance(raw, classmethod):
            setattr(cls, name, _AioClass(raw.__func__, name in gens))
        else:
            setattr(cls, name, _Aio(raw, name in gens))


class AsyncContext:
    """A context manager usable with ``with`` and ``async with`` (the blocking work in a thread)."""

    def __init__(self, cm: Any):
        self._cm = cm

    def __enter__(self) -> Any:
        return self._cm.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self._cm.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        return await asyncio.to_thread(self._cm.__enter__)

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await asyncio.to_thread(self._cm.__exit__, *exc_info)


def aio(f: Callable) -> _Aio:
    return _Aio(f)


def aio_gen(f: Callable) -> _Aio:
    return _Aio(f, gen=True)


# Where a published function lives.

class _Handle:
    """The server-side identity of a function or class: filled by ``App.run()``/``deploy()``,
    by a lookup (``from_name``), or, inside a container, from the running app. A Function and
    the methods of a Cls share one."""

    def __init__(self, name: str, *, lookup: Optional[Tuple[str, str, Optional[Client]]] = None):
        self.name = name
        self.lookup = lookup  # (app_name, name, client) for from_name
        self.function_id: Optional[str] = None
        self.client: Optional[Client] = None
        self.data: Optional[dict] = None  # the Function doc, when looked up
        self._lock = threading.Lock()

    def set(self, client: Client, function_id: Optional[str] = None, data: Optional[dict] = None) -> None:
        self.client, self.data = client, data
        self.function_id = function_id or (data or {}).get("function_id")

    def clear(self) -> None:
        self.function_id, self.client, self.data = None, None, None

    def resolve(self) -> Tuple[Client, str]:
        if self.function_id is None:
            with self._lock:
                if self.function_id is None:
                    self._find()
        return self.client, self.function_id  # type: ignore[return-value]

    def _find(self) -> None:
        if self.lookup is not None:
            app_name, name, client = self.lookup
            client = client or get_client()
            data = client.json("POST", "/v1/functions/lookup", json={"app_name": app_name, "name": name})
            self.set(client, data=data)
            return
        if not _container.is_local():
            self._find_in_container()
            return
        raise exc.ExecutionError(
            f"Function {self.name!r} has not been published: call it inside `with app.run():` (or from a "
            "local entrypoint under `gust run`), or deploy the app and use gust.Function.from_name(app_name, name)")

    def _find_in_container(self) -> None:
        # A function calling another function of its app: find the app through our own function.
        me = os.environ.get("GUST_FUNCTION_ID")
        if not me:
            raise exc.ExecutionError(f"Function {self.name!r}: GUST_FUNCTION_ID is not set in this container")
        client = get_client()
        if not client.config.has_credentials:
            raise exc.ExecutionError(
                f"Function {self.name!r}: calling a function from inside a container needs the gust server's "
                "address and credentials in the container (GUST_SERVER_URL, and GUST_TOKEN_ID with "
                "GUST_TOKEN_SECRET or GUST_TOKEN), which it was not given")
        app_id = client.json("GET", f"/v1/functions/{me}")["app_id"]
        doc = client.json("GET", f"/v1/apps/{app_id}")
        for f in doc.get("function_details") or doc.get("functions_details") or []:
            if isinstance(f, dict) and f.get("name") == self.name and f.get("state", "active") == "active":
                self.set(client, data=f)
                return
        raise exc.NotFoundError(f"the app of this container has no running function {self.name!r}")


class _VariantHandle:
    """The handle of ``with_options(...)``: the base function with some options changed, made
    on the server on first use as a function of its own (POST /v1/functions/{id}/variants),
    so its containers have those resources and its usage is metered at them."""

    def __init__(self, base: Any, options: Dict[str, Any]):
        self.base = base  # a _Handle, or another _VariantHandle (options merged over it)
        self.options = options
        self.name = base.name
        self.lookup = getattr(base, "lookup", None)
        self.function_id: Optional[str] = None
        self.client: Optional[Client] = None
        self.data: Optional[dict] = None
        self._for: Optional[str] = None  # the base function id the variant was made from
        self._lock = threading.Lock()

    def root(self) -> Tuple[Any, Dict[str, Any]]:
        """The plain handle underneath, and every option on the way, later ones winning."""
        if isinstance(self.base, _VariantHandle):
            h, opts = self.base.root()
            merged = dict(opts)
            for k, v in self.options.items():
                if k == "env":
                    merged["env"] = {**merged.get("env", {}), **v}
                elif k == "secrets":
                    merged["secrets"] = list(merged.get("secrets", [])) + list(v)
                else:
                    merged[k] = v
            return h, merged
        return self.base, dict(self.options)

    def set(self, client: Client, function_id: Optional[str] = None, data: Optional[dict] = None) -> None:
        self.client, self.data = client, data
        self.function_id = function_id or (data or {}).get("function_id")

    def clear(self) -> None:
        self.function_id, self.client, self.data, self._for = None, None, None, None

    def resolve(self) -> Tuple[Client, str]:
        base, opts = self.root()
        client, base_id = base.resolve()
        if self.function_id is None or self._for != base_id:  # the base was published again
            with self._lock:
                if self.function_id is None or self._for != base_id:
                    data = client.json("POST", f"/v1/functions/{base_id}/variants", json={"options": opts})
                    self.set(client, data=data)
                    self._for = base_id
        return self.client, self.function_id  # type: ignore[return-value]


def _is_generator_function(f: Any) -> bool:
    explicit = getattr(f, "_gust_is_generator", None)
    if explicit is not None:
        return bool(explicit)
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)


@dataclass
class FunctionStats:
    """What ``Function.get_current_stats()`` returns (Modal's names)."""

    backlog: int
    num_total_runners: int


class Function:
    """A function registered with ``@app.function()`` (or a method of an ``@app.cls`` instance).

    Call it with ``.remote()``, ``.map()``, ``.spawn()``; ``.local()`` runs it in this process.
    """

    def __init__(self, handle: _Handle, raw_f: Optional[Callable] = None, *, is_generator: Optional[bool] = None,
                 method: Optional[str] = None, params: Optional[dict] = None,
                 local_self: Optional[Callable[[], Any]] = None, app: Any = None, options: Optional[dict] = None):
        self._handle = handle
        self._raw_f = raw_f
        self._gust_raw_f = raw_f  # the runner unwraps this (docs/functions.md)
        self._is_generator = is_generator
        self._method = method
        self._params = params  # the class parameters payload, for methods
        self._local_self = local_self  # makes the local instance, for methods' .local()
        self._app = app  # the App whose decorator made it
        self._options = options  # decorator options, for publishing (None for methods and lookups)
        self._web_url: Optional[str] = None  # a web endpoint's, once published
        if raw_f is not None:
            for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
                try:
                    setattr(self, attr, getattr(raw_f, attr))
                except AttributeError:
                    pass
            self.__wrapped__ = raw_f  # inspect.signature(f) shows the user's signature

    # Identity.

    @property
    def object_id(self) -> str:
        """The function's id (``fu-...``)."""
        return self._handle.resolve()[1]

    @aio
    def hydrate(self, client: Optional[Client] = None) -> "Function":
        """Find the function on the server now (lookups are otherwise lazy)."""
        self._handle.resolve()
        return self

    @property
    def is_generator(self) -> bool:
        return self._generator()

    def _generator(self) -> bool:
        if self._is_generator is None:
            self._handle.resolve()
            data = self._handle.data or {}
            if self._method is not None:
                self._is_generator = bool(((data.get("methods") or {}).get(self._method) or {}).get("is_generator"))
            else:
                self._is_generator = bool(data.get("is_generator"))
        return self._is_generator

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: Optional[str] = None,
                  client: Optional[Client] = None) -> "Function":
        """The function ``name`` of the deployed app ``app_name``; looked up on first use."""
        if not isinstance(app_name, str) or not app_name or not isinstance(name, str) or not name:
            raise exc.InvalidError("Function.from_name needs the app's name and the function's name")
        if "." in name:
            cls_name, method = name.split(".", 1)
            from .cls import Cls
            return getattr(Cls.from_name(app_name, cls_name, client=client)(), method)
        return Function(_Handle(name, lookup=(app_name, name, client)))

    @staticmethod
    def lookup(app_name: str, name: str, *, environment_name: Optional[str] = None,
               client: Optional[Client] = None) -> "Function":
        """Like ``from_name`` but looked up at once (Modal's older name)."""
        return Function.from_name(app_name, name, client=client).hydrate()

    def get_raw_f(self) -> Callable:
        """The user's function."""
        if self._raw_f is None:
            raise exc.InvalidError("this Function was looked up by name: its Python function is not available here")
        return self._raw_f

    @aio
    def get_current_stats(self) -> FunctionStats:
        """Inputs waiting and containers running now."""
        client, fid = self._handle.resolve()
        st = (client.json("GET", f"/v1/functions/{fid}") or {}).get("stats") or {}
        return FunctionStats(backlog=int(st.get("pending") or 0), num_total_runners=int(st.get("containers") or 0))

    @aio
    def update_autoscaler(self, *, min_containers: Optional[int] = None, max_containers: Optional[int] = None,
                          buffer_containers: Optional[int] = None, scaledown_window: Optional[int] = None) -> None:
        """Change the running function's scaling bounds (until its next deploy), as Modal's
        ``Function.update_autoscaler``; options left out keep their values."""
        body = {k: v for k, v in (("min_containers", min_containers), ("max_containers", max_containers),
                                  ("buffer_containers", buffer_containers), ("scaledown_window", scaledown_window))
                if v is not None}
        if not body:
            raise exc.InvalidError("update_autoscaler needs at least one of min_containers, max_containers, "
                                   "buffer_containers, scaledown_window")
        client, fid = self._handle.resolve()
        client.json("POST", f"/v1/functions/{fid}/autoscaler", json=body)

    @aio
    def keep_warm(self, warm_pool_size: int) -> None:
        """Keep this many containers warm (Modal's older name for ``update_autoscaler(min_containers=)``)."""
        self.update_autoscaler(min_containers=warm_pool_size)

    def with_options(self, **kwargs: Any) -> "Function":
        """The function with some options changed (Modal's ``with_options``): cpu, memory, gpu,
        env, secrets, retries, timeout, min/max/buffer_containers, scaledown_window. Calls
        through the returned handle run in containers of their own with those options; the
        function itself is unchanged."""
        if self._method is not None:
            raise exc.InvalidError("with_options goes on the class: Model.with_options(...)().method.remote()")
        from .app import _variant_options
        opts = _variant_options(kwargs, "Function.with_options()")
        return Function(_VariantHandle(self._handle, opts), self._raw_f, is_generator=self._is_generator,
                        app=self._app)

    def _gust_set_concurrency(self, max_inputs: int, target_inputs: Optional[int]) -> None:
        if self._options is None:
            raise exc.InvalidError("@gust.concurrent goes on a function defined with @app.function")
        self._options["max_inputs"], self._options["target_inputs"] = max_inputs, target_inputs

    # Calling.

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process."""
        if self._raw_f is None:
            raise exc.InvalidError("a Function looked up by name cannot run locally; use .remote()")
        if self._local_self is not None:
            return self._raw_f(self._local_self(), *args, **kwargs)
        return self._raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    def get_web_url(self) -> Optional[str]:
        """A web endpoint's URL (``https://<workspace>--<label>.<domain>``); None for other functions."""
        return _web.web_url(self)

    @property
    def web_url(self) -> Optional[str]:
        """Modal's older name for ``get_web_url()``."""
        return _web.web_url(self)

    def _body(self, kind: str, inputs: List[dict], stream: bool) -> dict:
        _web.refuse_remote(self, kind)
        return {"kind": kind, "method": self._method, "params": self._params, "inputs": inputs, "stream": stream}

    @aio
    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in a container and return its result (or raise its exception)."""
        _web.refuse_remote(self, "remote")
        inputs = [_encode_input(args, kwargs)]  # before anything is sent: unpicklable arguments fail here
        client, fid = self._handle.resolve()
        if self._generator():
            raise exc.InvalidError(
                "A generator function cannot be called with `.remote(...)`. Use `.remote_gen(...)` instead.")
        call = _CallStream.start(client, fid, self._body("remote", inputs, True))
        try:
            return call.single_output(0)
        except KeyboardInterrupt:
            _cancel_quietly(client, call.call_id)  # Ctrl-C stops the remote input too
            raise

    @aio_gen
    def remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Run a generator function in a container and iterate over what it yields."""
        inputs = [_encode_input(args, kwargs)]
        client, fid = self._handle.resolve()
        if not self._generator():
            raise exc.InvalidError("`.remote_gen(...)` is for generator functions; use `.remote(...)`")
        return _CallStream.start(client, fid, self._body("remote", inputs, True)).items(0)

    @aio
    def spawn(self, *args: Any, **kwargs: Any) -> "FunctionCall":
        """Start the function in a container and return at once; ``.get()`` the result later."""
        _web.refuse_remote(self, "spawn")
        inputs = [_encode_input(args, kwargs)]
        client, fid = self._handle.resolve()
        head = client.json("POST", f"/v1/functions/{fid}/calls", json=self._body("spawn", inputs, False))
        return FunctionCall(head["call_id"], client, is_generator=self._is_generator, num_inputs=1)

    def _check_map(self, what: str) -> Tuple[Client, str]:
        _web.refuse_remote(self, what)
        client, fid = self._handle.resolve()
        if self._generator():
            raise exc.InvalidError(f"A generator function cannot be called with `.{what}(...)`.")
        return client, fid

    @aio_gen
    def map(self, *input_iterators: Iterable, kwargs: Optional[dict] = None, order_outputs: bool = True,
            return_exceptions: bool = False, wrap_returned_exceptions: bool = True) -> Iterator[Any]:
        """Run the function once per element of the iterators (zipped, like built-in ``map``)
        in parallel containers; yield the results in input order (``order_outputs=False``: as
        they finish). ``return_exceptions=True`` yields failures as exception objects."""
        if not input_iterators:
            raise exc.InvalidError("`.map(...)` needs at least one iterable of inputs")
        client, fid = self._check_map("map")
        return _map(self, client, fid, zip(*input_iterators), dict(kwargs or {}), order_outputs, return_exceptions)

    @aio_gen
    def starmap(self, input_iterator: Iterable, *, kwargs: Optional[dict] = None, order_outputs: bool = True,
                return_exceptions: bool = False, wrap_returned_exceptions: bool = True) -> Iterator[Any]:
        """Like ``map``, with each element unpacked as the positional arguments."""
        client, fid = self._check_map("starmap")
        return _map(self, client, fid, (tuple(a) for a in input_iterator), dict(kwargs or {}), order_outputs,
                    return_exceptions)

    @aio
    def for_each(self, *input_iterators: Iterable, kwargs: Optional[dict] = None,
                 ignore_exceptions: bool = False) -> None:
        """Like ``map``, discarding the results; with ``ignore_exceptions`` failures are skipped too."""
        for _ in self.map(*input_iterators, kwargs=kwargs, order_outputs=False, return_exceptions=ignore_exceptions):
            pass

    @aio
    def spawn_map(self, *input_iterators: Iterable, kwargs: Optional[dict] = None) -> "FunctionCall":
        """Start the function over the inputs and return once they are all queued."""
        if not input_iterators:
            raise exc.InvalidError("`.spawn_map(...)` needs at least one iterable of inputs")
        client, fid = self._check_map("spawn_map")
        chunks = _Chunks(zip(*input_iterators), dict(kwargs or {}))
        chunk = chunks.next()
        head = client.json("POST", f"/v1/functions/{fid}/calls", json=self._body("map", chunk, False))
        call_id, total = head["call_id"], len(chunk)
        while chunks.more:
            chunk = chunks.next()
            if chunk:
                client.json("POST", f"/v1/calls/{call_id}/inputs", json={"inputs": chunk})
                total += len(chunk)
        return FunctionCall(call_id, client, is_generator=False, num_inputs=total)

    def __reduce__(self) -> Any:
        # Functions pass to other functions by id (Modal lets a function be an argument).
        client, fid = self._handle.resolve()
        return (_function_from_id, (fid, self._handle.name, self._generator(), self._method, self._params))

    def __repr__(self) -> str:
        name = self._handle.name + (f".{self._method}" if self._method else "")
        return f"Function({name!r}" + (f", {self._handle.function_id})" if self._handle.function_id else ")")


def _function_from_id(function_id: str, name: str, is_generator: bool, method: Optional[str],
                      params: Optional[dict]) -> Function:
    handle = _Handle(name)
    handle.set(get_client(), function_id)
    return Function(handle, is_generator=is_generator, method=method, params=params)


# Payloads.

def _encode_input(args: tuple, kwargs: dict) -> dict:
    return {"args": b64e(encode_args(args, kwargs)), "format": PICKLE}


class _Chunks:
    """A map's inputs, encoded as they are needed, in the chunks that one request sends: at most
    _MAP_BATCH inputs and _MAP_BATCH_BYTES of arguments (an input larger than that goes alone)."""

    def __init__(self, it: Iterator[tuple], kwargs: dict):
        self._it, self._kwargs = it, kwargs
        self._held: Optional[dict] = None  # encoded, but left for the next chunk
        self._exhausted = False

    @property
    def more(self) -> bool:
        """Whether inputs may be left (the iterator has not said it ended)."""
        return self._held is not None or not self._exhausted

    def next(self) -> List[dict]:
        out: List[dict] = []
        size = 0
        while len(out) < _MAP_BATCH:
            enc, self._held = self._held, None
            if enc is None:
                try:
                    args = next(self._it)
                except StopIteration:
                    self._exhausted = True
                    break
                enc = _encode_input(args, self._kwargs)
            if out and size + len(enc["args"]) > _MAP_BATCH_BYTES:
                self._held = enc
                break
            out.append(enc)
            size += len(enc["args"])
        return out


def encode_params(params: dict) -> Optional[dict]:
    """The ``params`` of a call to a class method."""
    return {"data": b64e(serialize(params)), "format": PICKLE}


def _decode_output(out: dict) -> Tuple[bool, Any]:
    """(True, result) or (False, the exception to raise) for an output line."""
    status = out.get("status")
    fmt = out.get("format") or PICKLE
    if status == "success":
        data = out.get("data")
        try:
            return True, (None if data is None else deserialize(b64d(data), fmt))
        except exc.Error as e:
            return False, e
    if status == "timeout":
        return False, exc.FunctionTimeoutError(
            _message(out, "FunctionTimeoutError", "the input ran past the function's timeout"))
    if status == "terminated":
        return False, exc.InputCancellation(_message(out, "InputCancellation", "the input was cancelled"))
    err: Optional[BaseException] = None
    if out.get("exc"):
        try:
            e = deserialize(b64d(out["exc"]), fmt)
            if isinstance(e, BaseException):
                err = e
        except Exception:  # noqa: BLE001 - e.g. the exception's class is not importable here
            err = None
    tb = (out.get("traceback") or "").rstrip()
    if err is None:
        msg = out.get("error") or f"the function failed (status {status!r})"
        err = exc.RemoteError(msg)
    if tb:
        _add_note(err, f"\nRemote traceback (in the gust container):\n{tb}")
    return False, err


def _add_note(e: BaseException, note: str) -> None:
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:  # Python < 3.11: the attribute, which tracebacks there do not print
        e.__notes__ = list(getattr(e, "__notes__", ())) + [note]  # type: ignore[attr-defined]


def _message(out: dict, cls_name: str, default: str) -> str:
    msg = out.get("error") or default
    prefix = cls_name + ": "  # the exception's type already says it
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _write_log(log: dict) -> None:
    out = sys.stderr if log.get("stream") == "stderr" else sys.stdout
    data = log.get("data")
    if data:
        try:
            out.write(data)
            out.flush()
        except (OSError, ValueError):
            pass


# Following a call's stream.

class _CallStream:
    """One call's NDJSON stream, opened again (``from=`` the next output) when it stops before
    the caller has what it waits for. Lines after the last output are replayed by the server on
    resume; those already seen are skipped."""

    def __init__(self, client: Client, call_id: str, stream: Any = None):
        self.client = client
        self.call_id = call_id
        self._stream = stream
        self.next_from = 0  # outputs received (their seq + 1)
        self._tail = 0  # log and item lines seen since the last output
        self.head: Optional[dict] = None  # the first line of a call's POST stream

    @classmethod
    def start(cls, client: Client, function_id: str, body: dict) -> "_CallStream":
        stream = client.stream("POST", f"/v1/functions/{function_id}/calls", json=body, timeout=None)
        try:
            first = next(iter(stream))
        except StopIteration:
            stream.close()
            raise exc.RemoteError("the gust server ended the call's stream before naming the call") from None
        except BaseException:
            stream.close()
            raise
        head = first.get("call") if isinstance(first, dict) else None
        if not isinstance(head, dict) or not head.get("call_id"):
            stream.close()
            raise exc.RemoteError(f"unexpected first line of a call stream: {first!r}")
        cs = cls(client, head["call_id"], stream)
        cs.head = head
        return cs

    def close(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            s.close()

    def lines(self, more: Callable[[], bool], deadline: Optional[float] = None) -> Iterator[dict]:
        """Log, item and output lines until a stream ends and ``more()`` is false (or the deadline
        passes, for ``FunctionCall.get(timeout=...)``)."""
        failures = 0
        try:
            while True:
                if self._stream is None:
                    wait = _STREAM_TIMEOUT
                    if deadline is not None:
                        wait = max(0.0, min(wait, deadline - time.monotonic()))
                    try:
                        self._stream = self.client.stream(
                            "GET", f"/v1/calls/{self.call_id}/stream",
                            query={"from": self.next_from, "timeout": _seconds(wait)}, timeout=wait + 30)
                    except exc.ConnectionError:
                        failures += 1
                        if failures >= _RESUME_ATTEMPTS:
                            raise
                        time.sleep(min(0.05 * 2 ** failures, 2.0))
                        continue
                skip = self._tail  # the server replays the lines after the last output we have
                try:
                    for line in self._stream:
                        if "output" in line:
                            out = line["output"]
                            seq = out.get("seq")
                            nxt = seq + 1 if isinstance(seq, int) else self.next_from + 1
                            self.next_from = max(self.next_from, nxt)
                            self._tail = 0
                        elif "log" in line or "item" in line:
                            if skip > 0:
                                skip -= 1
                                continue
                            self._tail += 1
                        else:
                            continue  # {"timeout": true}: the stream ends here
                        failures = 0
                        yield line
                except exc.ConnectionError:
                    failures += 1
                    if failures >= _RESUME_ATTEMPTS:
                        raise
                    time.sleep(min(0.05 * 2 ** failures, 2.0))
                self.close()
                if not more() or (deadline is not None and time.monotonic() >= deadline):
                    return
        finally:
            self.close()

    def single_output(self, index: int) -> Any:
        """Wait for input ``index``'s output, printing log lines; return its result or raise."""
        found: List[dict] = []
        for line in self.lines(lambda: not found):
            if "log" in line:
                _write_log(line["log"])
            elif "output" in line and line["output"].get("index", 0) == index and not found:
                found.append(line["output"])
        if not found:
            raise exc._NoOutputYetError(f"function call {self.call_id} has no output yet")
        ok, v = _decode_output(found[0])
        if ok:
            return v
        raise v

    def items(self, index: int, cancel_on_close: bool = True) -> Iterator[Any]:
        """Yield a generator input's items as they come, then raise its failure if it failed.
        (Items replayed after a resumed stream are skipped by ``lines``.)"""
        found: List[dict] = []
        try:
            for line in self.lines(lambda: not found):
                if "log" in line:
                    _write_log(line["log"])
                elif "item" in line:
                    item = line["item"]
                    if item.get("index", 0) != index:
                        continue
                    data = item.get("data")
                    yield None if data is None else deserialize(b64d(data), item.get("format") or PICKLE)
                elif "output" in line and line["output"].get("index", 0) == index:
                    found.append(line["output"])
        finally:
            if not found and cancel_on_close:
                _cancel_quietly(self.client, self.call_id)
        ok, v = _decode_output(found[0])
        if not ok:
            raise v


def _seconds(t: float) -> str:
    return str(int(t)) if t == int(t) else f"{t:.3f}"


def _cancel_quietly(client: Client, call_id: str) -> None:
    try:
        client.request("POST", f"/v1/calls/{call_id}/cancel", json={"terminate_containers": False}, timeout=10)
    except exc.Error:
        pass


# .map

class _MapState:
    """Shared by the thread reading outputs and the one sending inputs."""

    def __init__(self, sent: int, exhausted: bool):
        self.cond = threading.Condition()
        self.sent = sent  # inputs the server has
        self.received = 0  # outputs read
        self.sender_done = exhausted
        self.error: Optional[BaseException] = None  # what stopped the sender
        self.stopped = False  # the reader went away

    def more(self) -> bool:
        """After a stream ended: whether outputs are still to come (waits for the sender if needed)."""
        with self.cond:
            while self.received >= self.sent and not self.sender_done and not self.stopped:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            return self.received < self.sent or not self.sender_done


def _send_inputs(client: Client, call_id: str, chunks: _Chunks, st: _MapState) -> None:
    try:
        while True:
            with st.cond:
                while st.sent - st.received >= _MAP_MAX_PENDING and not st.stopped:
                    st.cond.wait()
                if st.stopped:
                    return
            chunk = chunks.next()
            if chunk:
                client.json("POST", f"/v1/calls/{call_id}/inputs", json={"inputs": chunk})
                with st.cond:
                    st.sent += len(chunk)
                    st.cond.notify_all()
            if not chunks.more:
                return
    except BaseException as e:  # noqa: BLE001 - handed to the reading thread
        with st.cond:
            st.error = e
    finally:
        with st.cond:
            st.sender_done = True
            st.cond.notify_all()


def _map(fn: Function, client: Client, fid: str, it: Iterator[tuple], kwargs: dict, order_outputs: bool,
         return_exceptions: bool) -> Iterator[Any]:
    chunks = _Chunks(it, kwargs)
    first = chunks.next()
    if not first:
        return
    call = _CallStream.start(client, fid, fn._body("map", first, True))
    st = _MapState(len(first), exhausted=not chunks.more)
    if not st.sender_done:
        threading.Thread(target=_send_inputs, args=(client, call.call_id, chunks, st),
                         name=f"gust-map-{call.call_id}", daemon=True).start()
    done: set = set()
    pending: Dict[int, Tuple[bool, Any]] = {}  # finished out of order, when order_outputs
    next_index = 0
    complete = False
    try:
        for line in call.lines(st.more):
            if "log" in line:
                _write_log(line["log"])
                continue
            if "output" not in line:
                continue
            out = line["output"]
            idx = out.get("index")
            if idx in done:
                continue
            done.add(idx)
            with st.cond:
                st.received += 1
                if st.sent - st.received < _MAP_MAX_PENDING:
                    st.cond.notify_all()
            ok, v = _decode_output(out)
            if not ok and not return_exceptions:
                raise v
            if not order_outputs:
                yield v
                continue
            pending[idx] = (ok, v)
            while next_index in pending:
                yield pending.pop(next_index)[1]
                next_index += 1
        if st.error is not None:
            raise st.error
        complete = True
        for i in sorted(pending):  # indices the server skipped (none expected)
            yield pending[i][1]
    finally:
        with st.cond:
            st.stopped = True
            st.cond.notify_all()
        call.close()
        if not complete:
            _cancel_quietly(client, call.call_id)


# FunctionCall

class FunctionCall:
    """A call started with ``.spawn()`` (or ``.spawn_map()``): poll or wait for its result."""

    def __init__(self, call_id: str, client: Optional[Client] = None, *, is_generator: Optional[bool] = False,
                 num_inputs: Optional[int] = None):
        self._call_id = call_id
        self._client = client
        self._is_generator = is_generator
        self._num_inputs = num_inputs
        self._results: Dict[int, Tuple[bool, Any]] = {}
        self._stream: Optional[_CallStream] = None

    @property
    def object_id(self) -> str:
        return self._call_id

    def _c(self) -> Client:
        if self._client is None:
            self._client = get_client()
        return self._client

    @staticmethod
    def from_id(function_call_id: str, client: Optional[Client] = None) -> "FunctionCall":
        """The call with this id (``fc-...``), e.g. passed from another process."""
        if not isinstance(function_call_id, str) or not function_call_id:
            raise exc.InvalidError("FunctionCall.from_id needs a call id such as 'fc-...'")
        return FunctionCall(function_call_id, client, is_generator=None)

    @aio
    def hydrate(self, client: Optional[Client] = None) -> "FunctionCall":
        if client is not None:
            self._client = client
        return self

    @aio
    def num_inputs(self) -> int:
        """How many inputs the call has (1 for ``.spawn()``)."""
        if self._num_inputs is None:
            self._num_inputs = int(self._c().json("GET", f"/v1/calls/{self._call_id}")["count"])
        return self._num_inputs

    @aio
    def get(self, timeout: Optional[float] = None, *, index: int = 0) -> Any:
        """The result of input ``index`` (0 for ``.spawn()``), waiting at most ``timeout`` seconds
        (None: as long as it takes; 0: just look). Raises ``gust.exception.TimeoutError`` if it
        is not ready, and the function's exception if it failed."""
        if index not in self._results:
            if timeout is not None and timeout < 0:
                raise exc.InvalidError("timeout must not be negative")
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._stream is None:
                self._stream = _CallStream(self._c(), self._call_id)
            found: List[Tuple[int, Tuple[bool, Any]]] = []
            for line in self._stream.lines(lambda: index not in self._results, deadline):
                if "log" in line:
                    _write_log(line["log"])
                elif "output" in line:
                    out = line["output"]
                    self._results.setdefault(out.get("index", 0), _decode_output(out))
            if index not in self._results:
                raise exc._NoOutputYetError(f"function call {self._call_id} has no output yet" +
                                           (f" after {timeout:g} s" if timeout else ""))
        ok, v = self._results[index]
        if ok:
            return v
        raise v

    def get_gen(self) -> Iterator[Any]:
        """Iterate over a spawned generator's items."""
        return _CallStream(self._c(), self._call_id).items(0, cancel_on_close=False)

    @aio
    def cancel(self, terminate_containers: bool = False) -> None:
        """Cancel the call: its inputs not done yet end as terminated (``InputCancellation``)."""
        self._c().request("POST", f"/v1/calls/{self._call_id}/cancel",
                          json={"terminate_containers": bool(terminate_containers)})

    @staticmethod
    def gather(*function_calls: "FunctionCall") -> List[Any]:
        """Wait for several calls; their results in order (the first failure is raised)."""
        return gather(*function_calls)

    def __reduce__(self) -> Any:
        return (FunctionCall.from_id, (self._call_id,))

    def __repr__(self) -> str:
        return f"FunctionCall({self._call_id!r})"


def gather(*function_calls: FunctionCall) -> List[Any]:
    """Wait for the spawned calls and return their results in order, as ``modal.functions.gather``."""
    return [fc.get() for fc in function_calls]


__all__ = ["Function", "FunctionCall", "FunctionStats", "gather"]


add_aio(Function, ["get_web_url"])
add_aio(FunctionCall, ["gather"], gen=["get_gen"])
