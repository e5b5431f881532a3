"""Serving a web endpoint inside its container, with the standard library only.

The runner calls ``start`` after it imported the user's module and before it says ``ready``
when the container's environment has ``GUST_WEB`` (the function's web configuration, set by
the server). ``wsgi`` and ``asgi`` apps (and ``fastapi`` endpoints, made into a FastAPI app
here) are served on ``port`` by a threaded HTTP/1.1 server: keep-alive connections, request
bodies by length or chunked, answers chunked (each piece the app yields goes out at once, so
that streams and server-sent events are not held back). ASGI apps run on one event loop in a
thread of their own, with the lifespan protocol when the app speaks it, and websockets
(RFC 6455: text, binary, ping, close, fragments). A ``web_server`` function starts its own
server; this only waits, up to its startup_timeout, for the port to accept connections.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import inspect
import queue
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DONE = object()


def start(fn: Callable, conf: dict) -> None:
    """Start serving; raises if the app cannot be made or the server does not come up."""
    kind = conf.get("type")
    port = int(conf.get("port") or 8765)
    if kind == "web_server":
        _call(fn)
        _wait_port(port, float(conf.get("startup_timeout") or 5.0))
        return
    if kind == "wsgi":
        handler: type = _wsgi_handler(_call(fn))
    elif kind == "asgi":
        handler = _asgi_handler(_AsgiHost(_call(fn)))
    elif kind == "fastapi":
        handler = _asgi_handler(_AsgiHost(_fastapi_app(fn, conf)))
    else:
        raise ValueError(f"unknown web endpoint type {kind!r}")
    srv = _Server(("0.0.0.0", port), handler)
    threading.Thread(target=srv.serve_forever, name="gust-web", daemon=True).start()


def _call(fn: Callable) -> Any:
    out = fn()
    if inspect.isawaitable(out):
        out = asyncio.run(out)
    return out


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the web server did not start listening on port {port} within the startup_timeout "
                                   f"of {timeout:g} s: listen on 0.0.0.0:{port}, or raise startup_timeout") from None
            time.sleep(0.01)


def _fastapi_app(fn: Callable, conf: dict) -> Any:
    try:
        import fastapi
    except ImportError:
        raise ImportError("@modal.fastapi_endpoint needs FastAPI in the function's image, as on Modal: "
                          "image = gust.Image.debian_slim().pip_install(\"fastapi[standard]\"); or serve a "
                          "plain ASGI/WSGI app with @modal.asgi_app() or @modal.wsgi_app()") from None
    docs = bool(conf.get("docs"))
    app = fastapi.FastAPI(openapi_url="/openapi.json" if docs else None, docs_url="/docs" if docs else None,
                          redoc_url="/redoc" if docs else None)
    app.add_api_route("/", fn, methods=[conf.get("method") or "GET"])
    return app


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class _Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gust-web"

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # no access log; the app's own prints go to the function's logs

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.serve()
            self.wfile.flush()
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def serve(self) -> None:
        raise NotImplementedError

    # -- request
    def body_reader(self) -> "_Body":
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        return _Body(self.rfile, -1 if chunked else int(self.headers.get("Content-Length") or 0))

    def split_path(self) -> Tuple[str, str, str]:
        raw, _, qs = self.path.partition("?")
        return raw, urllib.parse.unquote(raw, encoding="latin-1"), qs

    # -- response
    def begin(self, status: int, reason: str, headers: List[Tuple[str, str]]) -> None:
        """Sends the status line and headers; the body is chunked unless the app gave its length."""
        names = {k.lower() for k, _ in headers}
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        self._no_body = no_body
        self._chunked = not no_body and "content-length" not in names
        out = [f"HTTP/1.1 {status} {reason}\r\n"]
        for k, v in headers:
            if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                continue
            out.append(f"{k}: {v}\r\n")
        if self._chunked:
            out.append("Transfer-Encoding: chunked\r\n")
        if self.close_connection:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        self.wfile.write("".join(out).encode("latin-1"))

    def body(self, data: bytes) -> None:
        if not data or self._no_body:
            return
        if self._chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def end(self) -> None:
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")

    def error(self, status: int, text: str) -> None:
        data = text.encode()
        self.begin(status, http.HTTPStatus(status).phrase, [("Content-Type", "text/plain; charset=utf-8"),
                                                             ("Content-Length", str(len(data)))])
        self.wfile.write(data)


class _Body:
    """A request's body as the app reads it, as it arrives: by length or chunked. ``drain``
    reads what the app left, so that the connection can take the next request."""

    def __init__(self, rfile: Any, length: int):
        self._f = rfile
        self._left = length  # -1: chunked
        self._chunk = 0  # bytes left in the current chunk
        self._eof = length == 0
        self._buf = b""
        self._lock = threading.Lock()

    def _next(self, n: int) -> bytes:
        if self._eof:
            return b""
        if self._left >= 0:
            data = self._f.read(min(n, self._left))
            self._left -= len(data)
            if not data or self._left == 0:
                self._eof = True
            return data
        if self._chunk == 0:
            line = self._f.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self._f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                self._eof = True
                return b""
            self._chunk = size
        data = self._f.read(min(n, self._chunk))
        self._chunk -= len(data)
        if self._chunk == 0:
            self._f.readline(3)
        if not data:
            self._eof = True
        return data

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            out = [self._buf]
            have = len(self._buf)
            self._buf = b""
            while (n < 0 or have < n) and not self._eof:
                d = self._next(65536 if n < 0 else n - have)
                out.append(d)
                have += len(d)
            return b"".join(out)

    def read_some(self, n: int = 65536) -> bytes:
        """What is there, up to n bytes (at least one unless at the end)."""
        with self._lock:
            if self._buf:
                d, self._buf = self._buf[:n], self._buf[n:]
                return d
            return self._next(n)

    def readline(self, limit: int = -1) -> bytes:
        with self._lock:
            while b"\n" not in self._buf and not self._eof and (limit < 0 or len(self._buf) < limit):
                self._buf += self._next(65536)
            i = self._buf.find(b"\n")
            end = len(self._buf) if i < 0 else i + 1
            if limit >= 0:
                end = min(end, limit)
            line, self._buf = self._buf[:end], self._buf[end:]
            return line

    def readlines(self, hint: int = -1) -> List[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    @property
    def eof(self) -> bool:
        return self._eof and not self._buf

    def drain(self) -> None:
        while not self.eof:
            if not self.read_some():
                break


def _all_methods(cls: type) -> type:
    for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
        setattr(cls, "do_" + m, cls.serve)
    return cls


# ---------------------------------------------------------------- WSGI


def _wsgi_handler(app: Callable) -> type:
    if not callable(app):
        raise TypeError(f"@wsgi_app: the function must return a WSGI app (a callable), got {app!r}")

    @_all_methods
    class Handler(_Base):
        def serve(self) -> None:
            body = self.body_reader()
            raw, path, qs = self.split_path()
            host, _, port = (self.headers.get("Host") or "localhost").partition(":")
            env: Dict[str, Any] = {
                "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": qs,
                "SERVER_NAME": host, "SERVER_PORT": port or "443", "SERVER_PROTOCOL": self.request_version,
                "REMOTE_ADDR": self.client_address[0], "CONTENT_LENGTH": self.headers.get("Content-Length") or "",
                "CONTENT_TYPE": self.headers.get("Content-Type") or "",
                "wsgi.version": (1, 0), "wsgi.url_scheme": self.headers.get("X-Forwarded-Proto") or "http",
                "wsgi.input": body, "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                "wsgi.multiprocess": False, "wsgi.run_once": False,
            }
            for k, v in self.headers.items():
                key = "HTTP_" + k.upper().replace("-", "_")
                if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                    continue
                env[key] = env[key] + "," + v if key in env else v
            state: Dict[str, Any] = {"started": False}

            def write(data: bytes) -> None:
                send_headers()
                self.body(data)

            def send_headers() -> None:
                if not state["started"]:
                    if "status" not in state:
                        raise AssertionError("the WSGI app wrote before start_response")
                    code, _, reason = state["status"].partition(" ")
                    self.begin(int(code), reason, state["headers"])
                    state["started"] = True

            def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable:
                if exc_info and state["started"]:
                    raise exc_info[1].with_traceback(exc_info[2])
                state["status"], state["headers"] = status, list(headers)
                return write

            try:
                result = app(env, start_response)
                try:
                    for chunk in result:
                        if chunk:
                            write(chunk)
                    send_headers()
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            except (ConnectionError, socket.timeout):
                raise
            except BaseException:  # noqa: BLE001 - the app's failure is the request's, not the server's
                traceback.print_exc()
                if not state["started"]:
                    body.drain()
                    self.error(500, "Internal Server Error\n")
                    return
                self.close_connection = True
                return
            self.end()
            body.drain()

    return Handler


# ---------------------------------------------------------------- ASGI


class _AsgiHost:
    """An ASGI app and the event loop it runs on."""

    def __init__(self, app: Any):
        if not callable(app):
            raise TypeError(f"@asgi_app: the function must return an ASGI app (a callable), got {app!r}")
        self.app = app
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="gust-web-loop", daemon=True).start()
        self.state: Dict[str, Any] = {}
        self._lifespan()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _lifespan(self) -> None:
        async def go() -> None:
            inbox: asyncio.Queue = asyncio.Queue()
            await inbox.put({"type": "lifespan.startup"})
            started: asyncio.Future = self.loop.create_future()

            async def send(m: dict) -> None:
                if started.done():
                    return
                if m["type"] == "lifespan.startup.complete":
                    started.set_result(None)
                elif m["type"] == "lifespan.startup.failed":
                    started.set_exception(RuntimeError("the ASGI app's startup failed: " + str(m.get("message", ""))))

            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
            task = asyncio.ensure_future(self.app(scope, inbox.get, send))
            await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
            if started.done():
                started.result()  # raises a failed startup
            elif task.done() and task.exception() is not None:
                pass  # an app without lifespan support raises on the scope: fine, as uvicorn's "auto"

        self.run(go()).result()


def _scope_common(h: _Base, kind: str, host: _AsgiHost) -> dict:
    raw, path, qs = h.split_path()
    hostname, _, port = (h.headers.get("Host") or "localhost").partition(":")
    proto = h.headers.get("X-Forwarded-Proto") or "http"
    if kind == "websocket":
        proto = "wss" if proto == "https" else "ws"
    return {
        "type": kind, "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "scheme": proto, "path": path, "raw_path": raw.encode("latin-1"), "query_string": qs.encode("latin-1"),
        "root_path": "", "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in h.headers.items()],
        "client": tuple(h.client_address[:2]), "server": (hostname, int(port) if port.isdigit() else 443),
        "state": dict(host.state),
    }


def _asgi_handler(host: _AsgiHost) -> type:
    @_all_methods
    class Handler(_Base):
        def serve(self) -> None:
            if (self.headers.get("Upgrade") or "").lower() == "websocket":
                _serve_websocket(self, host)
                return
            body = self.body_reader()
            scope = _scope_common(self, "http", host)
            scope["method"] = self.command
            out: queue.Queue = queue.Queue()
            waiters: List[asyncio.Future] = []
            sent = [False]

            async def receive() -> dict:
                if not sent[0]:
                    # The body as it arrives, read in the loop's executor (the loop never waits).
                    data = await host.loop.run_in_executor(None, body.read_some) if not body.eof else b""
                    sent[0] = body.eof
                    return {"type": "http.request", "body": data, "more_body": not body.eof}
                fut = host.loop.create_future()
                waiters.append(fut)
                await fut
                return {"type": "http.disconnect"}

            async def send(m: dict) -> None:
                out.put(m)

            def disconnect() -> None:
                def wake() -> None:
                    for f in waiters:
                        if not f.done():
                            f.set_result(None)
                host.loop.call_soon_threadsafe(wake)

            fut = host.run(host.app(scope, receive, send))
            fut.add_done_callback(lambda _: out.put(_DONE))
            started = False
            try:
                while True:
                    m = out.get()
                    if m is _DONE:
                        e = fut.exception()
                        if e is not None:
                            traceback.print_exception(type(e), e, e.__traceback__)
                        if not started:
                            self.error(500, "Internal Server Error\n")
                        else:
                            self.close_connection = True  # the answer stopped short
                        return
                    t = m.get("type")
                    if t == "http.response.start":
                        status = int(m.get("status", 200))
                        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in m.get("headers") or []]
                        try:
                            reason = http.HTTPStatus(status).phrase
                        except ValueError:
                            reason = ""
                        self.begin(status, reason, headers)
                        started = True
                    elif t == "http.response.body" and started:
                        self.body(m.get("body") or b"")
                        if not m.get("more_body"):
                            self.end()
                            return
            finally:
                disconnect()
                body.drain()

    return Handler


def _ws_read_frame(rfile: Any) -> Tuple[bool, int, bytes]:
    head = rfile.read(2)
    if len(head) < 2:
        raise ConnectionError("websocket closed")
    fin, op = head[0] & 0x80, head[0] & 0x0F
    masked, n = head[1] & 0x80, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if masked else b""
    data = rfile.read(n)
    if len(data) < n:
        raise ConnectionError("websocket closed")
    if masked:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bool(fin), op, data


def _ws_frame(op: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + data


def _serve_websocket(h: _Base, host: _AsgiHost) -> None:
    h.close_connection = True
    key = h.headers.get("Sec-WebSocket-Key") or ""
    scope = _scope_common(h, "websocket", host)
    scope["subprotocols"] = [p.strip() for p in (h.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]

    async def make_queue() -> asyncio.Queue:
        return asyncio.Queue()

    inbox: asyncio.Queue = host.run(make_queue()).result()

    def deliver(m: dict) -> None:
        host.loop.call_soon_threadsafe(inbox.put_nowait, m)

    deliver({"type": "websocket.connect"})
    out: queue.Queue = queue.Queue()
    lock = threading.Lock()
    state = {"accepted": False, "closed": False}

    def write(b: bytes) -> None:
        with lock:
            h.wfile.write(b)

    async def send(m: dict) -> None:
        out.put(m)

    def reader() -> None:
        buf, first_op = b"", 0
        try:
            while True:
                fin, op, data = _ws_read_frame(h.rfile)
                if op == 0x8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    if not state["closed"]:
                        state["closed"] = True
                        write(_ws_frame(0x8, data[:2]))
                    deliver({"type": "websocket.disconnect", "code": code})
                    return
                if op == 0x9:
                    write(_ws_frame(0xA, data))
                    continue
                if op == 0xA:
                    continue
                if op in (0x1, 0x2):
                    buf, first_op = data, op
                else:
                    buf += data
                if fin:
                    if first_op == 0x1:
                        deliver({"type": "websocket.receive", "text": buf.decode("utf-8", "replace")})
                    else:
                        deliver({"type": "websocket.receive", "bytes": buf})
                    buf = b""
        except (OSError, ConnectionError, struct.error):
            deliver({"type": "websocket.disconnect", "code": 1006})

    fut = host.run(host.app(scope, inbox.get, send))
    fut.add_done_callback(lambda _: out.put(_DONE))
    while True:
        m = out.get()
        if m is _DONE:
            e = fut.exception()
            if e is not None:
                traceback.print_exception(type(e), e, e.__traceback__)
            if not state["accepted"]:
                h.error(403 if e is None else 500, "websocket refused\n")
            elif not state["closed"]:
                state["closed"] = True
                try:
                    write(_ws_frame(0x8, struct.pack("!H", 1000 if e is None else 1011)))
                except OSError:
                    pass
            return
        t = m.get("type")
        try:
            if t == "websocket.accept" and not state["accepted"]:
                accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
                lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                         f"Sec-WebSocket-Accept: {accept}"]
                if m.get("subprotocol"):
                    lines.append(f"Sec-WebSocket-Protocol: {m['subprotocol']}")
                for k, v in m.get("headers") or []:
                    lines.append(f"{k.decode('latin-1')}: {v.decode('latin-1')}")
                write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                state["accepted"] = True
                threading.Thread(target=reader, name="gust-web-ws", daemon=True).start()
            elif t == "websocket.send" and state["accepted"] and not state["closed"]:
                if m.get("text") is not None:
                    write(_ws_frame(0x1, m["text"].encode()))
                else:
                    write(_ws_frame(0x2, m.get("bytes") or b""))
            elif t == "websocket.close":
                if not state["accepted"]:
                    h.error(403, "websocket refused\n")
                    state["accepted"] = state["closed"] = True
                elif not state["closed"]:
                    state["closed"] = True
                    write(_ws_frame(0x8, struct.pack("!H", int(m.get("code") or 1000)) + (m.get("reason") or "").encode()))
        except OSError:
            state["closed"] = True
            deliver({"type": "websocket.disconnect", "code": 1006})
