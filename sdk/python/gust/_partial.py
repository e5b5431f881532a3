"""The markers users put on functions, methods and class attributes: ``@gust.method()``,
``@gust.enter()``, ``@gust.exit()``, ``gust.parameter()`` and ``@gust.concurrent(...)``.

They only record attributes on the user's own objects (see docs/functions.md, "How the runner
finds user objects"), so the class stays an ordinary Python class that the runner can
instantiate in the container.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import exception as exc


class _Missing:
    """The default of a ``gust.parameter()`` that has none."""

    _instance: Optional["_Missing"] = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:  # unpickles to the same sentinel
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _marker(attr: str, what: str, extra: Optional[dict] = None) -> Callable:
    def mark(f: Callable) -> Callable:
        if isinstance(f, (staticmethod, classmethod)):
            raise exc.InvalidError(f"@gust.{what}() cannot be used on a static or class method")
        if not callable(f):
            raise exc.InvalidError(f"@gust.{what}() must decorate a function, got {f!r}")
        setattr(f, attr, True)
        for k, v in (extra or {}).items():
            setattr(f, k, v)
        return f
    return mark


def method(_f: Optional[Callable] = None, *, is_generator: Optional[bool] = None) -> Callable:
    """Mark a method of an ``@app.cls`` class as callable remotely (``Model().predict.remote()``).

    Usable as ``@gust.method()`` and as ``@gust.method``."""
    deco = _marker("_gust_method", "method", {"_gust_is_generator": is_generator})
    return deco(_f) if _f is not None else deco


def enter(_f: Optional[Callable] = None, *, snap: bool = False) -> Callable:
    """Mark a method to run once when a container makes an instance (after parameters are set)."""
    deco = _marker("_gust_enter", "enter")
    return deco(_f) if _f is not None else deco


def exit(_f: Optional[Callable] = None) -> Callable:  # noqa: A001 - Modal's name
    """Mark a method to run when the container shuts down."""
    deco = _marker("_gust_exit", "exit")
    return deco(_f) if _f is not None else deco


class _Parameter:
    """A class parameter declared with ``gust.parameter()``; instances get the value as an attribute."""

    _gust_parameter = True

    def __init__(self, default: Any, init: bool):
        self.default = default
        self.init = init
        self.name: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"gust.parameter(default={self.default!r})"


def parameter(*, default: Any = MISSING, init: bool = True) -> Any:
    """Declare a class parameter: ``size: int = gust.parameter(default=3)``; set with ``Model(size=5)``."""
    return _Parameter(default, init)


def class_parameters(cls: type) -> dict:
    """The declared parameters of a class (base classes first), name → _Parameter."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        for name, v in vars(klass).items():
            if getattr(v, "_gust_parameter", False) is True:
                out[name] = v
            else:
                out.pop(name, None)  # overridden in a subclass by something else
    return out


def concurrent(_f: Any = None, *, max_inputs: int, target_inputs: Optional[int] = None) -> Callable:
    """Let one container run up to ``max_inputs`` inputs at once; the autoscaler aims for
    ``target_inputs`` (default ``max_inputs``). Goes on a function (under ``@app.function``)
    or an ``@app.cls`` class."""
    for name, v in (("max_inputs", max_inputs), ("target_inputs", target_inputs)):
        if v is None and name == "target_inputs":
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise exc.InvalidError(f"@gust.concurrent: {name} must be an integer of at least 1, got {v!r}")
    if target_inputs is not None and target_inputs > max_inputs:
        raise exc.InvalidError(
            f"@gust.concurrent: target_inputs ({target_inputs}) must not exceed max_inputs ({max_inputs})")

    def deco(obj: Any) -> Any:
        setter = getattr(obj, "_gust_set_concurrency", None)
        if setter is not None:  # applied above @app.function / @app.cls
            setter(max_inputs, target_inputs)
        elif callable(obj):
            obj._gust_concurrency = (max_inputs, target_inputs)
        else:
            raise exc.InvalidError(f"@gust.concurrent must decorate a function or class, got {obj!r}")
        return obj

    return deco(_f) if _f is not None else deco


# Modal's bounds on dynamic batching.
MAX_MAX_BATCH_SIZE = 1000
MAX_BATCH_WAIT_MS = 10 * 60 * 1000


def batched(_f: Any = None, *, max_batch_size: int, wait_ms: int) -> Callable:
    """Dynamic batching, as Modal's ``@modal.batched``: callers send single inputs (``f.remote(x)``,
    ``f.map(xs)``); the container gathers up to ``max_batch_size`` of them, waiting at most
    ``wait_ms`` after the first, and calls the function once with a list per parameter. It must
    return a list with one result per input; an exception fails every input of the batch.

    Goes under ``@app.function()``, or on a method of an ``@app.cls`` class (instead of
    ``@gust.method()``)."""
    for name, v in (("max_batch_size", max_batch_size), ("wait_ms", wait_ms)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise exc.InvalidError(f"{name} must be an integer, got {v!r}")
    if max_batch_size < 1:
        raise exc.InvalidError("max_batch_size must be a positive integer.")
    if max_batch_size > MAX_MAX_BATCH_SIZE:
        raise exc.InvalidError(f"max_batch_size cannot be greater than {MAX_MAX_BATCH_SIZE}.")
    if wait_ms < 0:
        raise exc.InvalidError("wait_ms must be a non-negative integer.")
    if wait_ms >= MAX_BATCH_WAIT_MS:
        raise exc.InvalidError(f"wait_ms cannot be greater than or equal to {MAX_BATCH_WAIT_MS}.")

    def deco(f: Any) -> Any:
        if getattr(f, "_gust_raw_f", None) is not None or getattr(f, "_gust_raw_cls", None) is not None:
            raise exc.InvalidError("@gust.batched goes under @app.function() (or on a method of an @app.cls class), "
                                   "not above it")
        if not callable(f) or isinstance(f, type):
            raise exc.InvalidError(f"@gust.batched must decorate a function, got {f!r}")
        check_batched_signature(f)
        f._gust_batched = (max_batch_size, wait_ms)
        f._gust_method = True  # in a class, a batched method is a remote method
        f._gust_is_generator = False
        return f

    return deco(_f) if _f is not None else deco


def check_batched_signature(f: Callable) -> None:
    """Modal's rules for a batched function: not a generator; at least one parameter (besides
    a method's self); no defaults, no *args or **kwargs."""
    import inspect
    name = getattr(f, "__qualname__", getattr(f, "__name__", repr(f)))
    if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
        raise exc.InvalidError(f"Modal batched function {name} cannot be a generator (batched generators are not supported)")
    params = list(inspect.signature(f).parameters.values())
    if "." in name and "<locals>" not in name.split(".")[-2:-1] and params and params[0].name == "self":
        params = params[1:]
    if not params:
        raise exc.InvalidError(f"Modal batched function {name} must take at least one argument")
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise exc.InvalidError(f"Modal batched function {name} does not accept variadic arguments")
        if p.default is not p.empty:
            raise exc.InvalidError(f"Modal batched function {name} does not accept default arguments")


def batch_params(f: Callable) -> list:
    """The parameter names a batched function takes lists for (a method's self left out)."""
    import inspect
    return [p.name for p in inspect.signature(f).parameters.values()]
