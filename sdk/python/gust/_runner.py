"""The function runner: the main process of every gust function container.

The worker starts it inside the container (see docs/functions.md, "Runner") as::

    python3 -u -c "import sys; sys.path[:0] = ['/.gust/python', '/.gust/app']; \\
        import gust._runner as r; sys.exit(r.main())" '<config json>'

with the config ``{"module": "myfile", "name": "f", "kind": "function" | "class", "max_inputs": 1}``.
It imports the user's module, finds the function (or class) by name, says ``ready`` and then
runs the inputs the worker sends on stdin, one JSON line each, answering with JSON lines on the
stdout file descriptor it started with (its *protocol channel*): ``log``, ``item`` and
``output`` messages.

How it works:

* The protocol channel is a private duplicate of the original fd 1; fd 1 and fd 2 are pointed at
  pipes that threads read, so everything written to them (by C code or subprocesses too) becomes
  ``log`` messages. ``sys.stdout``/``sys.stderr`` are replaced by writers that attribute text to
  the input running in the current thread or asyncio task (a context variable). fd 0 is pointed
  at /dev/null, so that subprocesses cannot eat protocol lines. An input's logs are always sent
  before its output.
* Up to ``max_inputs`` inputs run at once: plain callables on a thread pool, ``async def``
  ones (and async generators) on one event loop in a thread of its own.
* Classes get one instance per distinct ``params``, made once: parameters (class attributes with
  ``_gust_parameter``) are set as attributes, then the ``_gust_enter`` methods run. At shutdown
  (the ``shutdown`` message, stdin's end or SIGTERM) the ``_gust_exit`` methods of every instance
  run and the process exits 0.

Standard library only, apart from ``gust._serialization`` and ``gust.exception``.
"""

from __future__ import annotations

import codecs
import contextvars
import faulthandler
import importlib
import inspect
import io
import json
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from . import _inner_method
from . import exception as _exc
from ._serialization import b64d, b64e, decode_args, deserialize, serialize


class _Lazy:
    """A module imported on first use: asyncio costs tens of milliseconds to import, which
    every cold start would pay, and only ``async def`` functions need it."""

    def __init__(self, name: str):
        self._name = name
        self._mod = None

    def __getattr__(self, attr: str) -> Any:
        if self._mod is None:
            self._mod = importlib.import_module(self._name)
        return getattr(self._mod, attr)


asyncio = _Lazy("asyncio")

_THIS_FILE = os.path.abspath(__file__)
_UNSET = object()
_current: contextvars.ContextVar = contextvars.ContextVar("gust_input_id", default=_UNSET)

# How long, at shutdown, running inputs may take to finish before the @exit methods run anyway
# (the worker kills the container 5 s after SIGTERM).
_GRACE_S = 3.0
# A writer's text is sent at each newline, or when this much has gathered without one.
_LOG_CHUNK = 8192
# At most this much is read from a capture pipe by one drain outside the pipe's own thread.
_DRAIN_LIMIT = 1 << 20


def current_input_id() -> Optional[str]:
    """The id of the input the calling thread (or asyncio task) runs, or None."""
    v = _current.get()
    return None if v is _UNSET else v


# The call (``fc-...``) of each input being run, for ``current_function_call_id``.
_call_ids: Dict[str, str] = {}


def current_function_call_id() -> Optional[str]:
    """The id of the function call whose input the calling thread (or task) runs, or None."""
    iid = current_input_id()
    return _call_ids.get(iid) if iid else None


# --------------------------------------------------------------------------------------------
# helpers


def _describe(e: BaseException) -> str:
    name = type(e).__name__
    try:
        msg = str(e)
    except Exception:  # noqa: BLE001 - a broken __str__
        msg = ""
    return f"{name}: {msg}" if msg else name


def _infrastructure(filename: str) -> bool:
    if filename == _THIS_FILE or filename.startswith("<frozen importlib"):
        return True
    norm = filename.replace("\\", "/")
    return (
        "/concurrent/futures/" in norm
        or "/asyncio/" in norm
        or norm.endswith("/importlib/__init__.py")
    )


def _format_tb(e: BaseException) -> str:
    """The traceback of ``e``, starting at the first frame that is not the runner's."""
    tb = e.__traceback__
    t = tb
    while t is not None and _infrastructure(t.tb_frame.f_code.co_filename):
        t = t.tb_next
    if t is None:
        t = tb
    try:
        return "".join(traceback.format_exception(type(e), e, t))
    except Exception:  # noqa: BLE001
        return _describe(e) + "\n"


def _pickled_exc(e: BaseException, fmt: str) -> Optional[str]:
    """``e`` pickled (base64) when it survives a round trip, else None (always None for JSON)."""
    if fmt == "json":
        return None
    try:
        data = serialize(e, "pickle")
        pickle.loads(data)
    except BaseException:  # noqa: BLE001 - anything at all means "not picklable"
        return None
    return b64e(data)


