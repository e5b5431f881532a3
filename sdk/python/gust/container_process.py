"""ContainerProcess: a process started in a sandbox with ``Sandbox.exec``.

Its output arrives on one NDJSON stream (stdout and stderr chunks, then the exit code). A
daemon thread reads that stream and routes each chunk to the stdout or stderr reader; if the
stream breaks, the thread resumes it with ``GET .../output``.
"""

from __future__ import annotations

import base64
import codecs
import sys
import threading
import time
from typing import TYPE_CHECKING, Generic, Optional, TypeVar

from . import exception as exc
from .functions import add_aio
from .io_streams import StreamReader, StreamWriter
from .stream_type import StreamType

if TYPE_CHECKING:
    from ._http import NDJSONStream
    from .sandbox import Sandbox

T = TypeVar("T", str, bytes)

_MAX_RESUMES = 5


class _OutputPump:
    """Reads a process's output stream on a daemon thread into its two readers."""

    def __init__(self, sandbox: "Sandbox", exec_id: str, stdout: StreamReader, stderr: StreamReader,
                 stream: Optional["NDJSONStream"] = None):
        self._sandbox = sandbox
        self._exec_id = exec_id
        self._readers = {"stdout": stdout, "stderr": stderr}
        self._stream = stream
        self._printers = {}
        for name, r in self._readers.items():
            if r._stream_type == StreamType.STDOUT:
                self._printers[name] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.exit_code: Optional[int] = None
        self.exit_error: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.found = True  # False when the server has no such process (e.g. a sandbox without command)
        self.done = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name=f"gust-output-{self._exec_id}", daemon=True).start()

    def _route(self, line: dict) -> None:
        name = line.get("stream")
        if name is not None:
            reader = self._readers.get(name)
            if reader is None:
                return
            data = base64.b64decode(line.get("data") or "")
            st = reader._stream_type
            if st == StreamType.PIPE:
                reader._feed(data)
            elif st == StreamType.STDOUT:
                sys.stdout.write(self._printers[name].decode(data))
                sys.stdout.flush()
        elif "exit_code" in line:
            self.exit_code = int(line["exit_code"])
            self.exit_error = line.get("error")
            if self._stream is not None:
                # The stream ends right after the exit line; don't hang if it doesn't.
                self._stream.settimeout(10)
        elif isinstance(line.get("error"), dict):
            err = line["error"]
            self.error = exc.from_api(err.get("kind"), err.get("message") or "output stream failed")

    def _run(self) -> None:
        client = self._sandbox._client
        path = f"/v1/sandboxes/{self._sandbox.object_id}/execs/{self._exec_id}/output"
        resumes = 0
        try:
            while self.exit_code is None and self.error is None:
                try:
                    if self._stream is None:
                        self._stream = client.stream("GET", path)
                    for line in self._stream:
                        self._route(line)
                    self._stream = None
                except exc.NotFoundError:
                    self.found = False
                    break
                except exc.ConnectionError as e:
                    self._stream = None
                    if self.exit_code is not None:
                        break  # only the end of a finished stream was lost
                    if resumes >= _MAX_RESUMES:
                        self.error = e
                        break
                except exc.Error as e:
                    self.error = e
                    break
                if self.exit_code is None and self.error is None:
                    resumes += 1
                    if resumes > _MAX_RESUMES:
                        self.error = exc.ConnectionError(
                            f"the output stream of {self._exec_id} ended before the process exited")
                        break
                    if resumes > 1:
                        time.sleep(min(0.05 * 2 ** resumes, 2.0))
        except BaseException as e:  # never leave readers hanging
            self.error = e
        finally:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
            for name, reader in self._readers.items():
                if name in self._printers:
                    sys.stdout.write(self._printers[name].decode(b"", True))
                reader._close(self.error)
            self.done.set()


class ContainerProcess(Generic[T]):
    """A process running in a sandbox: ``stdout``, ``stderr``, ``stdin``, ``wait()``, ``poll()``."""

    def __init__(self, sandbox: "Sandbox", exec_id: str, stream: Optional["NDJSONStream"], *, text: bool = True,
                 by_line: bool = False, stdout: StreamType = StreamType.PIPE, stderr: StreamType = StreamType.PIPE):
        self._sandbox = sandbox
        self._exec_id = exec_id
        self._stdout: StreamReader[T] = StreamReader(1, text=text, by_line=by_line, stream_type=stdout)
        self._stderr: StreamReader[T] = StreamReader(2, text=text, by_line=by_line, stream_type=stderr)
        self._stdin = StreamWriter(lambda data, eof: sandbox._write_stdin(exec_id, data, eof))
        self._returncode: Optional[int] = None
        self._pump = _OutputPump(sandbox, exec_id, self._stdout, self._stderr, stream)
        self._pump.start()

    def __repr__(self) -> str:
        return f"ContainerProcess(process_id={self._exec_id!r})"

    @property
    def object_id(self) -> str:
        """The exec id (``ex-...``)."""
        return self._exec_id

    @property
    def stdout(self) -> StreamReader[T]:
        return self._stdout

    @property
    def stderr(self) -> StreamReader[T]:
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._stdin

    @property
    def returncode(self) -> int:
        if self._returncode is None:
            raise exc.InvalidError(
                "You must call wait() before accessing the returncode. "
                "To poll for the status of a running process, use poll() instead.")
        return self._returncode

    def _status(self, wait: float) -> Optional[int]:
        """Ask the server for the exit code (used when the output stream was lost)."""
        st = self._sandbox._call("GET", f"/execs/{self._exec_id}", query={"wait": wait} if wait else None,
                                 timeout=wait + 30)
        if st.get("running"):
            return None
        return int(st["exit_code"])

    def poll(self) -> Optional[int]:
        """None while the process runs, else its exit code."""
        if self._returncode is not None:
            return self._returncode
        if not self._pump.done.is_set():
            return None
        if self._pump.exit_code is not None:
            self._returncode = self._pump.exit_code
        else:
            self._returncode = self._status(0)
        return self._returncode

    def wait(self) -> int:
        """Wait for the process to exit; return its exit code (124 after an exec timeout)."""
        if self._returncode is not None:
            return self._returncode
        self._pump.done.wait()
        if self._pump.exit_code is not None:
            self._returncode = self._pump.exit_code
            return self._returncode
        while self._returncode is None:
            try:
                self._returncode = self._status(30)
            except exc.NotFoundError:
                raise (self._pump.error or exc.ExecutionError(
                    f"lost track of process {self._exec_id}: the sandbox no longer knows it")) from None
        return self._returncode


add_aio(ContainerProcess, ["poll", "wait"])
