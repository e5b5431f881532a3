"""HTTP client for the gust API, on http.client with keep-alive connections.

Idle connections are pooled and reused, so an exec round trip costs no TCP handshake. A request
that fails on a reused connection (the server closed it while idle) is retried once on a new
one. Streams (NDJSON) hold their connection until read to the end, then give it back.
"""

from __future__ import annotations

import builtins
import json
import os
import socket
import threading
import urllib.parse
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from . import _config
from . import exception as exc
from ._lazy import LazyModule
from ._version import __version__

http = LazyModule("http.client")  # used as http.client below

DEFAULT_TIMEOUT = 120.0
_MAX_IDLE = 32
_ENV_KEYS = ("GUST_SERVER_URL", "GUST_TOKEN", "GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_PROFILE",
             "GUST_CONFIG", "XDG_CONFIG_HOME", "HOME", "GUST_TLS_FINGERPRINT", "GUST_TLS_CA_FILE")

# Errors that mean a kept-alive connection went stale before it carried our request.
def _stale() -> tuple:
    return (http.RemoteDisconnected, builtins.ConnectionResetError, builtins.BrokenPipeError,
            builtins.ConnectionAbortedError, http.BadStatusLine)


def _json_bytes(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode("utf-8")


def error_from_body(status: int, body: bytes) -> exc.Error:
    """Turn a non-2xx response into the matching gust exception."""
    kind, message = None, ""
    try:
        err = json.loads(body.decode("utf-8")).get("error") or {}
        kind, message = err.get("kind"), err.get("message") or ""
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text[:500]}" if text else "")
    return exc.from_api(kind, message, status)


class NDJSONStream:
    """An NDJSON response, read line by line; iterate to get one dict per line."""

    def __init__(self, client: "Client", conn: http.HTTPConnection, resp: http.HTTPResponse):
        self._client, self._conn, self._resp = client, conn, resp
        self._buf = bytearray()
        self._scanned = 0  # how much of _buf is known to hold no newline
        self._done = False

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        while True:
            # A bytearray, searched only where it has not been yet: a line of many megabytes (a
            # large result) arrives in many chunks, and rescanning or copying it per chunk
            # would be quadratic.
            i = self._buf.find(b"\n", self._scanned)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 1]
                self._scanned = 0
                if line.strip():
                    return json.loads(line)
                continue
            self._scanned = len(self._buf)
            if self._done:
                raise StopIteration
            try:
                chunk = self._resp.read1(1 << 20)
            except (OSError, http.HTTPException) as e:
                self.close()
                raise exc.ConnectionError(f"lost the stream from the gust server at {self._client.url}: {e}") from None
            if not chunk:
                self._done = True
                tail, self._buf = bytes(self._buf), bytearray()
                self._finish()
                if tail.strip():
                    return json.loads(tail)
                raise StopIteration
            self._buf += chunk

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)

    def close(self) -> None:
        """Drop the stream; its connection is closed unless the stream was read to the end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def settimeout(self, t: Optional[float]) -> None:
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(t)


def _unix_connection(path: str) -> "http.HTTPConnection":
    """An HTTP connection over a unix socket."""

    class UnixHTTPConnection(http.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(path)
            self.sock = s

    return UnixHTTPConnection("localhost", timeout=DEFAULT_TIMEOUT)


def _tls_context(config: _config.Config):
    """How an https server is verified: a pinned fingerprint, else a CA file, else the system's CAs."""
    import ssl

    if config.tls_fingerprint:
        # The pin replaces the chain and name checks (a self-signed certificate fails them);
        # _pinned_connection compares the certificate after every handshake.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=config.tls_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise exc.InvalidError(f"gust TLS CA file {config.tls_ca_file}: {e}") from None