def _marked(v: Any, attr: str) -> bool:
    try:
        if getattr(v, attr, False):
            return True
        f = getattr(v, "__func__", None)  # staticmethod / classmethod
        return bool(f is not None and getattr(f, attr, False))
    except Exception:  # noqa: BLE001 - odd descriptors
        return False


def _marked_names(cls: type, attr: str) -> List[str]:
    """Names of ``cls``'s attributes marked with ``attr``, in definition order (bases first)."""
    names: List[str] = []
    seen = set()
    for klass in reversed(cls.__mro__):
        for name in list(vars(klass)):
            if name in seen:
                continue
            seen.add(name)
            # The most derived definition decides.
            for k in cls.__mro__:
                if name in vars(k):
                    if _marked(vars(k)[name], attr):
                        names.append(name)
                    break
    return names


def _parameters(cls: type) -> Dict[str, Any]:
    """The declared parameters of ``cls``: name -> the parameter object (with ``.default``)."""
    params: Dict[str, Any] = {}
    seen = set()
    for klass in cls.__mro__:
        for name, v in list(vars(klass).items()):
            if name in seen:
                continue
            seen.add(name)
            try:
                is_param = bool(getattr(v, "_gust_parameter", False))
            except Exception:  # noqa: BLE001
                is_param = False
            if is_param and not isinstance(v, type):
                params[name] = v
    return params


_sentinel: Any = _UNSET


def _is_missing(v: Any) -> bool:
    """Whether a parameter's default says "no default" (``gust._partial.MISSING``)."""
    global _sentinel
    if _sentinel is _UNSET:
        try:
            from . import _partial  # type: ignore

            _sentinel = getattr(_partial, "MISSING", None)
        except Exception:  # noqa: BLE001
            _sentinel = None
    if _sentinel is not None and v is _sentinel:
        return True
    return type(v).__name__ in ("_Missing", "MISSING", "_MISSING", "_MissingType", "MissingType")


def _init_takes_no_args(init: Any) -> bool:
    try:
        sig = inspect.signature(init)
    except (TypeError, ValueError):
        return True
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            return False
    return True


def _is_async_callable(f: Any) -> bool:
    try:
        return inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
    except Exception:  # noqa: BLE001
        return False


async def _await_in(iid: Any, aw: Any) -> Any:
    """Await ``aw`` with the current input set (a coroutine for run_coroutine_threadsafe)."""
    _current.set(iid)
    return await aw


# --------------------------------------------------------------------------------------------
# output capture


class _Pipe:
    """One capture pipe (fd 1 or fd 2 point at its write end)."""

    def __init__(self, stream: str, target_fd: int):
        self.stream = stream
        self.r, w = os.pipe()
        os.set_inheritable(self.r, False)
        os.set_blocking(self.r, False)
        os.dup2(w, target_fd)  # the new fd 1/2 is inheritable: subprocesses write to the pipe
        os.close(w)
        self.lock = threading.RLock()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.eof = False


class _BytesWriter(io.RawIOBase):
    """``sys.stdout.buffer``: bytes written are decoded and passed to the text writer."""

    def __init__(self, text: "_Writer"):
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        s = self._decoder.decode(data)
        if s:
            self._text.write(s)
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def fileno(self) -> int:
        return self._text.fileno()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:  # never really closed
        pass


class _Writer(io.TextIOBase):
    """``sys.stdout``/``sys.stderr``: text becomes ``log`` messages of the current input."""

    encoding = "utf-8"
    errors = "replace"
    line_buffering = True
    newlines = None
    mode = "w"

    def __init__(self, runner: "_Runner", stream: str, fd: int):
        super().__init__()
        self._runner = runner
        self._stream = stream
        self._fd = fd
        self.name = f"<{stream}>"
        self._lock = threading.RLock()
        self._bufs: Dict[Any, list] = {}  # input id -> [size, parts]
        self.buffer = _BytesWriter(self)

    # io API
    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:  # never really closed
        pass

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return False

    def reconfigure(self, **kwargs: Any) -> None:
        pass

    def write(self, s: Any) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        r = self._runner
        if r.in_child:  # a forked child: its fd 1/2 are our pipes
            try:
                os.write(self._fd, s.encode("utf-8", "replace"))
            except OSError:
                pass
            return len(s)
        iid = _current.get()
        if iid is _UNSET:
            iid = r.only_running()
        with self._lock:
            ent = self._bufs.get(iid)
            if ent is None:
                if "\n" in s or len(s) >= _LOG_CHUNK:
                    r.emit_log(iid, self._stream, s)
                else:
                    self._bufs[iid] = [len(s), [s]]
                return len(s)
            ent[0] += len(s)
            ent[1].append(s)
            if "\n" in s or ent[0] >= _LOG_CHUNK:
                del self._bufs[iid]
                r.emit_log(iid, self._stream, "".join(ent[1]))
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._runner.in_child:
            return
        iid = _current.get()
        if iid is _UNSET:
            iid = self._runner.only_running()
        self.flush_id(iid)

    def flush_id(self, iid: Any) -> None:
        with self._lock:
            ent = self._bufs.pop(iid, None)
            if ent is not None:
                self._runner.emit_log(iid, self._stream, "".join(ent[1]))

    def flush_all(self) -> None:
        with self._lock:
            for iid in list(self._bufs):
                self.flush_id(iid)


