"""What ``Dict`` and ``Queue`` share: lookup by name or ID (lazy, as in Modal), ephemeral objects
kept alive by a heartbeat, and the ``objects`` manager (``create``, ``list``, ``delete``)."""

from __future__ import annotations

import base64
import datetime as _dt
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Union

from . import exception as exc

# Modal's client beats every 300 s; the server drops an ephemeral object 15 minutes after the last.
_HEARTBEAT_SLEEP = 300.0

_NAME_RE = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")
_APP_ID_RE = re.compile(r"^ap-[a-zA-Z0-9]{22}$")


def check_object_name(name: Any, object_type: str) -> None:
    """Modal's rule for the names of Dicts, Queues and Volumes."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or _APP_ID_RE.match(name):
        raise exc.InvalidError(
            f"Invalid {object_type} name: '{name}'."
            "\n\nNames may contain only alphanumeric characters, dashes, periods, and underscores,"
            " must be shorter than 64 characters, and cannot conflict with App ID strings.")


# The server's limit on the body of a Dict update or a Queue put (Modal's message limit). A body
# over it is refused here: the server would answer 413 before reading it all, and the client
# would see only a broken pipe.
MAX_REQUEST = 100 << 20


def check_request_size(encoded: List[str], what: str) -> None:
    if sum(len(s) + 16 for s in encoded) + 256 > MAX_REQUEST:
        raise exc.RequestSizeError(f"{what} request is too large: the pickled data is over the 100 MiB limit of a request "
                                   "(base64-encoded)")


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: Optional[str]) -> bytes:
    return base64.b64decode(s) if s else b""


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def parse_time(s: Optional[str]) -> Optional[_dt.datetime]:
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    # Python before 3.11 takes at most 6 digits of fraction.
    m = re.match(r"^(.*\.\d{6})\d*(.*)$", s)
    if m:
        s = m.group(1) + m.group(2)
    try:
        return _dt.datetime.fromisoformat(s).astimezone()
    except ValueError:
        return None


@dataclass
class ObjectInfo:
    """What ``Dict.info()`` and ``Queue.info()`` return (Modal's ``DictInfo`` / ``QueueInfo``)."""

    name: Optional[str]
    created_at: Optional[_dt.datetime]
    created_by: Optional[str]


class _KVObject:
    """A Dict or a Queue: hydrated (its record fetched) on first use."""

    _kind = ""  # "Dict" | "Queue"
    _route = ""  # "dicts" | "queues"
    _id_field = ""  # "dict_id" | "queue_id"

    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(
            f"`{type(self).__name__}(...)` constructor is not allowed. Please use "
            f"`{type(self).__name__}.from_name` or `{type(self).__name__}.ephemeral` instead")

    @classmethod
    def _new(cls, loader: Optional[Callable[[Any], dict]], rep: str, client: Any = None, name: Optional[str] = None):
        self = object.__new__(cls)
        self._loader = loader
        self._rep = rep
        self._client = client
        self._name = name
        self._data: Optional[dict] = None
        self._lock = threading.Lock()
        return self

    @classmethod
    def _hydrated(cls, data: dict, client: Any, rep: Optional[str] = None):
        self = cls._new(None, rep or f"{cls.__name__}.from_id({data[cls._id_field]!r})", client, data.get("name") or None)
        self._data = data
        return self

    def _http(self):
        if self._client is None:
            from ._http import get_client
            self._client = get_client()
        return self._client

    def hydrate(self, client: Any = None):
        """Fetch the object's record now (it is otherwise fetched on first use)."""
        if client is not None:
            self._client = client
        if self._data is None:
            with self._lock:
                if self._data is None:
                    assert self._loader is not None
                    self._data = self._loader(self._http())
                    self._name = self._data.get("name") or self._name
        return self

    @property
    def object_id(self) -> str:
        return self.hydrate()._data[self._id_field]  # type: ignore[index]

    @property
    def name(self) -> Optional[str]:
        return self._name

    def _path(self, suffix: str = "") -> str:
        return f"/v1/{self._route}/{self.object_id}{suffix}"

    def info(self) -> ObjectInfo:
        """The object's name, creation time and creator."""
        d = self.hydrate()._data or {}
        return ObjectInfo(name=d.get("name") or None, created_at=parse_time(d.get("created_at")),
                          created_by=d.get("created_by") or None)

    def _identifier(self) -> str:
        return f"{self._kind} '{self._name}'" if self._name else f"ephemeral {self._kind} {self.object_id}"

    def __repr__(self) -> str:
        return self._rep

    # Constructors.

    @classmethod
    def from_name(cls, name: str, *, environment_name: Optional[str] = None, create_if_missing: bool = False,
                  client: Any = None):
        """Reference a named object, optionally creating it. Lazy: the server is asked on first use."""
        check_object_name(name, cls._kind)

        def load(http: Any) -> dict:
            return http.json("POST", f"/v1/{cls._route}/lookup", json={"name": name, "create_if_missing": bool(create_if_missing)})

        return cls._new(load, f"{cls.__name__}.from_name({name!r})", client, name)

    @classmethod
    def from_id(cls, object_id: str, client: Any = None):
        """Reference an object by its ID (``.object_id``), e.g. an ephemeral one handed to a function."""
        if not isinstance(object_id, str) or not object_id:
            raise exc.InvalidError(f"{cls.__name__}.from_id needs an object ID, got {object_id!r}")

        def load(http: Any) -> dict:
            return http.json("GET", f"/v1/{cls._route}/{object_id}")

        return cls._new(load, f"{cls.__name__}.from_id({object_id!r})", client)

    @classmethod
    def delete(cls, name: str, *, allow_missing: bool = False, environment_name: Optional[str] = None,
               client: Any = None) -> None:
        """Delete the named object: Modal 1.x's older spelling of ``objects.delete(name)``
        (``modal.Dict.delete("name")``, ``modal.Volume.delete("name")``)."""
        cls.objects.delete(name, allow_missing=allow_missing, environment_name=environment_name, client=client)

    @classmethod
    def ephemeral(cls, *, client: Any = None, environment_name: Optional[str] = None,
                  _heartbeat_sleep: float = _HEARTBEAT_SLEEP) -> "_Ephemeral":
        """An anonymous object that exists for the duration of the ``with`` (or ``async with``) block."""
        return _Ephemeral(cls, client, _heartbeat_sleep)


class _Ephemeral:
    """The context manager of ``ephemeral()``: makes the object, beats while the block runs, and
    deletes it at the end."""

    def __init__(self, cls: Any, client: Any, sleep: float):
        self._cls, self._client, self._sleep = cls, client, sleep
        self._stop = threading.Event()
        self._path = ""

    def __enter__(self) -> Any:
        cls = self._cls
        if self._client is None:
            from ._http import get_client
            self._client = get_client()
        client = self._client
        data = client.json("POST", f"/v1/{cls._route}", json={"ephemeral": True})
        obj = cls._hydrated(data, client, f"{cls.__name__}.ephemeral()")
        self._path = f"/v1/{cls._route}/{data[cls._id_field]}"

        def beat() -> None:
            while not self._stop.wait(self._sleep):
                try:
                    client.request("POST", self._path + "/heartbeat")
                except exc.Error:
                    pass  # the next beat tries again; the server keeps it 15 minutes

        threading.Thread(target=beat, name=f"gust-{cls._route}-heartbeat", daemon=True).start()
        return obj

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        try:
            self._client.request("DELETE", self._path)
        except exc.Error:
            pass  # the server drops it once the heartbeats stop

    async def __aenter__(self) -> Any:
        import asyncio  # here, not at the top: every function container imports gust at start
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *a: Any) -> None:
        import asyncio
        await asyncio.to_thread(self.__exit__, *a)


