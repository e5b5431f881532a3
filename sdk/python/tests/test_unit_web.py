"""Unit tests of web endpoints: the decorators' checks and the container's standard-library
servers (_webserve), run in this process on loopback."""

import base64
import http.client
import os
import socket
import struct
import time
import unittest

import gust as modal
from gust import _webserve
from gust import exception as exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DecoratorTest(unittest.TestCase):
    def test_spec(self):
        app = modal.App("web-unit")

        @app.function()
        @modal.concurrent(max_inputs=5)
        @modal.wsgi_app(label="echo", requires_proxy_auth=True)
        def web():
            return None

        @app.function()
        @modal.web_server(8000, startup_timeout=30)
        def srv():
            pass

        @app.function()
        @modal.web_endpoint(method="post", docs=True)
        def ep(x: int):
            return x

        @app.function()
        def plain():
            pass

        self.assertEqual(web._options["web"], {"type": "wsgi", "label": "echo", "requires_proxy_auth": True})
        self.assertEqual(web._options["max_inputs"], 5)
        self.assertEqual(srv._options["web"], {"type": "web_server", "port": 8000, "startup_timeout": 30.0})
        self.assertEqual(ep._options["web"], {"type": "fastapi", "method": "POST", "docs": True})
        self.assertIsNone(plain._options["web"])
        self.assertIsNone(plain.get_web_url())
        with self.assertRaisesRegex(exc.InvalidError, "cannot be invoked for remote execution"):
            web.remote()
        self.assertEqual(ep.local(3), 3)

        @app.cls()
        class Model:
            @modal.enter()
            def load(self):
                self.state = "ready"

            @modal.asgi_app(label="model")
            def web(self):
                return self.state

        self.assertEqual(Model._options["web"], {"type": "asgi", "label": "model", "cls_method": "web"})
        self.assertEqual(Model().web.local(), "ready")
        with self.assertRaisesRegex(exc.InvalidError, "cannot be invoked for remote execution"):
            Model().web.remote()

    def test_bad_input(self):
        for make, msg in [
            (lambda: modal.asgi_app(label="Bad_Label"), "Invalid label"),
            (lambda: modal.asgi_app(label="a--b"), "Invalid label"),
            (lambda: modal.asgi_app(label="x" * 64), "Invalid label"),
            (lambda: modal.web_server(), "must be the local port"),
            (lambda: modal.web_server(lambda: None), "must be the local port"),
            (lambda: modal.web_server(0), "must be a local port"),
            (lambda: modal.web_server(8000, startup_timeout=0), "must be positive"),
            (lambda: modal.wsgi_app(lambda: None), "Positional arguments are not allowed"),
            (lambda: modal.fastapi_endpoint(method="FETCH"), "must be one of"),
            (lambda: modal.asgi_app(custom_domains=["x.example.com"]), "not supported"),
        ]:
            with self.subTest(msg=msg):
                with self.assertRaisesRegex(exc.InvalidError, msg):
                    make()
        app = modal.App("web-unit-bad")
        with self.assertRaisesRegex(exc.InvalidError, "two web endpoint decorators"):
            modal.asgi_app()(modal.wsgi_app()(lambda: None))
        with self.assertRaisesRegex(exc.InvalidError, "one per class"):
            @app.cls()
            class Two:
                @modal.asgi_app()
                def a(self):
                    return None

                @modal.wsgi_app()
                def b(self):
                    return None
        fn = app.function()(lambda: None)
        with self.assertRaisesRegex(exc.InvalidError, "goes under @app.function"):
            modal.asgi_app()(fn)


def _wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks():
            for i in range(3):
                yield b"chunk%d\n" % i
                time.sleep(0.2)
        return chunks()
    if environ["PATH_INFO"] == "/unread":
        start_response("200 OK", [("Content-Length", "0")])
        return []
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Echo", environ.get("HTTP_X_TEST", ""))])
    return [environ["REQUEST_METHOD"].encode() + b" " + body]


async def _asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + m.get("text", "")})
    body, parts = b"", 0
    while True:
        m = await receive()
        body += m["body"]
        parts += 1
        if not m.get("more_body"):
            break
    if scope["path"] == "/size":
        body = b"%d bytes in %d messages" % (len(body), parts)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi " + scope["path"].encode() + b" " + body, "more_body": True})
    await send({"type": "http.response.body", "body": b"!"})


class ServeTest(unittest.TestCase):
    def test_wsgi(self):
        port = _free_port()
        _webserve.start(lambda: _wsgi, {"type": "wsgi", "port": port})
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(2):  # one keep-alive connection
            c.request("POST", "/x", body=b"hello", headers={"X-Test": "yes"})
            r = c.getresponse()
            self.assertEqual((r.status, r.getheader("X-Echo"), r.read()), (201, "yes", b"POST hello"))
        c.request("POST", "/chunked", body=iter([b"one ", b"two"]), encode_chunked=True)
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (201, b"POST one two"))
        c.request("POST", "/unread", body=b"y" * 100000)  # the app reads none of it: drained
        r = c.getresponse()
        r.read()
        c.request("HEAD", "/x")  # the app's body is not sent: the connection stays usable
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (201, b""))
        c.request("GET", "/boom")
        r = c.getresponse()
        self.assertEqual(r.status, 500)
        r.read()
        start = time.monotonic()
        c.request("GET", "/stream")
        r = c.getresponse()
        self.assertEqual(r.getheader("Transfer-Encoding"), "chunked")
        first = r.readline()
        first_at = time.monotonic() - start
        rest = r.read()
        self.assertEqual(first + rest, b"chunk0\nchunk1\nchunk2\n")
        self.assertLess(first_at, 0.2, "the first chunk waited for the rest")

    def test_asgi_http_and_websocket(self):
        port = _free_port()
        _webserve.start(lambda: _asgi, {"type": "asgi", "port": port})
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/p", body=b"B")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"asgi /p B!"))
        big = b"x" * 300000
        c.request("POST", "/size", body=big)  # arrives in several http.request messages
        r = c.getresponse()
        out = r.read()
        self.assertTrue(out.startswith(b"asgi /size 300000 bytes in ") and not out.startswith(b"asgi /size 300000 bytes in 1 "), out)
        c.request("POST", "/size", body=iter([b"ab", b"cd"]), encode_chunked=True)
        r = c.getresponse()
        self.assertTrue(r.read().startswith(b"asgi /size 4 bytes"))
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        f = s.makefile("rb")
        self.assertIn(b"101", f.readline())
        while f.readline() not in (b"\r\n", b""):
            pass

        def frame(op, data):
            mask = os.urandom(4)
            return bytes([0x80 | op, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

        s.sendall(frame(1, b"hi"))
        self.assertEqual(f.read(2 + 7), b"\x81\x07echo:hi")
        s.sendall(frame(8, struct.pack("!H", 1000)))
        self.assertEqual(f.read(4), b"\x88\x02\x03\xe8")
        s.close()

    def test_web_server_wait(self):
        port = _free_port()
        with self.assertRaisesRegex(TimeoutError, "did not start listening"):
            _webserve.start(lambda: None, {"type": "web_server", "port": port, "startup_timeout": 0.2})

    def test_fastapi_missing(self):
        try:
            import fastapi  # noqa: F401
            self.skipTest("FastAPI is installed here")
        except ImportError:
            pass
        with self.assertRaisesRegex(ImportError, "needs FastAPI in the function's image"):
            _webserve.start(lambda: None, {"type": "fastapi", "port": _free_port()})


if __name__ == "__main__":
    unittest.main()
