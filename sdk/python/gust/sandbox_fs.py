"""``Sandbox.filesystem``: read, write, list and remove files in a sandbox, as in
``modal.sandbox_fs``. Paths are absolute paths inside the sandbox."""

from __future__ import annotations

import enum
import os
import posixpath
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, List, Optional, Union

from . import exception as exc
from .functions import add_aio

if TYPE_CHECKING:
    from .sandbox import Sandbox

CHUNK = 16 * 1024 * 1024  # bytes moved per request (the API allows up to 64 MiB)


class FileType(str, enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    UNKNOWN = "unknown"


def _parse_time(s: Optional[str]) -> float:
    if not s:
        return 0.0
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        # Older Pythons take at most 6 fractional digits.
        head, _, rest = s.partition(".")
        frac = "".join(c for c in rest if c.isdigit())[:6]
        try:
            return datetime.fromisoformat(f"{head}.{frac or '0'}+00:00").timestamp()
        except ValueError:
            return 0.0


@dataclass(frozen=True)
class FileInfo:
    """One entry of ``list_files`` or the answer of ``stat``."""

    name: str
    path: str
    type: FileType
    size: int
    mode: int
    permissions: str
    owner: Optional[str]
    group: Optional[str]
    modified_time: float
    symlink_target: Optional[str] = None

    @property
    def mtime(self) -> float:
        """Modification time, seconds since the epoch (same as ``modified_time``)."""
        return self.modified_time

    @property
    def is_dir(self) -> bool:
        return self.type == FileType.DIRECTORY

    @classmethod
    def _from_api(cls, st: dict) -> "FileInfo":
        try:
            ftype = FileType(st.get("type"))
        except ValueError:
            ftype = FileType.UNKNOWN
        mode = int(st.get("mode") or 0)
        return cls(name=st.get("name", ""), path=st.get("path", ""), type=ftype, size=int(st.get("size") or 0),
                   mode=mode, permissions=format(mode & 0o7777, "04o"), owner=None, group=None,
                   modified_time=_parse_time(st.get("mtime")))


def _check_abs(path: str, op: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{op}: path must be a string, not {type(path).__name__}")
    path = os.fspath(path)
    if not path.startswith("/"):
        raise exc.InvalidError(f"{op}: path must be absolute inside the sandbox, got {path!r}")
    return path


class _Files:
    """File operations of one sandbox, with API errors turned into filesystem errors."""

    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def _type_of(self, path: str) -> Optional[str]:
        try:
            return self._sb._call("GET", "/files/stat", query={"path": path}).get("type")
        except exc.Error:
            return None

    def _translate(self, e: exc.Error, path: str, op: str) -> exc.Error:
        if isinstance(e, (exc.SandboxTerminatedError, exc.SandboxFilesystemError)) or e._kind is None:
            return e
        msg = str(e)
        if e._kind == "not_found":
            return exc.SandboxFilesystemNotFoundError(msg)
        if e._kind == "conflict":
            return exc.SandboxFilesystemPathAlreadyExistsError(msg)
        if e._kind == "too_large":
            return exc.SandboxFilesystemFileTooLargeError(msg)
        if e._kind == "invalid":
            t = self._type_of(path)
            if t == "directory" and op in ("read", "write"):
                return exc.SandboxFilesystemIsADirectoryError(msg)
            if t == "directory" and op == "remove":
                return exc.SandboxFilesystemDirectoryNotEmptyError(msg)
            if t is not None and t != "directory" and op in ("list", "mkdir"):
                return exc.SandboxFilesystemNotADirectoryError(msg)
        return exc.SandboxFilesystemError(msg)

    def _do(self, op: str, path: str, method: str, sub: str, **kw):
        try:
            return self._sb._call(method, sub, **kw)
        except exc.Error as e:
            raise self._translate(e, path, op) from None

    def read(self, path: str, offset: int = 0, length: int = 0) -> bytes:
        q = {"path": path, "offset": offset or None, "length": length or None}
        return self._do("read", path, "GET", "/files", query=q, raw=True)

    def read_all(self, path: str) -> bytes:
        parts, off = [], 0
        while True:
            chunk = self.read(path, off, CHUNK)
            parts.append(chunk)
            off += len(chunk)
            if len(chunk) < CHUNK:
                return b"".join(parts)

    def write(self, path: str, data: bytes, append: bool = False) -> None:
        q = {"path": path, "append": "1" if append else None}
        self._do("write", path, "PUT", "/files", query=q, body=bytes(data), content_type="application/octet-stream")

    def write_all(self, path: str, data: bytes, make_parents: bool = False) -> None:
        """Write data in place of the file's content, in parts of CHUNK bytes."""
        view = memoryview(data)
        try:
            self.write(path, view[:CHUNK])
        except exc.SandboxFilesystemNotFoundError:
            if not make_parents:
                raise
            self.mkdir(posixpath.dirname(path) or "/", True)
            self.write(path, view[:CHUNK])
        for off in range(CHUNK, len(view), CHUNK):
            self.write(path, view[off:off + CHUNK], append=True)

    def stat(self, path: str) -> dict:
        return self._do("stat", path, "GET", "/files/stat", query={"path": path})

    def list(self, path: str) -> List[dict]:
        return self._do("list", path, "GET", "/files/list", query={"path": path}).get("entries") or []

    def mkdir(self, path: str, parents: bool) -> None:
        self._do("mkdir", path, "POST", "/files/mkdir", json={"path": path, "parents": bool(parents)})

    def remove(self, path: str, recursive: bool) -> None:
        self._do("remove", path, "DELETE", "/files", query={"path": path, "recursive": "1" if recursive else None})


class SandboxFilesystem:
    """Filesystem of a sandbox: ``sb.filesystem.read_text("/etc/hostname")``."""

    def __init__(self, sandbox: "Sandbox"):
        self._files = _Files(sandbox)

    def read_bytes(self, remote_path: str) -> bytes:
        """The content of a file."""
        return self._files.read_all(_check_abs(remote_path, "read_bytes"))

    def read_text(self, remote_path: str) -> str:
        """The content of a file, decoded as UTF-8."""
        return self._files.read_all(_check_abs(remote_path, "read_text")).decode("utf-8")

    def write_bytes(self, data: Union[bytes, bytearray, memoryview], remote_path: str) -> None:
        """Write data to a file (replacing it), creating parent directories as needed."""
        if isinstance(data, str) and isinstance(remote_path, (bytes, bytearray, memoryview)):
            data, remote_path = remote_path, data  # called as write_bytes(path, data)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes-like")
        self._files.write_all(_check_abs(remote_path, "write_bytes"), bytes(data), make_parents=True)

    def write_text(self, data: str, remote_path: str) -> None:
        """Write text (UTF-8) to a file (replacing it), creating parent directories as needed."""
        if (isinstance(data, str) and isinstance(remote_path, str) and not remote_path.startswith("/")
                and data.startswith("/") and "\n" not in data):
            data, remote_path = remote_path, data  # called as write_text(path, data)
        if not isinstance(data, str):
            raise TypeError("data must be str")
        self._files.write_all(_check_abs(remote_path, "write_text"), data.encode("utf-8"), make_parents=True)

    def copy_from_local(self, local_path: Union[str, os.PathLike], remote_path: str) -> None:
        """Copy a local file into the sandbox, creating parent directories as needed."""
        remote_path = _check_abs(remote_path, "copy_from_local")
        with open(local_path, "rb") as f:
            first = True
            while True:
                chunk = f.read(CHUNK)
                if first:
                    self._files.write_all(remote_path, chunk, make_parents=True)
                    first = False
                elif chunk:
                    self._files.write(remote_path, chunk, append=True)
                if len(chunk) < CHUNK:
                    return

    def copy_to_local(self, remote_path: str, local_path: Union[str, os.PathLike]) -> None:
        """Copy a file from the sandbox to a local path, creating local parent directories."""
        remote_path = _check_abs(remote_path, "copy_to_local")
        local_dir = os.path.dirname(os.path.abspath(local_path))
        os.makedirs(local_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local_dir, prefix=".gust-copy-")
        try:
            with os.fdopen(fd, "wb") as f:
                off = 0
                while True:
                    chunk = self._files.read(remote_path, off, CHUNK)
                    f.write(chunk)
                    off += len(chunk)
                    if len(chunk) < CHUNK:
                        break
            os.replace(tmp, local_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def list_files(self, remote_path: str) -> List[FileInfo]:
        """The entries of a directory."""
        return [FileInfo._from_api(e) for e in self._files.list(_check_abs(remote_path, "list_files"))]

    def make_directory(self, remote_path: str, *, create_parents: bool = True) -> None:
        """Create a directory (and, by default, its missing parents; then it may exist already)."""
        self._files.mkdir(_check_abs(remote_path, "make_directory"), create_parents)

    def remove(self, remote_path: str, *, recursive: bool = False) -> None:
        """Remove a file or an empty directory; ``recursive=True`` removes a directory tree."""
        self._files.remove(_check_abs(remote_path, "remove"), recursive)

    def stat(self, remote_path: str) -> FileInfo:
        """Metadata of a file, directory or symlink (not followed)."""
        return FileInfo._from_api(self._files.stat(_check_abs(remote_path, "stat")))


add_aio(SandboxFilesystem, ["read_bytes", "read_text", "write_bytes", "write_text", "copy_from_local", "copy_to_local",
                            "list_files", "make_directory", "remove", "stat"])