def _pinned_connection(host: str, port: int, ctx, fingerprint: str) -> "http.HTTPSConnection":
    """An HTTPS connection that accepts only the certificate whose SHA-256 is fingerprint."""
    import hashlib
    import hmac
    import ssl

    class PinnedHTTPSConnection(http.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            der = self.sock.getpeercert(binary_form=True) or b""
            got = hashlib.sha256(der).hexdigest()
            if not hmac.compare_digest(got, fingerprint):
                self.sock.close()
                self.sock = None
                raise ssl.SSLCertVerificationError(
                    f"the server's TLS certificate does not have the pinned fingerprint: it is {got}, "
                    f"the pin is {fingerprint} (is this the right server? check tls_fingerprint in the config file)")

    return PinnedHTTPSConnection(host, port, timeout=DEFAULT_TIMEOUT, context=ctx)


class Client:
    """A connection pool to one gust server, with its token."""

    def __init__(self, config: _config.Config):
        self.config = config
        self.url = config.server_url
        u = urllib.parse.urlsplit(self.url)
        # unix:///path/api.sock: inside a function container, the worker's socket to the API.
        self._unix = u.path if u.scheme == "unix" else None
        if self._unix is None and (u.scheme not in ("http", "https") or not u.hostname):
            raise exc.InvalidError(f"gust server URL {self.url!r} is not an http(s) URL")
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._prefix = "" if self._unix else u.path.rstrip("/")
        self._tls = None
        if self._https:
            self._tls = _tls_context(config)
        elif self._unix is None and (config.tls_fingerprint or config.tls_ca_file):
            raise exc.InvalidError(f"gust config pins a TLS certificate but the server URL {self.url} is not https: use https://")
        self._idle: List[http.HTTPConnection] = []
        self._lock = threading.Lock()

    # Connections.

    def _new_conn(self) -> http.HTTPConnection:
        if self._unix is not None:
            return _unix_connection(self._unix)
        if not self._https:
            return http.HTTPConnection(self._host, self._port, timeout=DEFAULT_TIMEOUT)
        if self.config.tls_fingerprint:
            return _pinned_connection(self._host, self._port, self._tls, self.config.tls_fingerprint)
        return http.HTTPSConnection(self._host, self._port, timeout=DEFAULT_TIMEOUT, context=self._tls)

    def _acquire(self) -> http.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_conn()

    def _release(self, conn: http.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def _unreachable(self, e: BaseException) -> exc.ConnectionError:
        return exc.ConnectionError(f"cannot reach gust server at {self.url}: {e} — is `gust up` running?")

    def _send(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
              timeout: Optional[float]) -> Tuple[http.HTTPConnection, http.HTTPResponse]:
        for attempt in (0, 1):
            conn = self._acquire()
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                conn.sock.settimeout(timeout)
                conn.request(method, path, body=body, headers=headers)
                return conn, conn.getresponse()
            except builtins.TimeoutError as e:
                conn.close()
                raise exc.TimeoutError(f"{method} {self.url}{path} timed out after {timeout} s") from e
            except _stale() as e:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise self._unreachable(e) from None
            except (OSError, http.HTTPException) as e:
                conn.close()
                raise self._unreachable(e) from None
        raise AssertionError("unreachable")

    def _prepare(self, path: str, query: Optional[Mapping[str, Any]], json_body: Any, body: Optional[bytes],
                 content_type: Optional[str], auth: bool) -> Tuple[str, Optional[bytes], Dict[str, str]]:
        headers = {"User-Agent": f"gust-python/{__version__}"}
        if auth:
            authorization = self.config.authorization
            if authorization is None:
                raise exc.AuthError(self.config.missing_credentials_message())
            headers["Authorization"] = authorization
        if json_body is not None:
            body = _json_bytes(json_body)
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        full = self._prefix + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                full += "?" + urllib.parse.urlencode(q, doseq=True)
        return full, body, headers

    # Requests.

    def request(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None, json: Any = None,
                body: Optional[bytes] = None, content_type: Optional[str] = None,
                timeout: Optional[float] = DEFAULT_TIMEOUT, auth: bool = True) -> Tuple[int, bytes]:
        """Send a request and read the whole answer; raise the mapped exception on non-2xx."""
        full, data, headers = self._prepare(path, query, json, body, content_type, auth)
        conn, resp = self._send(method, full, data, headers, timeout)
        try:
            payload = resp.read()
        except builtins.TimeoutError as e:
            conn.close()
            raise exc.TimeoutError(f"{method} {self.url}{full} timed out after {timeout} s") from e
        except (OSError, http.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from None
        self._release(conn)
        if resp.status >= 300:
            raise error_from_body(resp.status, payload)
        return resp.status, payload

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """Like request, decoding a JSON answer (None when there is no body)."""
        _, payload = self.request(method, path, **kw)
        return json.loads(payload) if payload else None

    def stream(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None, json: Any = None,
               timeout: Optional[float] = None) -> NDJSONStream:
        """Start an NDJSON stream; raise the mapped exception if the server answers non-2xx."""
        full, data, headers = self._prepare(path, query, json, None, None, True)
        headers["Accept"] = "application/x-ndjson"
        conn, resp = self._send(method, full, data, headers, timeout)
        if resp.status >= 300:
            try:
                payload = resp.read()
            except (OSError, http.HTTPException):
                payload = b""
            conn.close()
            raise error_from_body(resp.status, payload)
        return NDJSONStream(self, conn, resp)

    def health(self) -> dict:
        """GET /v1/health (no token needed)."""
        return self.json("GET", "/v1/health", auth=False, timeout=10)


_clients: Dict[tuple, Client] = {}
_clients_lock = threading.Lock()


def get_client() -> Client:
    """The shared client for the current configuration (re-resolved when the environment changes)."""
    key = tuple(os.environ.get(k) for k in _ENV_KEYS)
    c = _clients.get(key)
    if c is not None:
        return c
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = Client(_config.load())
            _clients[key] = c
        return c