# --------------------------------------------------------------------------------------------
# class instances


class _Instance:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.obj: Any = None
        self.error: Optional[BaseException] = None
        self.error_tb = ""


# --------------------------------------------------------------------------------------------
# the runner


class _Runner:
    def __init__(self) -> None:
        self.in_child = False
        self._out_fd = -1
        self._in_fd = -1
        self._send_lock = threading.RLock()
        self._broken = False
        self._pipes: List[_Pipe] = []
        self._writers: List[_Writer] = []
        self._running: Dict[str, int] = {}
        self._lock = threading.Lock()  # _running, _pending (a C-level lock: it is taken per input)
        self._cond = threading.Condition(self._lock)  # waited on at shutdown only
        self._pending = 0
        self._stopping = False
        self._wake_r = self._wake_w = -1
        self._kind = "function"
        self._fn: Any = None
        self._fn_async = False
        self._cls: Optional[type] = None
        self._cls_handle: Any = None  # the module's gust.Cls, for self.method.remote()
        self._max_inputs = 1
        self._executor: Optional[ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        self._sem: Optional[asyncio.Semaphore] = None
        self._async_cache: Dict[Any, bool] = {}
        self._instances: Dict[Any, _Instance] = {}
        self._instance_order: List[Tuple[Any, _Instance]] = []
        self._instances_lock = threading.Lock()
        self._pid = os.getpid()
        self._batcher: Optional[_Batcher] = None  # made for the first input of a @batched function

    # ---------------------------------------------------------------- protocol channel

    def setup_io(self) -> None:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass
        self._out_fd = os.dup(1)
        os.set_inheritable(self._out_fd, False)
        self._in_fd = os.dup(0)
        os.set_inheritable(self._in_fd, False)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_inheritable(fd, False)
        os.set_blocking(self._wake_w, False)

        # A crash (segfault in C code...) kills the pipe threads too: its Python traceback goes
        # to the stderr the runner started with, which the worker reads.
        self._err_fd = os.dup(2)
        os.set_inheritable(self._err_fd, False)
        try:
            faulthandler.enable(file=self._err_fd, all_threads=False)
        except Exception:  # noqa: BLE001
            pass
        self._pipes = [_Pipe("stdout", 1), _Pipe("stderr", 2)]
        for p in self._pipes:
            t = threading.Thread(target=self._guard(self._pump, p), name=f"gust-{p.stream}", daemon=True)
            t.start()
        self._writers = [_Writer(self, "stdout", 1), _Writer(self, "stderr", 2)]
        sys.stdout, sys.stderr = self._writers
        try:
            os.register_at_fork(after_in_child=self._after_fork)
        except Exception:  # noqa: BLE001
            pass

    def _after_fork(self) -> None:
        # A forked child (multiprocessing...): it writes plain text to fd 1/2, our capture pipes.
        self.in_child = True
        self._send_lock = threading.RLock()

    def send(self, msg: dict) -> None:
        if self.in_child or self._broken:
            return
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self._send_lock:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._out_fd, view)
                    view = view[n:]
            except OSError:
                # The worker is gone: nobody listens any more.
                self._broken = True
                self.request_shutdown()

    def runner_log(self, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        self.send({"type": "log", "id": None, "stream": "stderr", "data": text})

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Wrap a thread's target so that its exceptions are reported, never lost."""

        def run() -> None:
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001
                try:
                    self.runner_log("gust runner: internal error in thread "
                                    f"{threading.current_thread().name}:\n{traceback.format_exc()}")
                except BaseException:  # noqa: BLE001
                    pass

        return run

    # ---------------------------------------------------------------- logs

    def only_running(self) -> Optional[str]:
        running = self._running
        if len(running) == 1:
            try:
                return next(iter(running))
            except (StopIteration, RuntimeError):
                return None
        return None

    def emit_log(self, iid: Any, stream: str, text: str) -> None:
        # What was written straight to fd 1/2 before this comes first.
        self.drain_pipes()
        self.send({"type": "log", "id": iid, "stream": stream, "data": text})

    def _pump(self, p: _Pipe) -> None:
        poller = select.poll()
        poller.register(p.r, select.POLLIN)
        while not p.eof:
            try:
                poller.poll()
            except InterruptedError:
                continue
            with p.lock:
                self._drain(p, _DRAIN_LIMIT)

    def _drain(self, p: _Pipe, limit: Optional[int]) -> None:
        """Send what the pipe holds now (the caller holds ``p.lock``)."""
        got = 0
        while not p.eof:
            try:
                chunk = os.read(p.r, 65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                p.eof = True
                return
            if not chunk:
                p.eof = True
                text = p.decoder.decode(b"", final=True)
            else:
                text = p.decoder.decode(chunk)
            if text:
                self.send({"type": "log", "id": self.only_running(), "stream": p.stream, "data": text})
            got += len(chunk)
            if limit is not None and got >= limit:
                return

    def drain_pipes(self) -> None:
        if self.in_child:
            return
        for p in self._pipes:
            with p.lock:
                self._drain(p, _DRAIN_LIMIT)

    def flush_logs(self, iid: Any) -> None:
        """Send every log of ``iid`` gathered so far (its writers' partial lines, the pipes)."""
        for w in self._writers:
            w.flush_id(iid)
        self.drain_pipes()

    # ---------------------------------------------------------------- loading

    def load(self, config: dict) -> None:
        module_name = config["module"]
        name = config["name"]
        self._kind = config.get("kind") or "function"
        if self._kind not in ("function", "class"):
            raise _exc.InvalidError(f"unknown kind {self._kind!r} (function or class)")
        mod = importlib.import_module(module_name)
        try:
            obj = getattr(mod, name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        if self._kind == "function":
            raw = getattr(obj, "_gust_raw_f", None)
            if raw is None:
                raw = obj
            if not callable(raw) or isinstance(raw, type):
                raise TypeError(f"{module_name}.{name} is not a function (it is a {type(raw).__name__})")
            self._fn = raw
            self._fn_async = _is_async_callable(raw)
        else:
            raw = getattr(obj, "_gust_raw_cls", None)
            if raw is None:
                raw = obj
            if not isinstance(raw, type):
                raise TypeError(f"{module_name}.{name} is not a class (it is a {type(raw).__name__})")
            self._cls = raw
            self._cls_handle = obj if raw is not obj else None
        # Arguments pickled by reference to the client's __main__ (the entrypoint that ran as a
        # script, without cloudpickle) name the user's module as __main__: let them resolve.
        main = sys.modules.get("__main__")
        if main is not None and main is not mod and module_name != "__main__":
            md = main.__dict__
            for k, v in list(vars(mod).items()):
                if not k.startswith("__"):
                    md.setdefault(k, v)

    # ---------------------------------------------------------------- class instances

    @staticmethod
    def _params_key(params: Any) -> Any:
        if not isinstance(params, dict) or params.get("data") is None:
            return None
        return (params.get("format") or "pickle", params["data"])

    def _instance(self, params: Optional[dict]) -> Any:
        key = self._params_key(params)
        with self._instances_lock:
            ent = self._instances.get(key)
            if ent is None:
                ent = _Instance()
                self._instances[key] = ent
                self._instance_order.append((key, ent))
        if not ent.done:
            with ent.lock:
                if not ent.done:
                    try:
                        ent.obj = self._make_instance(params)
                    except BaseException as e:  # noqa: BLE001 - fails the inputs of this instance
                        ent.error = e
                        ent.error_tb = _format_tb(e)
                    ent.done = True
        if ent.error is not None:
            raise _InstanceError(ent.error, ent.error_tb)
        return ent.obj

    def _make_instance(self, params: Optional[dict]) -> Any:
        cls = self._cls
        assert cls is not None
        given: Dict[str, Any] = {}
        if self._params_key(params) is not None:
            v = deserialize(b64d(params["data"]), params.get("format") or "pickle")
            if v is None:
                v = {}
            if not isinstance(v, dict):
                raise _exc.InvalidError(f"class parameters must be a dict of keyword arguments, not {type(v).__name__}")
            given = v
        declared = _parameters(cls)
        obj = cls.__new__(cls)
        init = getattr(cls, "__init__", object.__init__)
        own_init = init is not object.__init__
        if declared or not own_init:
            unknown = sorted(k for k in given if k not in declared)
            if unknown:
                have = ", ".join(sorted(declared)) or "none"
                raise _exc.InvalidError(
                    f"{cls.__name__} has no parameter {unknown[0]!r} (its parameters: {have})")
            for pname, p in declared.items():
                if pname in given:
                    value = given[pname]
                else:
                    value = getattr(p, "default", None) if hasattr(p, "default") else _UNSET
                    if value is _UNSET or _is_missing(value):
                        raise _exc.InvalidError(
                            f"{cls.__name__} needs a value for the parameter {pname!r} (it has no default)")
                setattr(obj, pname, value)
            if own_init and _init_takes_no_args(init):
                obj.__init__()
        else:
            # An old-style class: its __init__ takes the parameters.
            obj.__init__(**given)
        handle = self._cls_handle
        _inner_method.install(obj, _marked_names(cls, "_gust_method"),
                              lambda: handle(**given) if handle is not None else None)
        for name in _marked_names(cls, "_gust_enter"):
            self._call_blocking(getattr(obj, name))
        return obj

    def _call_blocking(self, fn: Any) -> Any:
        """Call ``fn`` from a thread other than the loop's; await its result if need be."""
        res = fn()
        if inspect.isawaitable(res):
            fut = asyncio.run_coroutine_threadsafe(_await_in(_current.get(), res), self._get_loop())
            res = fut.result()
        return res

    def _run_exits(self) -> None:
        if self._cls is None:
            return
        names = _marked_names(self._cls, "_gust_exit")
        if not names:
            return
        with self._instances_lock:
            order = list(self._instance_order)
        for _key, ent in order:
            if not ent.done or ent.error is not None:
                continue
            for name in names:
                try:
                    res = getattr(ent.obj, name)()
                    if inspect.isawaitable(res):
                        asyncio.run_coroutine_threadsafe(_await_in(None, res), self._get_loop()).result(_GRACE_S)
                except BaseException as e:  # noqa: BLE001
                    self.runner_log(f"gust: the @exit method {self._cls.__name__}.{name} failed: "
                                    f"{_describe(e)}\n{_format_tb(e)}")

    # ---------------------------------------------------------------- inputs

    def _is_async(self, method: Any) -> bool:
        if self._kind == "function":
            return self._fn_async
        if not isinstance(method, str):
            return False  # the input fails in _target
        v = self._async_cache.get(method)
        if v is None:
            try:
                v = _is_async_callable(getattr(self._cls, method, None))
            except Exception:  # noqa: BLE001
                v = False
            self._async_cache[method] = v
        return v

    def _target(self, instance: Any, method: Optional[str]) -> Any:
        if self._kind == "function":
            return self._fn
        if not method or not isinstance(method, str):
            raise _exc.InvalidError(f"an input of the class {self._cls.__name__} names no method")
        f = None if method.startswith("__") else _inner_method.unwrap(getattr(instance, method, None))
        if f is None or not callable(f):
            raise _exc.InvalidError(f"{self._cls.__name__} has no method {method!r}")
        return f

    def accept(self, msg: dict) -> None:
        iid = msg.get("id")
        if not isinstance(iid, str):
            self.runner_log(f"gust runner: ignoring an input without an id: {str(msg)[:200]}")
            return
        if self._stopping:
            self.runner_log(f"gust runner: shutting down, input {iid} was not run")
            return
        with self._lock:
            self._pending += 1
            if isinstance(msg.get("call_id"), str):
                _call_ids[iid] = msg["call_id"]
        try:
            conf = self._batch_conf(msg.get("method"))
            if conf is not None:
                if self._batcher is None:
                    self._batcher = _Batcher(self)
                self._batcher.add((msg.get("method"), self._params_key(msg.get("params"))), conf, msg)
            elif self._is_async(msg.get("method")):
                asyncio.run_coroutine_threadsafe(self._run_async_safe(msg), self._get_loop())
            else:
                # Never on this thread: it must stay free to see a shutdown while inputs run.
                assert self._executor is not None
                self._executor.submit(self._run_sync_safe, msg)
        except BaseException:
            with self._lock:
                self._pending -= 1
                self._cond.notify_all()
            raise

    # ---------------------------------------------------------------- @batched

    def _batch_conf(self, method: Any) -> Optional[Tuple[int, int]]:
        """(max_batch_size, wait_ms) of a @batched function or method, else None."""
        if self._kind == "function":
            return getattr(self._fn, "_gust_batched", None)
        if not isinstance(method, str) or method.startswith("__") or self._cls is None:
            return None
        return getattr(getattr(self._cls, method, None), "_gust_batched", None)

    def run_batch(self, msgs: List[dict]) -> None:
        """Run one batch: a list per parameter in, a result per input out. An input whose
        arguments do not fit the function fails alone; an exception of the function, or a
        result that is not a list of one value per input, fails the whole batch."""
        from ._partial import batch_params
        token = _current.set(msgs[0]["id"])  # the batch's logs go with its first input
        for m in msgs:
            self._begin(m["id"])
        outs: Dict[str, dict] = {}
        fmts = {m["id"]: m.get("format") or "pickle" for m in msgs}
        valid: List[dict] = []
        try:
            try:
                instance = self._instance(msgs[0].get("params")) if self._kind == "class" else None
                fn = self._target(instance, msgs[0].get("method"))
                name = getattr(fn, "__qualname__", "") or getattr(fn, "__name__", "function")
                sig = inspect.signature(fn)
                names = batch_params(fn)
                cols: Dict[str, list] = {n: [] for n in names}
                for m in msgs:
                    iid, fmt = m["id"], fmts[m["id"]]
                    try:
                        args, kwargs = decode_args(b64d(m.get("args")), fmt) if m.get("args") else ((), {})
                        bound = sig.bind(*args, **kwargs)
                    except BaseException as e:  # noqa: BLE001
                        err = _exc.InvalidError(f"Modal batched function {name} takes {len(names)} argument(s) "
                                                f"({', '.join(names)}), one per input: {e}") if isinstance(e, TypeError) else e
                        outs[iid] = self._failure(iid, err, fmt)
                        continue
                    for n in names:
                        cols[n].append(bound.arguments[n])
                    valid.append(m)
                if valid:
                    res = fn(**cols)
                    if inspect.isawaitable(res):
                        res = asyncio.run_coroutine_threadsafe(_await_in(msgs[0]["id"], res), self._get_loop()).result()
                    if not isinstance(res, list):
                        raise _exc.InvalidError(f"Output of batched function {name} must be a list, got {type(res).__name__}.")
                    if len(res) != len(valid):
                        raise _exc.InvalidError(f"Output of batched function {name} must be a list of equal length as its "
                                                f"inputs: {len(res)} results for {len(valid)} inputs.")
                    for m, r in zip(valid, res):
                        try:
                            outs[m["id"]] = self._success(m["id"], b64e(serialize(r, fmts[m["id"]])), fmts[m["id"]])
                        except BaseException as e:  # noqa: BLE001 - one unserialisable result
                            outs[m["id"]] = self._failure(m["id"], e, fmts[m["id"]])
            except BaseException as e:  # noqa: BLE001 - the batch fails, every input of it
                for m in msgs:
                    if m["id"] not in outs:
                        outs[m["id"]] = self._failure(m["id"], e, fmts[m["id"]])
                del e
        finally:
            for m in msgs:
                self._end_safely(m["id"], outs.get(m["id"]), fmts[m["id"]])
            _current.reset(token)

    def _run_batch_safe(self, msgs: List[dict]) -> None:
        try:
            self.run_batch(msgs)
        except BaseException:  # noqa: BLE001
            self.runner_log(f"gust runner: internal error running a batch:\n{traceback.format_exc()}")

    def _begin(self, iid: str) -> None:
        with self._lock:
            self._running[iid] = self._running.get(iid, 0) + 1

    def _end_safely(self, iid: str, out: Optional[dict], fmt: str) -> None:
        """End an input with its output, whatever happened on the way."""
        if out is None:  # pragma: no cover - defensive
            out = self._failure(iid, _exc.ExecutionError("the runner lost the result"), fmt)
        try:
            self._end(iid, out)
        except BaseException:  # noqa: BLE001
            self.runner_log(f"gust runner: internal error finishing input {iid}:\n{traceback.format_exc()}")

    def _end(self, iid: str, out: dict) -> None:
        try:
            self.flush_logs(iid)
            with self._lock:
                n = self._running.get(iid, 0) - 1
                if n > 0:
                    self._running[iid] = n
                else:
                    self._running.pop(iid, None)
                    _call_ids.pop(iid, None)
            self.send(out)
        finally:
            with self._lock:
                self._pending -= 1
                if self._stopping:
                    self._cond.notify_all()

    @staticmethod
    def _success(iid: str, data: Optional[str], fmt: str) -> dict:
        return {"type": "output", "id": iid, "status": "success", "data": data, "format": fmt,
                "error": None, "traceback": None, "exc": None}

    @staticmethod
    def _failure(iid: str, e: BaseException, fmt: str) -> dict:
        if isinstance(e, _InstanceError):
            e, tb = e.error, e.tb
        else:
            tb = _format_tb(e)
        return {"type": "output", "id": iid, "status": "failure", "data": None, "format": fmt,
                "error": _describe(e), "traceback": tb, "exc": _pickled_exc(e, fmt)}

    def _send_item(self, iid: str, item: Any, fmt: str) -> None:
        data = b64e(serialize(item, fmt))
        self.flush_logs(iid)
        self.send({"type": "item", "id": iid, "data": data, "format": fmt})

    def _run_sync_safe(self, msg: dict) -> None:
        try:
            self._run_sync(msg)
        except BaseException:  # noqa: BLE001 - a bug of the runner's: say so
            self.runner_log(f"gust runner: internal error running input {msg.get('id')}:\n{traceback.format_exc()}")

    async def _run_async_safe(self, msg: dict) -> None:
        try:
            await self._run_async(msg)
        except BaseException:  # noqa: BLE001
            self.runner_log(f"gust runner: internal error running input {msg.get('id')}:\n{traceback.format_exc()}")

    def _run_sync(self, msg: dict) -> None:
        iid = msg["id"]
        fmt = msg.get("format") or "pickle"
        token = _current.set(iid)
        self._begin(iid)
        out: Optional[dict] = None
        try:
            try:
                instance = self._instance(msg.get("params")) if self._kind == "class" else None
                fn = self._target(instance, msg.get("method"))
                args, kwargs = decode_args(b64d(msg.get("args")), fmt) if msg.get("args") else ((), {})
                res = fn(*args, **kwargs)
                if inspect.isgenerator(res):
                    try:
                        for item in res:
                            self._send_item(iid, item, fmt)
                    finally:
                        res.close()
                    out = self._success(iid, None, fmt)
                elif inspect.isasyncgen(res):
                    loop = self._get_loop()
                    try:
                        while True:
                            try:
                                item = asyncio.run_coroutine_threadsafe(_await_in(iid, res.__anext__()), loop).result()
                            except StopAsyncIteration:
                                break
                            self._send_item(iid, item, fmt)
                    finally:
                        try:
                            asyncio.run_coroutine_threadsafe(_await_in(iid, res.aclose()), loop).result(_GRACE_S)
                        except BaseException:  # noqa: BLE001
                            pass
                    out = self._success(iid, None, fmt)
                else:
                    if inspect.isawaitable(res):
                        res = asyncio.run_coroutine_threadsafe(_await_in(iid, res), self._get_loop()).result()
                    out = self._success(iid, b64e(serialize(res, fmt)), fmt)
            except BaseException as e:  # noqa: BLE001 - SystemExit etc. fail only this input
                out = self._failure(iid, e, fmt)
                del e
        finally:
            self._end_safely(iid, out, fmt)
            _current.reset(token)

    async def _run_async(self, msg: dict) -> None:
        iid = msg["id"]
        fmt = msg.get("format") or "pickle"
        assert self._sem is not None
        async with self._sem:
            _current.set(iid)
            self._begin(iid)
            out: Optional[dict] = None
            try:
                try:
                    instance = None
                    if self._kind == "class":
                        params = msg.get("params")
                        ent = self._instances.get(self._params_key(params))
                        if ent is not None and ent.done and ent.error is None:
                            instance = ent.obj
                        else:  # __init__/@enter may block: not on the loop
                            loop = asyncio.get_running_loop()
                            ctx = contextvars.copy_context()
                            instance = await loop.run_in_executor(self._executor, ctx.run, self._instance, params)
                    fn = self._target(instance, msg.get("method"))
                    args, kwargs = decode_args(b64d(msg.get("args")), fmt) if msg.get("args") else ((), {})
                    res = fn(*args, **kwargs)
                    if inspect.isasyncgen(res):
                        try:
                            async for item in res:
                                self._send_item(iid, item, fmt)
                        finally:
                            await res.aclose()
                        out = self._success(iid, None, fmt)
                    elif inspect.isgenerator(res):
                        try:
                            for item in res:
                                self._send_item(iid, item, fmt)
                        finally:
                            res.close()
                        out = self._success(iid, None, fmt)
                    else:
                        if inspect.isawaitable(res):
                            res = await res
                        out = self._success(iid, b64e(serialize(res, fmt)), fmt)
                except BaseException as e:  # noqa: BLE001 - CancelledError, SystemExit... fail this input
                    out = self._failure(iid, e, fmt)
                    del e
            finally:
                self._end_safely(iid, out, fmt)

    # ---------------------------------------------------------------- event loop

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._sem = asyncio.Semaphore(self._max_inputs)
                t = threading.Thread(target=self._guard(self._loop_main, loop), name="gust-asyncio", daemon=True)
                self._loop_thread = t
                self._loop = loop
                t.start()
            return self._loop

    def _loop_main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        while True:
            try:
                loop.run_forever()
                return
            except BaseException:  # noqa: BLE001 - e.g. SystemExit raised in a task of the user's
                self.runner_log(f"gust runner: the event loop stopped on an error (restarting it):\n"
                                f"{traceback.format_exc()}")
                if loop.is_closed():
                    return

    # ---------------------------------------------------------------- stdin and shutdown

    def _read_stdin(self) -> None:
        f = io.open(self._in_fd, "rb", buffering=1 << 16, closefd=False)
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.runner_log(f"gust runner: ignoring a line that is not JSON: {line[:200]!r}")
                    continue
                t = msg.get("type") if isinstance(msg, dict) else None
                if t == "input":
                    try:
                        self.accept(msg)
                    except BaseException:  # noqa: BLE001
                        self.runner_log(f"gust runner: cannot start input {msg.get('id')}:\n{traceback.format_exc()}")
                elif t == "shutdown":
                    return
                else:
                    self.runner_log(f"gust runner: ignoring a message of unknown type {t!r}: {line[:200]!r}")
        finally:
            self.request_shutdown()

    def request_shutdown(self) -> None:
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (already asked) or closed
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.request_shutdown()

    def serve(self) -> int:
        t = threading.Thread(target=self._guard(self._read_stdin), name="gust-stdin", daemon=True)
        t.start()
        while True:
            try:
                if os.read(self._wake_r, 64):
                    break
            except InterruptedError:
                continue
        return self.shutdown()

    def shutdown(self) -> int:
        self._stopping = True
        token = _current.set(None)
        if self._batcher is not None:
            self._batcher.flush()  # gathered inputs run now rather than wait out wait_ms
        deadline = time.monotonic() + _GRACE_S
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            leftover = self._pending
        self._run_exits()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        for w in self._writers:
            w.flush_all()
        self.drain_pipes()
        _current.reset(token)
        if leftover:
            self.runner_log(f"gust runner: exiting with {leftover} input(s) still running")
            self._hard_exit(0)
        # Threads of the user's that would keep the interpreter from exiting: do not wait for them.
        main = threading.main_thread()
        if any(t is not main and not t.daemon and t.is_alive() and not t.name.startswith("gust-input")
               for t in threading.enumerate()):
            self._hard_exit(0)
        return 0

    def _hard_exit(self, code: int) -> None:
        try:
            import atexit

            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            pass
        for w in self._writers:
            w.flush_all()
        self.drain_pipes()
        os._exit(code)

    def run(self, argv: List[str]) -> int:
        self.setup_io()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._on_signal)
            except (ValueError, OSError):  # not the main thread
                pass
        try:
            if len(argv) < 2:
                raise _exc.InvalidError("usage: gust._runner '<config json>'")
            config = json.loads(argv[1])
            if not isinstance(config, dict):
                raise _exc.InvalidError("the runner's config must be a JSON object")
            del sys.argv[1:]  # user code may parse sys.argv at import
            self._max_inputs = max(1, int(config.get("max_inputs") or 1))
            if config.get("modal_compat"):
                from . import _compat
                _compat.install()  # before the user's module, which may `import modal`
            self.load(config)
            web = os.environ.get("GUST_WEB")
            if web:  # a web endpoint: serve it before saying ready
                from . import _webserve
                conf = json.loads(web)
                target = self._fn
                if self._kind == "class":  # its method, on the instance (parameters' defaults, @enter)
                    try:
                        target = getattr(self._instance(None), conf["cls_method"])
                    except _InstanceError as e:
                        raise e.error from None
                _webserve.start(target, conf)
        except BaseException as e:  # noqa: BLE001 - SystemExit at import too
            for w in self._writers:
                w.flush_all()
            self.drain_pipes()
            self.send({"type": "init_error", "error": _describe(e), "traceback": _format_tb(e)})
            return 1
        self._executor = ThreadPoolExecutor(max_workers=self._max_inputs, thread_name_prefix="gust-input")
        for w in self._writers:
            w.flush_all()
        self.drain_pipes()
        self.send({"type": "ready"})
        return self.serve()


class _Batcher:
    """Gathers the inputs of a @batched function into batches: one per method and class
    parameters, sent to the runner's pool when it holds max_batch_size inputs or wait_ms has
    passed since its first input, whichever comes first."""

    def __init__(self, runner: "_Runner"):
        self._runner = runner
        self._cond = threading.Condition()
        self._groups: Dict[Any, Tuple[float, List[dict], int]] = {}  # key → (deadline, inputs, max size)
        threading.Thread(target=self._loop, name="gust-batcher", daemon=True).start()

    def add(self, key: Any, conf: Tuple[int, int], msg: dict) -> None:
        max_size, wait_ms = conf
        with self._cond:
            deadline, msgs, _ = self._groups.get(key) or (time.monotonic() + wait_ms / 1000.0, [], max_size)
            msgs.append(msg)
            if len(msgs) >= max_size:
                self._groups.pop(key, None)
                self._submit(msgs)
                return
            self._groups[key] = (deadline, msgs, max_size)
            self._cond.notify()

    def flush(self) -> None:
        with self._cond:
            groups, self._groups = self._groups, {}
            for _, msgs, _ in groups.values():
                self._submit(msgs)

    def _submit(self, msgs: List[dict]) -> None:
        assert self._runner._executor is not None
        self._runner._executor.submit(self._runner._run_batch_safe, msgs)

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, (deadline, msgs, _) in list(self._groups.items()):
                    if deadline <= now:
                        self._groups.pop(key)
                        self._submit(msgs)
                wait = min((d for d, _, _ in self._groups.values()), default=None)
                self._cond.wait(None if wait is None else max(0.0, wait - time.monotonic()))


class _InstanceError(Exception):
    """A class instance could not be made: carries the original error and its traceback."""

    def __init__(self, error: BaseException, tb: str):
        super().__init__(_describe(error))
        self.error = error
        self.tb = tb


_runner: Optional[_Runner] = None


def main(argv: Optional[List[str]] = None) -> int:
    """Run the runner; ``argv[1]`` (default ``sys.argv[1]``) is the config JSON. Returns the exit code."""
    global _runner
    os.environ.setdefault("GUST_IS_REMOTE", "1")
    if argv is None:
        argv = list(sys.argv)
    _runner = _Runner()
    return _runner.run(argv)


if __name__ == "__main__":  # python3 -m gust._runner '<config>'
    sys.exit(main())
