"""FileIO: a file in a sandbox opened with ``Sandbox.open``, as in ``modal.file_io``.

"r" reads in ranges as needed; "w", "a" and "x" buffer writes and send them on ``flush()`` and
``close()`` (appending after the first); "+" modes hold the whole file in memory and write it
back on flush.
"""

from __future__ import annotations

import codecs
import io
from typing import TYPE_CHECKING, Generic, List, Optional, TypeVar, Union

from . import exception as exc
from .functions import add_aio

if TYPE_CHECKING:
    from .sandbox_fs import _Files

T = TypeVar("T", str, bytes)

READAHEAD = 1024 * 1024
WRITE_FLUSH_AT = 8 * 1024 * 1024


class FileIO(Generic[T]):
    """A file handle in a sandbox: read, readline, readlines, write, flush, seek, tell, close."""

    def __init__(self, files: "_Files", path: str, mode: str = "r"):
        self._validate_mode(mode)
        self._files = files
        self._path = path
        self._mode = mode
        self._pos = 0
        self._closed = True
        self._decoder = None if self._binary else codecs.getincrementaldecoder("utf-8")(errors="replace")
        # "r": read buffer (bytes starting at _rbuf_off) and the end of file once seen.
        self._rbuf = b""
        self._rbuf_off = 0
        self._eof_off: Optional[int] = None
        # "w"/"a"/"x": bytes not sent yet, and whether the file was already created.
        self._wbuf = bytearray()
        # "+": the whole file.
        self._mem: Optional[bytearray] = None
        self._dirty = False
        self._open()
        self._closed = False

    def _validate_mode(self, mode: str) -> None:
        if not isinstance(mode, str) or not any(c in mode for c in "rwax") or any(c not in "rwaxb+" for c in mode) \
                or len(set(mode)) != len(mode) or sum(c in mode for c in "rwax") != 1:
            raise ValueError(f"Invalid file mode: {mode}")
        self._binary = "b" in mode
        self._plus = "+" in mode
        self._readable = "r" in mode or self._plus
        self._writable = "r" not in mode or self._plus
        self._appending = "a" in mode

    def _exists(self) -> bool:
        try:
            st = self._files.stat(self._path)
        except exc.SandboxFilesystemNotFoundError:
            return False
        if st.get("type") == "directory":
            raise exc.SandboxFilesystemIsADirectoryError(f"Is a directory: {self._path}")
        return True

    def _open(self) -> None:
        m = self._mode
        if "x" in m and self._exists():
            raise exc.SandboxFilesystemPathAlreadyExistsError(f"File exists: {self._path}")
        if self._plus:
            if "r" in m or "a" in m:
                if "r" in m or self._exists():
                    self._mem = bytearray(self._files.read_all(self._path))
                else:
                    self._mem = bytearray()
                    self._dirty = True
            else:
                self._mem = bytearray()
                self._dirty = True
            if "a" in m:
                self._pos = len(self._mem)
            self._flush_mem()
        elif "r" in m:
            if not self._exists():
                raise exc.SandboxFilesystemNotFoundError(f"No such file or directory: {self._path}")
        else:
            # Create (or truncate) it now, as open() does.
            self._files.write(self._path, b"", append="a" in m)

    # Helpers.

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def _check_readable(self) -> None:
        self._check_open()
        if not self._readable:
            raise io.UnsupportedOperation("not readable")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation("not writeable")

    def _out(self, data: bytes, final: bool = False) -> T:
        if self._decoder is None:
            return data  # type: ignore[return-value]
        return self._decoder.decode(data, final)  # type: ignore[return-value]

    def _fetch(self, offset: int, length: int) -> None:
        chunk = self._files.read(self._path, offset, length)
        self._rbuf, self._rbuf_off = chunk, offset
        if len(chunk) < length:
            self._eof_off = offset + len(chunk)

    def _at_eof(self) -> bool:
        return self._eof_off is not None and self._pos >= self._eof_off

    def _read_bytes(self, n: Optional[int]) -> bytes:
        if self._mem is not None:
            end = len(self._mem) if n is None or n < 0 else min(len(self._mem), self._pos + n)
            out = bytes(self._mem[self._pos:end])
            self._pos = max(self._pos, end)
            return out
        out = bytearray()
        while n is None or n < 0 or len(out) < n:
            start = self._pos - self._rbuf_off
            if 0 <= start < len(self._rbuf):
                take = self._rbuf[start:] if n is None or n < 0 else self._rbuf[start:start + n - len(out)]
                out += take
                self._pos += len(take)
                continue
            if self._at_eof():
                break
            want = 16 * 1024 * 1024 if n is None or n < 0 else max(n - len(out), READAHEAD)
            self._fetch(self._pos, want)
            if not self._rbuf:
                break
        return bytes(out)

    def _readline_bytes(self) -> bytes:
        if self._mem is not None:
            i = self._mem.find(b"\n", self._pos)
            end = len(self._mem) if i < 0 else i + 1
            out = bytes(self._mem[self._pos:end])
            self._pos = max(self._pos, end)
            return out
        out = bytearray()
        while True:
            start = self._pos - self._rbuf_off
            if 0 <= start < len(self._rbuf):
                i = self._rbuf.find(b"\n", start)
                end = len(self._rbuf) if i < 0 else i + 1
                out += self._rbuf[start:end]
                self._pos += end - start
                if i >= 0:
                    return bytes(out)
            if self._at_eof():
                return bytes(out)
            self._fetch(self._pos, READAHEAD)
            if not self._rbuf:
                return bytes(out)

    def _flush_mem(self) -> None:
        if self._mem is not None and self._dirty:
            self._files.write_all(self._path, bytes(self._mem))
            self._dirty = False

    # File API.

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def name(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def read(self, n: Optional[int] = None) -> T:
        """Read n bytes from the current position, or the rest of the file if n is None."""
        self._check_readable()
        data = self._read_bytes(n)
        return self._out(data, final=n is None or n < 0)

    def readline(self) -> T:
        """Read one line (with its newline) from the current position."""
        self._check_readable()
        return self._out(self._readline_bytes())

    def readlines(self) -> List[T]:
        """Read all lines from the current position."""
        return list(self)

    def __iter__(self) -> "FileIO[T]":
        return self

    def __next__(self) -> T:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, data: Union[bytes, str]) -> int:
        """Write data at the current position (buffered until flush or close)."""
        self._check_writable()
        if self._binary and isinstance(data, str):
            raise TypeError("Expected bytes when in binary mode")
        if not self._binary and not isinstance(data, str):
            raise TypeError("Expected str when in text mode")
        b = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if self._mem is not None:
            if self._appending:
                self._pos = len(self._mem)
            if self._pos > len(self._mem):
                self._mem += b"\0" * (self._pos - len(self._mem))
            self._mem[self._pos:self._pos + len(b)] = b
            self._pos += len(b)
            self._dirty = True
        else:
            self._wbuf += b
            self._pos += len(b)
            if len(self._wbuf) >= WRITE_FLUSH_AT:
                self.flush()
        return len(data)

    def flush(self) -> None:
        """Send buffered writes to the sandbox."""
        self._check_open()
        if self._mem is not None:
            self._flush_mem()
        elif self._wbuf:
            data, self._wbuf = bytes(self._wbuf), bytearray()
            self._files.write(self._path, data, append=True)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to a new position: whence 0 from the start, 1 from here, 2 from the end."""
        self._check_open()
        if self._mem is None and self._writable:
            raise io.UnsupportedOperation("seek is not supported on files opened for writing only; use a '+' mode")
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._pos + offset
        elif whence == 2:
            size = len(self._mem) if self._mem is not None else int(self._files.stat(self._path).get("size") or 0)
            pos = size + offset
        else:
            raise ValueError(f"Invalid whence value: {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        if self._decoder is not None:
            self._decoder.reset()
        return pos

    def tell(self) -> int:
        """The current position (in bytes)."""
        self._check_open()
        if self._mem is None and self._appending:
            return int(self._files.stat(self._path).get("size") or 0) + len(self._wbuf)
        return self._pos

    def close(self) -> None:
        """Flush buffered writes and close the file."""
        if self._closed:
            return
        try:
            if self._writable:
                self.flush()
        finally:
            self._closed = True

    def __enter__(self) -> "FileIO[T]":
        self._check_open()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileIO({self._path!r}, mode={self._mode!r})"


add_aio(FileIO, ["read", "readline", "readlines", "write", "flush", "seek", "close"])
