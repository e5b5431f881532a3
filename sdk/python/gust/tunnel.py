"""Tunnels into containers and readiness probes, as ``modal.Tunnel``, ``modal.forward`` and
``modal.Probe``.

A sandbox declares its ports when it is created::

    sb = gust.Sandbox.create("python3", "-m", "http.server", "8000", encrypted_ports=[8000],
                             readiness_probe=gust.Probe.with_tcp(8000), app=app)
    sb.wait_until_ready()
    print(sb.tunnels()[8000].url)      # https://<random>.gust.localhost:<port>

and a function container exposes one of its own ports for a while with ``forward``::

    with gust.forward(8000) as tunnel:
        print(tunnel.url)

The host names are under the server's ingress domain (``gust up``: ``*.gust.localhost``), with a
certificate from the operator or from gust's own CA (``ingress-ca.pem`` next to the client
config); see docs/api.md, "Tunnels".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Dict, Iterator, Optional, Tuple

from . import exception as exc
from ._container import is_local
from ._http import Client, get_client


@dataclasses.dataclass(frozen=True)
class Tunnel:
    """A port forwarded from a running container (``modal.Tunnel``)."""

    host: str
    port: int
    unencrypted_host: str = ""
    unencrypted_port: int = 0

    @property
    def url(self) -> str:
        """The public HTTPS URL of the forwarded port."""
        value = f"https://{self.host}"
        if self.port != 443:
            value += f":{self.port}"
        return value

    @property
    def tls_socket(self) -> Tuple[str, int]:
        """The public TLS socket as a (host, port) tuple."""
        return (self.host, self.port)

    @property
    def tcp_socket(self) -> Tuple[str, int]:
        """The public raw TCP socket as a (host, port) tuple (unencrypted ports only)."""
        if not self.unencrypted_host:
            raise exc.InvalidError(
                "This tunnel is not configured for unencrypted TCP: use unencrypted_ports=[...] "
                "(or forward(..., unencrypted=True))")
        return (self.unencrypted_host, self.unencrypted_port)


def _tunnel(d: Dict[str, Any]) -> Tunnel:
    return Tunnel(host=d["host"], port=int(d["port"]), unencrypted_host=d.get("unencrypted_host") or "",
                  unencrypted_port=int(d.get("unencrypted_port") or 0))


def _check_port(port: Any, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise exc.InvalidError(f"{what} must be a TCP port number (1-65535), got {port!r}")
    return port


@dataclasses.dataclass(frozen=True)
class Probe:
    """A sandbox's readiness probe (``modal.Probe``): ``Sandbox.wait_until_ready`` returns once a
    TCP connection to ``tcp_port`` succeeds, or once ``exec_argv`` exits 0, tried every
    ``interval_ms``."""

    tcp_port: Optional[int] = None
    exec_argv: Optional[Tuple[str, ...]] = None
    interval_ms: int = 100

    @classmethod
    def with_tcp(cls, port: int, *, interval_ms: int = 100) -> "Probe":
        return cls(tcp_port=_check_port(port), interval_ms=interval_ms)

    @classmethod
    def with_exec(cls, *argv: str, interval_ms: int = 100) -> "Probe":
        if not argv or not all(isinstance(a, str) for a in argv):
            raise exc.InvalidError("Probe.with_exec needs a command: Probe.with_exec(\"curl\", \"-f\", \"localhost:8000\")")
        return cls(exec_argv=tuple(argv), interval_ms=interval_ms)

    def _to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"interval_ms": self.interval_ms}
        if self.tcp_port is not None:
            out["tcp_port"] = self.tcp_port
        if self.exec_argv is not None:
            out["exec_argv"] = list(self.exec_argv)
        return out


@contextlib.contextmanager
def forward(port: int, *, unencrypted: bool = False, h2_enabled: bool = False,
            client: Optional[Client] = None) -> Iterator[Tunnel]:
    """Expose ``port`` of this function container through the ingress while the block runs
    (``modal.forward``). ``unencrypted`` also exposes it as raw TCP on a port of its own;
    ``h2_enabled`` advertises HTTP/2 in TLS."""
    _check_port(port)
    container_id = os.environ.get("GUST_SANDBOX_ID")
    if is_local() or not container_id:
        raise exc.InvalidError("forward() can only be used inside a running gust function container")
    client = client or get_client()
    d = client.json("POST", f"/v1/sandboxes/{container_id}/tunnels",
                    json={"port": port, "unencrypted": bool(unencrypted), "h2_enabled": bool(h2_enabled)})
    try:
        yield _tunnel(d)
    finally:
        client.request("DELETE", f"/v1/sandboxes/{container_id}/tunnels/{port}")
