"""StreamReader (stdout/stderr) and StreamWriter (stdin), as in ``modal.io_streams``.

A reader is fed by a background thread that reads the process's output stream from the
server; reading blocks until there is data (or the end).
"""

from __future__ import annotations

import codecs
import threading
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar, Union

from .exception import InvalidError
from .functions import _async_iter, add_aio
from .stream_type import StreamType

T = TypeVar("T", str, bytes)

MAX_BUFFER_SIZE = 64 * 1024 * 1024  # the API's limit for one stdin write


class StreamReader(Generic[T]):
    """Output of a process (``stdout`` or ``stderr``).

    ``read()`` returns everything up to the end of the stream. Iterating yields output as it
    arrives: whole lines (newline kept) when line-buffered, else each chunk as written.
    """

    def __init__(self, file_descriptor: int, *, text: bool = True, by_line: bool = False,
                 stream_type: StreamType = StreamType.PIPE, starter: Optional[Callable[[], None]] = None):
        if by_line and not text:
            raise ValueError("line-buffering is only supported when text=True")
        self._fd = file_descriptor
        self._text = text
        self._by_line = by_line
        self._stream_type = stream_type
        self._starter = starter
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._error: Optional[BaseException] = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if text else None

    @property
    def file_descriptor(self) -> int:
        """1 for stdout, 2 for stderr."""
        return self._fd

    # Producer side (the output thread).

    def _feed(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def _close(self, error: Optional[BaseException] = None) -> None:
        with self._cond:
            if not self._eof:
                self._eof = True
                self._error = error
            self._cond.notify_all()

    # Consumer side.

    def _start(self) -> None:
        starter, self._starter = self._starter, None
        if starter is not None:
            starter()

    def _decode(self, data: bytes, final: bool) -> T:
        if self._decoder is None:
            return data  # type: ignore[return-value]
        return self._decoder.decode(data, final)  # type: ignore[return-value]

    def read(self) -> T:
        """Block until the stream ends; return all output not read yet."""
        if self._stream_type != StreamType.PIPE:
            raise InvalidError("Output can only be read from a stream of type StreamType.PIPE.")
        self._start()
        with self._cond:
            while not self._eof:
                self._cond.wait()
            data = bytes(self._buf)
            self._buf.clear()
            if self._error is not None and not data:
                raise self._error
            return self._decode(data, True)

    def __iter__(self) -> Iterator[T]:
        return self

    def __aiter__(self) -> Any:
        """``async for line in p.stdout``: the same lines, read in a thread."""
        return _async_iter(lambda: self)

    def __next__(self) -> T:
        if self._stream_type != StreamType.PIPE:
            raise InvalidError("Output can only be read from a stream of type StreamType.PIPE.")
        self._start()
        with self._cond:
            while True:
                data: Optional[bytes] = None
                if self._by_line:
                    i = self._buf.find(b"\n")
                    if i >= 0:
                        data = bytes(self._buf[: i + 1])
                        del self._buf[: i + 1]
                    elif self._eof and self._buf:
                        data = bytes(self._buf)
                        self._buf.clear()
                elif self._buf:
                    data = bytes(self._buf)
                    self._buf.clear()
                if data is not None:
                    out = self._decode(data, self._eof and not self._buf)
                    if out:
                        return out
                    continue
                if self._eof:
                    if self._decoder is not None:
                        rest = self._decoder.decode(b"", True)
                        if rest:
                            return rest  # type: ignore[return-value]
                    if self._error is not None:
                        err, self._error = self._error, None
                        raise err
                    raise StopIteration
                self._cond.wait()

    def __repr__(self) -> str:
        return f"StreamReader(fd={self._fd})"


class StreamWriter:
    """Input of a process (``stdin``). ``write`` buffers; ``drain`` sends the buffer (and the
    end of input, after ``write_eof``)."""

    def __init__(self, send: Callable[[bytes, bool], None]):
        self._send = send
        self._buf = bytearray()
        self._closed = False
        self._eof_sent = False
        self._lock = threading.Lock()

    def write(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        """Add data to the buffer; it is sent by ``drain()``."""
        if self._closed:
            raise ValueError("Stdin is closed. Cannot write to it.")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__}")
        with self._lock:
            if len(self._buf) + len(data) > MAX_BUFFER_SIZE:
                raise BufferError("Buffer size exceed limit. Call drain to clear the buffer.")
            self._buf += data

    def write_eof(self) -> None:
        """Close stdin once the buffered data is drained (``drain()`` sends it)."""
        self._closed = True

    def drain(self) -> None:
        """Send buffered data, and the end of input if ``write_eof()`` was called."""
        with self._lock:
            data = bytes(self._buf)
            self._buf.clear()
            eof = self._closed and not self._eof_sent
            if not data and not eof:
                return
            self._send(data, eof)
            if eof:
                self._eof_sent = True

    def __repr__(self) -> str:
        return "StreamWriter()"


add_aio(StreamReader, ["read"])
add_aio(StreamWriter, ["write", "write_eof", "drain"])
