"""``Dict``: a distributed dictionary of a workspace, as Modal's ``modal.Dict``.

Keys and values are pickled here; the server keeps the bytes and never unpickles them, and it
compares keys by their pickled bytes (so, as Modal advises, use primitive keys). An entry
expires after 7 days without a read or a write.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Tuple

from . import exception as exc
from ._kv import _KVObject, _ObjectsProperty, b64d, b64e, b64url, check_request_size
from ._serialization import deserialize, serialize
from .functions import aio, aio_gen


class _NoDefault:
    def __repr__(self) -> str:
        return "..."


_NO_DEFAULT = _NoDefault()

_PAGE = 100  # entries per request of keys/values/items


class Dict(_KVObject):
    """Distributed dictionary for storage in gust apps (Modal's ``modal.Dict``)::

        d = gust.Dict.from_name("my-dict", create_if_missing=True)
        d["some key"] = "some value"
        assert d["some key"] == "some value"
    """

    _kind = "Dict"
    _route = "dicts"
    _id_field = "dict_id"

    objects = _ObjectsProperty()

    def _decode_value(self, data: bytes, key: Any = _NO_DEFAULT) -> Any:
        try:
            return deserialize(data)
        except exc.DeserializationError as e:
            for_key = "" if key is _NO_DEFAULT else f" for key {key!r}"
            raise exc.DeserializationError(f"Failed to deserialize value{for_key} from {self._identifier()}: {e}") from None

    def _decode_key(self, data: bytes) -> Any:
        try:
            return deserialize(data)
        except exc.DeserializationError as e:
            raise exc.DeserializationError(f"Failed to deserialize a key from {self._identifier()}: {e}") from None

    def _update(self, contents: Mapping, skip_if_exists: bool, method: str) -> bool:
        entries = [{"key": b64e(serialize(k)), "value": b64e(serialize(v))} for k, v in contents.items()]
        check_request_size([e["key"] for e in entries] + [e["value"] for e in entries], f"Dict.{method}")
        try:
            resp = self._http().json("POST", self._path("/entries"), json={"entries": entries, "skip_if_exists": skip_if_exists})
        except exc.RequestSizeError as e:
            raise exc.RequestSizeError(f"Dict.{method} request is too large: {e}") from None
        return bool(resp.get("created"))

    @aio
    def clear(self) -> None:
        """Remove all items from the Dict."""
        self._http().request("POST", self._path("/clear"))

    @aio
    def get(self, key: Any, default: Optional[Any] = None) -> Any:
        """The value of ``key``, or ``default`` if it is not there."""
        resp = self._http().json("GET", self._path("/entries/" + b64url(serialize(key))))
        if not resp.get("found"):
            return default
        return self._decode_value(b64d(resp.get("value")), key)

    @aio
    def contains(self, key: Any) -> bool:
        """Whether ``key`` is in the Dict."""
        resp = self._http().json("GET", self._path("/entries/" + b64url(serialize(key))), query={"value": "0"})
        return bool(resp.get("found"))

    @aio
    def len(self) -> int:
        """The number of entries (at most 100,000 are counted, as in Modal)."""
        return int(self._http().json("GET", self._path("/len"))["len"])

    def __getitem__(self, key: Any) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(f"{key} not in dict {self.object_id}")
        return value

    @aio
    def update(self, other: Optional[Mapping] = None, /, **kwargs: Any) -> None:
        """Add entries, as ``dict.update`` does."""
        contents: dict = {}
        if other:
            keys = other.keys() if hasattr(other, "keys") else None
            if keys is not None:
                contents.update({k: other[k] for k in keys})
            else:
                contents.update(other)
        contents.update(kwargs)
        self._update(contents, False, "update")

    @aio
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key`` to ``value``. Returns True if it was written, False if ``skip_if_exists``
        was set and the key already existed."""
        return self._update({key: value}, skip_if_exists, "put")

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    @aio
    def pop(self, key: Any, default: Any = _NO_DEFAULT) -> Any:
        """Remove ``key`` and return its value; ``default`` (or KeyError) if it is not there."""
        resp = self._http().json("DELETE", self._path("/entries/" + b64url(serialize(key))))
        if not resp.get("found"):
            if default is not _NO_DEFAULT:
                return default
            raise KeyError(f"{key} not in dict {self.object_id}")
        return self._decode_value(b64d(resp.get("value")), key)

    def __delitem__(self, key: Any) -> Any:
        return self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    def _pages(self, values: bool) -> Iterator[dict]:
        after: Optional[str] = None
        while True:
            q = {"limit": _PAGE, "values": "1" if values else "0"}
            if after:
                q["after"] = after
            page = self._http().json("GET", self._path("/entries"), query=q)
            yield from page.get("entries") or ()
            after = page.get("next")
            if not after:
                return

    @aio_gen
    def keys(self) -> Iterator[Any]:
        """An iterator over the keys (unordered, unlike a Python dict)."""
        for e in self._pages(False):
            yield self._decode_key(b64d(e["key"]))

    @aio_gen
    def values(self) -> Iterator[Any]:
        """An iterator over the values."""
        for e in self._pages(True):
            try:
                key = self._decode_key(b64d(e["key"]))
            except exc.DeserializationError:
                key = _NO_DEFAULT
            yield self._decode_value(b64d(e.get("value")), key)

    @aio_gen
    def items(self) -> Iterator[Tuple[Any, Any]]:
        """An iterator over the (key, value) pairs."""
        for e in self._pages(True):
            key = self._decode_key(b64d(e["key"]))
            yield key, self._decode_value(b64d(e.get("value")), key)
