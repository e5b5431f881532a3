"""``Volume``: a file system of a workspace that containers mount, as Modal's ``modal.Volume``.

A container sees the volume as it was when it mounted it; what it writes there reaches the
others once committed (``vol.commit()``, in the background every few seconds, and when the
container stops) and they ``vol.reload()``. Last write wins per file. From outside a container,
``listdir``, ``read_file``, ``batch_upload``, ``remove_file`` and ``copy_files`` change or read
the newest version directly.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import exception as exc
from ._kv import _Ephemeral, _KVObject, _Manager, check_object_name, parse_time
from .functions import add_aio, aio

# The worker's control socket inside a container that mounts volumes.
_CTL_SOCKET = "/.gust/vol/ctl.sock"
_CHUNK = 1 << 20


class FileEntryType(enum.IntEnum):
    """Type of a file entry listed from a Volume (Modal's ``modal.volume.FileEntryType``)."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


_TYPES = {"file": FileEntryType.FILE, "directory": FileEntryType.DIRECTORY, "symlink": FileEntryType.SYMLINK}


@dataclass(frozen=True)
class FileEntry:
    """A file or directory entry listed from a Volume (Modal's ``modal.volume.FileEntry``)."""

    path: str
    type: FileEntryType
    mtime: int
    size: int


@dataclass
class VolumeInfo:
    """What ``Volume.info()`` returns."""

    name: Optional[str]
    created_at: Optional[_dt.datetime]
    created_by: Optional[str]


def _ctl(method: str, path: str, query: str = "") -> dict:
    """Ask the worker through the container's control socket; raise its error."""
    import http.client

    class _Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(None)
            s.connect(_CTL_SOCKET)
            self.sock = s

    conn = _Conn("localhost", timeout=None)
    try:
        conn.request(method, path + (("?" + query) if query else ""))
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status >= 300:
        from ._http import error_from_body
        raise error_from_body(resp.status, body)
    return json.loads(body) if body else {}


def _mounts() -> List[dict]:
    """This container's volume mounts, [] outside a container that has any."""
    if not os.path.exists(_CTL_SOCKET):
        return []
    try:
        return _ctl("GET", "/mounts").get("mounts") or []
    except (OSError, exc.Error):
        return []


def _open_files_under(path: str) -> str:
    """A note naming an open file (or a working directory) under path, as Modal's error has."""
    prefix = path.rstrip("/") + "/"
    me = os.getpid()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return ""
    for pid in pids:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == path or cwd.startswith(prefix):
                return f"cwd '{cwd}' of pid {pid} is inside the volume"
            for fd in os.listdir(f"/proc/{pid}/fd"):
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
                if t.startswith(prefix):
                    who = "this process" if int(pid) == me else f"pid {pid}"
                    return f"path {t} is open by {who}"
        except OSError:
            continue
    return ""


class Volume(_KVObject):
    """A writeable volume that functions and sandboxes mount (Modal's ``modal.Volume``)::

        vol = gust.Volume.from_name("my-volume", create_if_missing=True)

        @app.function(volumes={"/data": vol})
        def f():
            Path("/data/out.txt").write_text("hello")
            vol.commit()
    """

    _kind = "Volume"
    _route = "volumes"
    _id_field = "volume_id"

    objects = None  # set below: Volume.objects

    def _mount_options(self) -> Tuple[bool, Optional[str]]:
        return getattr(self, "_read_only", False), getattr(self, "_sub_path", None)

    @classmethod
    def from_name(cls, name: str, *, environment_name: Optional[str] = None, create_if_missing: bool = False,
                  version: Optional[int] = None, client: Any = None) -> "Volume":
        """Reference a named Volume, optionally creating it. Lazy: the server is asked on first use."""
        check_object_name(name, cls._kind)
        if version is not None and version not in (1, 2):
            raise exc.InvalidError(f"VolumeFS version must be either 1 or 2, got {version!r}")

        def load(http: Any) -> dict:
            return http.json("POST", "/v1/volumes/lookup", json={"name": name, "create_if_missing": bool(create_if_missing)})

        return cls._new(load, f"Volume.from_name({name!r})", client, name)

    @classmethod
    def ephemeral(cls, *, client: Any = None, environment_name: Optional[str] = None, version: Optional[int] = None,
                  _heartbeat_sleep: float = 300.0) -> _Ephemeral:
        """A Volume that exists for the duration of the ``with`` (or ``async with``) block."""
        return _Ephemeral(cls, client, _heartbeat_sleep)

    @staticmethod
    def rename(old_name: str, new_name: str, *, client: Any = None, environment_name: Optional[str] = None) -> None:
        """Give a named Volume a new name."""
        check_object_name(new_name, "Volume")
        vol = Volume.from_name(old_name).hydrate(client)
        vol._http().json("PUT", vol._path("/name"), json={"name": new_name})

    def with_mount_options(self, *, read_only: bool = False, sub_path: Optional[str] = None) -> "Volume":
        """The same Volume, mounted read-only and/or with only ``sub_path`` of it shown."""
        if not isinstance(read_only, bool):
            raise exc.InvalidError(f"read_only must be a bool, got {read_only!r}")
        if sub_path is not None:
            if not isinstance(sub_path, str):
                raise exc.InvalidError(f"sub_path must be a string, got {sub_path!r}")
            if ".." in PurePosixPath(sub_path).parts:
                raise exc.InvalidError(f"sub_path {sub_path!r} may not climb out of the volume with '..'")
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._read_only, clone._sub_path = read_only, sub_path
        clone._rep = f"{self._rep}.with_mount_options(read_only={read_only!r}, sub_path={sub_path!r})"
        return clone

    def read_only(self) -> "Volume":
        """The same Volume, mounted read-only."""
        return self.with_mount_options(read_only=True, sub_path=getattr(self, "_sub_path", None))

    def info(self) -> VolumeInfo:  # type: ignore[override]
        """The Volume's name, creation time and creator."""
        d = self.hydrate()._data or {}
        return VolumeInfo(name=d.get("name") or None, created_at=parse_time(d.get("created_at")),
                          created_by=d.get("created_by") or None)

    def _mounted(self) -> bool:
        oid = self.object_id
        return any(m.get("volume_id") == oid for m in _mounts())

    # Inside a container.

    @aio
    def commit(self) -> None:
        """Make what this container wrote to the Volume visible to others (and durable). Outside a
        container that mounts it, there is nothing to commit: other methods change the Volume at once."""
        if self._mounted():
            _ctl("POST", "/commit", "volume_id=" + self.object_id)

    @aio
    def reload(self) -> None:
        """Show the Volume's newest committed version in this container (committing what it wrote
        first). Refused while files under the mount are open."""
        mounts = [m for m in _mounts() if m.get("volume_id") == self.object_id]
        if not mounts:
            raise RuntimeError("Volume.reload() can only be called from within a running container that mounts the volume")
        try:
            _ctl("POST", "/reload", "volume_id=" + self.object_id)
        except exc.ConflictError:
            message = "there are open files preventing the operation"
            note = _open_files_under(mounts[0].get("path") or "")
            raise RuntimeError(message + (f": {note}" if note else "")) from None
        except exc.Error as e:
            raise RuntimeError(str(e)) from None

    # From anywhere.

    def _entries(self, path: str, recursive: bool) -> List[FileEntry]:
        if not isinstance(path, str):
            raise exc.InvalidError(f"path must be a string, got {path!r}")
        try:
            data = self._http().json("GET", self._path("/entries"), query={"path": path, "recursive": "1" if recursive else "0"})
        except exc.NotFoundError as e:
            if "No such file" in str(e):
                raise FileNotFoundError(str(e)) from None
            raise
        return [FileEntry(path=e["path"], type=_TYPES.get(e["type"], FileEntryType.UNSPECIFIED), mtime=int(e.get("mtime") or 0),
                          size=int(e.get("size") or 0)) for e in data.get("entries") or ()]

    def iterdir(self, path: str = "/", *, recursive: bool = True) -> Iterator[FileEntry]:
        """The entries under ``path`` (all below it by default)."""
        yield from self._entries(path, recursive)

    @aio
    def listdir(self, path: str = "/", *, recursive: bool = False) -> List[FileEntry]:
        """The entries of directory ``path`` (or all below it with ``recursive=True``)."""
        return self._entries(path, recursive)

    def read_file(self, path: str) -> Iterator[bytes]:
        """The bytes of file ``path``, in chunks::

            for chunk in vol.read_file("data.bin"):
                out.write(chunk)
        """
        if not isinstance(path, str):
            raise exc.InvalidError(f"path must be a string, got {path!r}")
        client = self._http()
        full, _, headers = client._prepare(self._path("/content"), {"path": path}, None, None, None, True)
        conn, resp = client._send("GET", full, None, headers, None)
        if resp.status >= 300:
            body = resp.read()
            conn.close()
            from ._http import error_from_body
            err = error_from_body(resp.status, body)
            if isinstance(err, exc.NotFoundError) and "No such file" in str(err):
                raise FileNotFoundError(str(err))
            raise err

        def chunks() -> Iterator[bytes]:
            done = False
            try:
                while True:
                    b = resp.read(_CHUNK)
                    if not b:
                        done = True
                        return
                    yield b
            finally:
                if done:
                    client._release(conn)
                else:
                    conn.close()

        return chunks()

    def read_file_into_fileobj(self, path: str, fileobj: IO[bytes]) -> int:
        """Write file ``path`` into ``fileobj``; return the number of bytes."""
        n = 0
        for b in self.read_file(path):
            fileobj.write(b)
            n += len(b)
        return n

    @aio
    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory (with everything in it, given ``recursive=True``)."""
        if not isinstance(path, str):
            raise exc.InvalidError(f"path must be a string, got {path!r}")
        try:
            self._http().json("POST", self._path("/remove"), json={"path": path, "recursive": bool(recursive)})
        except exc.NotFoundError as e:
            if "No such file" in str(e):
                raise FileNotFoundError(str(e)) from None
            raise

    @aio
    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copy files within the Volume, as ``cp`` does: into ``dst_path`` when it is a directory."""
        if isinstance(src_paths, str) or not all(isinstance(s, str) for s in src_paths):
            raise exc.InvalidError(f"src_paths must be a list of strings, got {src_paths!r}")
        if not isinstance(dst_path, str):
            raise exc.InvalidError(f"dst_path must be a string, got {dst_path!r}")
        try:
            self._http().json("POST", self._path("/copy"),
                              json={"src_paths": list(src_paths), "dst_path": dst_path, "recursive": bool(recursive)})
        except exc.NotFoundError as e:
            if "No such file" in str(e):
                raise FileNotFoundError(str(e)) from None
            raise

    def batch_upload(self, force: bool = False) -> "VolumeUploadContextManager":
        """Upload files in one commit::

            with vol.batch_upload() as batch:
                batch.put_file("local.txt", "/remote.txt")
                batch.put_directory("data/", "/data")
                batch.put_file(io.BytesIO(b"..."), "/bytes.bin")

        An existing file raises FileExistsError unless ``force=True``."""
        return VolumeUploadContextManager(self, force)

    def _to_mount(self, path: str) -> dict:
        ro, sub = self._mount_options()
        out: Dict[str, Any] = {"path": path, "volume_id": self.object_id}
        if ro:
            out["read_only"] = True
        if sub:
            out["sub_path"] = sub
        return out


class _VolumeManager(_Manager):
    """``Volume.objects``: manage named Volumes."""

    def create(self, name: str, *, allow_existing: bool = False, environment_name: Optional[str] = None,
               version: Optional[int] = None, client: Any = None) -> None:
        if version is not None and version not in (1, 2):
            raise exc.InvalidError(f"VolumeFS version must be either 1 or 2, got {version!r}")
        super().create(name, allow_existing=allow_existing, environment_name=environment_name, client=client)


class _VolumeObjects:
    def __get__(self, obj: Any, owner: type) -> _VolumeManager:
        return _VolumeManager(owner)


Volume.objects = _VolumeObjects()  # type: ignore[assignment]


class VolumeUploadContextManager:
    """What ``Volume.batch_upload()`` returns: files are sent, then committed at once, on exit."""

    def __init__(self, volume: Volume, force: bool):
        self._volume, self._force = volume, force
        self._files: List[Tuple[Callable[[], BinaryIO], str, int]] = []

    def __enter__(self) -> "VolumeUploadContextManager":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self._upload()

    async def __aenter__(self) -> "VolumeUploadContextManager":
        return self

    async def __aexit__(self, exc_type: Any, *a: Any) -> None:
        if exc_type is None:
            import asyncio
            await asyncio.to_thread(self._upload)

    def put_file(self, local_file: Union[Path, str, BinaryIO], remote_path: Union[PurePosixPath, str],
                 mode: Optional[int] = None) -> None:
        """Upload a local file (a path or a binary file object) to ``remote_path``."""
        remote = str(remote_path)
        if remote.endswith("/"):
            raise exc.InvalidError(f"remote_path {remote!r} must be a file path, not end with '/'")
        if isinstance(local_file, (str, Path)):
            p = Path(local_file)
            if not p.is_file():
                raise FileNotFoundError(f"No such file: '{p}'")
            m = mode if mode is not None else stat.S_IMODE(p.stat().st_mode)
            self._files.append((lambda p=p: open(p, "rb"), remote, m))
        elif hasattr(local_file, "read"):
            data = local_file.read()
            if isinstance(data, str):
                data = data.encode()
            import io
            self._files.append((lambda d=data: io.BytesIO(d), remote, mode if mode is not None else 0o644))
        else:
            raise exc.InvalidError(f"local_file must be a path or a binary file object, got {local_file!r}")

    def put_directory(self, local_path: Union[Path, str], remote_path: Union[PurePosixPath, str],
                      recursive: bool = True) -> None:
        """Upload the files of a local directory (and below it, unless ``recursive=False``) under ``remote_path``."""
        root = Path(local_path)
        if not root.is_dir():
            raise FileNotFoundError(f"No such directory: '{root}'")
        files = sorted(root.rglob("*") if recursive else root.glob("*"))
        for f in files:
            if f.is_file():
                self.put_file(f, str(PurePosixPath(str(remote_path)) / f.relative_to(root).as_posix()))

    def _upload(self) -> None:
        vol = self._volume
        client = vol._http()
        changes = []
        for opener, remote, mode in self._files:
            with opener() as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(0)
                blob = _upload_blob(client, vol._path("/blobs"), f, size)
            changes.append({"op": "put", "entry": {"path": remote, "type": "file", "blob": blob, "mode": mode & 0o7777}})
        if not changes:
            return
        try:
            client.json("POST", vol._path("/commit"), json={"changes": changes, "force": self._force})
        except exc.ConflictError as e:
            raise FileExistsError(str(e)) from None


def _upload_blob(client: Any, path: str, f: BinaryIO, size: int) -> str:
    """POST a file's bytes on a fresh connection (a pooled one that turned out stale would be
    retried with the file already read) and return the blob's SHA-256."""
    import http.client
    full, _, headers = client._prepare(path, None, None, None, "application/octet-stream", True)
    headers["Content-Length"] = str(size)
    conn = client._new_conn()
    try:
        conn.connect()
        conn.sock.settimeout(None)
        conn.request("POST", full, body=f, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise exc.ConnectionError(f"uploading to the gust server at {client.url}: {e}") from None
    client._release(conn)
    if resp.status >= 300:
        from ._http import error_from_body
        raise error_from_body(resp.status, body)
    return json.loads(body)["blob"]


def volume_mounts(volumes: Any, where: str) -> List[Tuple[str, Volume]]:
    """Check ``volumes={path: Volume}`` as Modal does; return the (path, volume) pairs."""
    if volumes is None:
        return []
    if not isinstance(volumes, dict):
        raise exc.InvalidError(f"{where}: volumes must be a dict[str, Volume] where the keys are paths")
    out: List[Tuple[str, Volume]] = []
    seen: Dict[int, str] = {}
    for path, vol in volumes.items():
        if not isinstance(path, str):
            raise exc.InvalidError(f"{where}: volume mount paths must be strings, got {path!r}")
        p = PurePosixPath(path).as_posix()
        if not p.startswith("/"):
            raise exc.InvalidError(f"Volume {p} must be a canonical, absolute path.")
        if p == "/":
            raise exc.InvalidError(f"Volume {p} cannot be mounted into root directory.")
        if p in ("/root", "/tmp"):
            raise exc.InvalidError(f"Volume {p} cannot be mounted at '{p}'.")
        if not isinstance(vol, Volume):
            raise exc.InvalidError(f"Object of type {type(vol)} mounted at '{p}' is not useable as a volume.")
        key = vol._name or id(vol)
        if key in seen:
            raise exc.InvalidError(f"['{seen[key]}', '{p}'] can't share the same volume.")
        seen[key] = p
        out.append((p, vol))
    return out


add_aio(Volume, ["info", "read_file_into_fileobj", "rename"], gen=["iterdir", "read_file"])
add_aio(_VolumeManager, ["create"])
