"""Payloads of function calls: arguments, results, generator items, class parameters.

See docs/functions.md ("Payloads"). ``pickle`` is the Python SDK's format (plain pickle, and cloudpickle
for what plain pickle cannot do when it is importable); ``json`` is what the Go SDK sends.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any, Optional, Tuple

from . import exception as exc

try:  # pragma: no cover - depends on the environment
    import cloudpickle as _cloudpickle  # type: ignore
except Exception:  # noqa: BLE001 - any import problem means "not available"
    _cloudpickle = None

PICKLE = "pickle"
JSON = "json"
PROTOCOL = 4


def serialize(obj: Any, fmt: str = PICKLE) -> bytes:
    """Encode a value. Raises ``exc.SerializationError`` when it cannot be encoded."""
    if fmt == JSON:
        try:
            return json.dumps(obj).encode()
        except (TypeError, ValueError) as e:
            raise exc.SerializationError(f"value of type {type(obj).__name__} is not JSON-serialisable: {e}") from None
    if fmt != PICKLE:
        raise exc.InvalidError(f"unknown payload format {fmt!r}")
    # Plain pickle first: the container may not have cloudpickle, and plain pickles load
    # anywhere. cloudpickle (when this side has it) only for what plain pickle refuses, such
    # as lambdas and local functions.
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception as e:  # noqa: BLE001 - pickling raises many kinds
        first = e
    if _cloudpickle is not None:
        try:
            return _cloudpickle.dumps(obj, protocol=PROTOCOL)
        except Exception as e:  # noqa: BLE001
            first = e
    raise exc.SerializationError(f"cannot pickle a value of type {type(obj).__name__}: {first}") from None


def deserialize(data: bytes, fmt: str = PICKLE) -> Any:
    """Decode a value. Raises ``exc.DeserializationError`` when it cannot be decoded."""
    try:
        if fmt == JSON:
            return json.loads(data.decode())
        if fmt != PICKLE:
            raise exc.InvalidError(f"unknown payload format {fmt!r}")
        return pickle.loads(data)
    except exc.Error:
        raise
    except ModuleNotFoundError as e:
        hint = ""
        if (e.name or "").split(".")[0] == "cloudpickle":
            # Modal's containers always have cloudpickle; gust's have only the standard library.
            hint = ("; it was pickled with cloudpickle (a lambda, a local function or class), which this "
                    "side lacks: add .pip_install(\"cloudpickle\") to the image, or pass a module-level "
                    "function instead")
        raise exc.DeserializationError(f"cannot decode a {fmt} payload: {type(e).__name__}: {e}{hint}") from None
    except Exception as e:  # noqa: BLE001
        raise exc.DeserializationError(f"cannot decode a {fmt} payload: {type(e).__name__}: {e}") from None


def encode_args(args: tuple, kwargs: dict, fmt: str = PICKLE) -> bytes:
    """The arguments of one input."""
    if fmt == JSON:
        return serialize({"args": list(args), "kwargs": dict(kwargs)}, JSON)
    return serialize((tuple(args), dict(kwargs)), fmt)


def decode_args(data: bytes, fmt: str = PICKLE) -> Tuple[tuple, dict]:
    v = deserialize(data, fmt)
    if fmt == JSON:
        if not isinstance(v, dict):
            raise exc.DeserializationError('JSON arguments must be an object {"args": [...], "kwargs": {...}}')
        return tuple(v.get("args") or ()), dict(v.get("kwargs") or {})
    args, kwargs = v
    return tuple(args), dict(kwargs)


def b64e(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode("ascii")


def b64d(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else base64.b64decode(s)