class _Manager:
    """``Dict.objects`` / ``Queue.objects``: manage named objects."""

    def __init__(self, cls: type):
        self._cls = cls

    def create(self, name: str, *, allow_existing: bool = False, environment_name: Optional[str] = None,
               client: Any = None) -> None:
        """Create a named object; an existing name raises ``AlreadyExistsError`` unless ``allow_existing``."""
        check_object_name(name, self._cls._kind)
        if client is None:
            from ._http import get_client
            client = get_client()
        try:
            client.json("POST", f"/v1/{self._cls._route}", json={"name": name, "allow_existing": bool(allow_existing)})
        except exc.ConflictError as e:
            raise exc.AlreadyExistsError(str(e)) from None

    def list(self, *, max_objects: Optional[int] = None, created_before: Union[_dt.datetime, str, None] = None,
             environment_name: str = "", client: Any = None) -> List[Any]:
        """The named objects, newest first."""
        if max_objects is not None and max_objects < 0:
            raise exc.InvalidError("max_objects cannot be negative")
        if client is None:
            from ._http import get_client
            client = get_client()
        q: dict = {}
        if max_objects is not None:
            if max_objects == 0:
                return []
            q["limit"] = max_objects
        if created_before is not None:
            if isinstance(created_before, str):
                created_before = _dt.datetime.fromisoformat(created_before)
            if created_before.tzinfo is None:
                created_before = created_before.astimezone()
            q["created_before"] = created_before.astimezone(_dt.timezone.utc).isoformat()
        data = client.json("GET", f"/v1/{self._cls._route}", query=q)
        return [self._cls._hydrated(d, client, f"{self._cls.__name__}.from_name({d.get('name')!r})")
                for d in data[self._cls._route]]

    def delete(self, name: str, *, allow_missing: bool = False, environment_name: Optional[str] = None,
               client: Any = None) -> None:
        """Delete a named object and everything in it."""
        try:
            obj = self._cls.from_name(name, environment_name=environment_name).hydrate(client)
        except exc.NotFoundError:
            if not allow_missing:
                raise
            return
        obj._http().request("DELETE", obj._path())


class _ObjectsProperty:
    """A class-level property: ``Dict.objects``."""

    def __get__(self, obj: Any, owner: type) -> _Manager:
        return _Manager(owner)


from .functions import add_aio  # noqa: E402

add_aio(_Manager, ["create", "list", "delete"])
