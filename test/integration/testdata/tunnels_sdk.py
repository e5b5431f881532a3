"""Tunnels through the Python SDK, as a Modal program would use them (run by TestPythonTunnels).

GUST_INGRESS_CA names gust's CA; the ingress is dialled on 127.0.0.1 with the tunnel's host
name as SNI (the name itself resolves nowhere here).
"""

import http.server
import os
import socket
import ssl
import sys
import threading
import time

import gust as modal

CA = os.environ.get("GUST_INGRESS_CA")  # unset in the function's container
app = modal.App("tunnels-sdk-test")


def https_get(host, port, path="/"):
    ctx = ssl.create_default_context(cafile=CA)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=host) as ss:
            ss.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            out = b""
            while True:
                d = ss.recv(65536)
                if not d:
                    return out.decode()
                out += d


def tcp_get(host, port, path="/"):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out.decode()
            out += d


@app.function()
def serve():
    stop = threading.Event()

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b"forwarded\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if self.path == "/stop":
                stop.set()

    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with modal.forward(8000, unencrypted=True) as t:
        yield [t.host, t.port, t.tcp_socket[0], t.tcp_socket[1], t.url]
        stop.wait(60)
    yield "closed"


def sandbox_tunnels():
    sb = modal.Sandbox.create(
        "python3", "-c", "import time, http.server; time.sleep(1.5); http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=8000, bind='0.0.0.0')",
        encrypted_ports=[8000], unencrypted_ports=[8001],
        readiness_probe=modal.Probe.with_tcp(8000), app=app, workdir="/etc")
    try:
        start = time.monotonic()
        sb.wait_until_ready(timeout=60)
        assert time.monotonic() - start > 0.5, "ready before the server started"
        tunnels = sb.tunnels()
        assert sorted(tunnels) == [8000, 8001], tunnels
        t = tunnels[8000]
        assert t.url == f"https://{t.host}:{t.port}", t.url
        assert t.tls_socket == (t.host, t.port)
        try:
            t.tcp_socket
            raise AssertionError("an encrypted port has a raw TCP socket")
        except modal.exception.InvalidError:
            pass
        assert tunnels[8001].tcp_socket[1] > 0
        body = https_get(t.host, t.port, "/os-release")  # served from the workdir, /etc
        assert " 200 " in body.splitlines()[0] and "Debian" in body, body
        print("sandbox tunnel ok:", t.url)
    finally:
        sb.terminate()
    try:
        modal.Sandbox.create(encrypted_ports=[0], app=app)
        raise AssertionError("port 0 was accepted")
    except modal.exception.InvalidError:
        pass


def forwarded():
    with app.run():
        it = serve.remote_gen()
        host, port, th, tp, url = next(it)
        assert url.startswith("https://") and host.endswith(".gust.localhost"), url
        body = https_get(host, port)
        assert body.endswith("forwarded\n"), body
        body = tcp_get(th, tp, "/stop")
        assert body.endswith("forwarded\n"), body
        assert next(it) == "closed"
        try:
            https_get(host, port)
            raise AssertionError("the tunnel answered after forward() ended")
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        print("forward ok:", url)


if __name__ == "__main__":
    sandbox_tunnels()
    forwarded()
    sys.exit(0)
