"""``Queue``: a distributed FIFO queue of a workspace, as Modal's ``modal.Queue``.

Values are pickled here; the server keeps bytes. A blocked ``get`` is a long poll: the server
answers as soon as a ``put`` into that partition commits. Limits, as Modal's: 100,000 partitions
per Queue, 5,000 items per partition, 1 MiB per item; partition keys of 1 to 64 bytes; each
partition is cleared 24 hours (or ``partition_ttl`` seconds) after its last put.
"""

from __future__ import annotations

import queue as _queue  # the standard library's, for queue.Empty and queue.Full
import time
import warnings
from typing import Any, Iterator, List, Optional

from . import exception as exc
from ._kv import _KVObject, _ObjectsProperty, b64d, b64e, check_request_size
from ._serialization import deserialize, serialize
from .functions import aio, aio_gen

_MAX_WAIT = 50.0  # seconds one request waits at most; longer waits ask again (as Modal's client does)
_HTTP_MARGIN = 30.0  # beyond the wait, for the answer to arrive


def _partition_key(partition: Optional[str]) -> str:
    if partition is None:
        return ""
    if not isinstance(partition, str):
        raise exc.InvalidError(f"Queue partition key must be a string, got {type(partition).__name__}")
    n = len(partition.encode("utf-8"))
    if n == 0 or n > 64:
        raise exc.InvalidError("Queue partition key must be between 1 and 64 characters.")
    return partition


class Queue(_KVObject):
    """Distributed, FIFO queue for data flow in gust apps (Modal's ``modal.Queue``)::

        with gust.Queue.ephemeral() as q:
            q.put("some value")
            assert q.get() == "some value"
    """

    _kind = "Queue"
    _route = "queues"
    _id_field = "queue_id"

    objects = _ObjectsProperty()

    @staticmethod
    def validate_partition_key(partition: Optional[str]) -> bytes:
        return _partition_key(partition).encode("utf-8")

    def _take(self, partition: str, n: int, wait: float) -> List[Any]:
        resp = self._http().json("POST", self._path("/get"), json={"partition": partition, "n_values": n, "timeout": wait},
                                 timeout=wait + _HTTP_MARGIN)
        return [deserialize(b64d(v)) for v in resp.get("values") or ()]

    def _get(self, block: bool, timeout: Optional[float], partition: Optional[str], n: int) -> List[Any]:
        part = _partition_key(partition)
        if not block:
            if timeout is not None:
                warnings.warn("Timeout is ignored for non-blocking get.")
            return self._take(part, n, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _MAX_WAIT if deadline is None else max(0.0, min(_MAX_WAIT, deadline - time.monotonic()))
            values = self._take(part, n, wait)
            if values:
                return values
            if deadline is not None and time.monotonic() >= deadline:
                raise _queue.Empty()

    @aio
    def get(self, block: bool = True, timeout: Optional[float] = None, *, partition: Optional[str] = None) -> Optional[Any]:
        """Remove and return the next object. Blocking (the default), wait for one, up to
        ``timeout`` seconds, then raise ``queue.Empty``; not blocking, return None when empty."""
        values = self._get(block, timeout, partition, 1)
        return values[0] if values else None

    @aio
    def get_many(self, n_values: int, block: bool = True, timeout: Optional[float] = None, *,
                 partition: Optional[str] = None) -> List[Any]:
        """Remove and return up to ``n_values`` objects; blocking, wait until there is at least one."""
        return self._get(block, timeout, partition, n_values)

    @aio
    def put(self, v: Any, block: bool = True, timeout: Optional[float] = None, *, partition: Optional[str] = None,
            partition_ttl: int = 24 * 3600) -> None:
        """Add an object to the end. A full partition (5,000 items): blocking, wait for room up to
        ``timeout``, then raise ``queue.Full``; not blocking, raise ``queue.Full`` at once."""
        self._put_many([v], block, timeout, partition, partition_ttl, "put")

    @aio
    def put_many(self, vs: List[Any], block: bool = True, timeout: Optional[float] = None, *,
                 partition: Optional[str] = None, partition_ttl: int = 24 * 3600) -> None:
        """Add several objects to the end, as ``put`` does."""
        self._put_many(list(vs), block, timeout, partition, partition_ttl, "put_many" if len(vs) > 1 else "put")

    def _put_many(self, vs: List[Any], block: bool, timeout: Optional[float], partition: Optional[str],
                  partition_ttl: int, method: str) -> None:
        part = _partition_key(partition)
        values = [b64e(serialize(v)) for v in vs]
        check_request_size(values, f"Queue.{method}")
        if not block and timeout is not None:
            warnings.warn("`timeout` argument is ignored for non-blocking put.")
        deadline = None if (timeout is None or not block) else time.monotonic() + timeout
        while True:
            if not block:
                wait = 0.0
            elif deadline is None:
                wait = _MAX_WAIT
            else:
                wait = max(0.0, min(_MAX_WAIT, deadline - time.monotonic()))
            try:
                self._http().request("POST", self._path("/put"),
                                     json={"values": values, "partition": part, "partition_ttl": partition_ttl, "timeout": wait},
                                     timeout=wait + _HTTP_MARGIN)
                return
            except exc.RequestSizeError as e:
                raise exc.RequestSizeError(f"Queue.{method} request is too large: {e}") from None
            except exc.ResourceExhaustedError as e:
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise _queue.Full(str(e)) from None

    @aio
    def clear(self, *, partition: Optional[str] = None, all: bool = False) -> None:
        """Empty one partition (the default one unless named), or every partition with ``all=True``."""
        if partition and all:
            raise exc.InvalidError("Partition must be null when requesting to clear all.")
        self._http().request("POST", self._path("/clear"), json={"partition": _partition_key(partition), "all": bool(all)})

    @aio
    def len(self, *, partition: Optional[str] = None, total: bool = False) -> int:
        """The number of objects in a partition, or in all of them with ``total=True``."""
        if partition and total:
            raise exc.InvalidError("Partition must be null when requesting total length.")
        resp = self._http().json("GET", self._path("/len"),
                                 query={"partition": _partition_key(partition), "total": "1" if total else "0"})
        return int(resp["len"])

    @aio_gen
    def iterate(self, *, partition: Optional[str] = None, item_poll_timeout: float = 0.0) -> Iterator[Any]:
        """Iterate through the items without taking them; wait up to ``item_poll_timeout``
        seconds for each next item before stopping."""
        part = _partition_key(partition)
        after = ""
        fetch_deadline = time.monotonic() + item_poll_timeout
        while True:
            wait = max(0.0, min(30.0, fetch_deadline - time.monotonic()))
            resp = self._http().json("GET", self._path("/items"),
                                     query={"partition": part, "after": after, "timeout": wait}, timeout=wait + _HTTP_MARGIN)
            items = resp.get("items") or []
            if items:
                for it in items:
                    yield deserialize(b64d(it.get("value")))
                    after = it["entry_id"]
                fetch_deadline = time.monotonic() + item_poll_timeout
            elif time.monotonic() >= fetch_deadline:
                return
