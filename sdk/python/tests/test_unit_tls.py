"""Unit tests of TLS to a split server: a pinned certificate fingerprint, a CA file."""

import json
import os
import socketserver
import ssl
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler

from gust import _config, _http, exception

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
CERT, KEY = os.path.join(HERE, "server.crt"), os.path.join(HERE, "server.key")
# The SHA-256 of server.crt's DER form (made by internal/tlsconf.LoadOrCreate).
FINGERPRINT = "446b671f7c7a88f5b5e999b2d3fd426b42260b244f5c04b598bf55d302c4d990"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class TLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        cls.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.url = f"https://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def client(self, **kw):
        c = _http.Client(_config.Config(server_url=kw.pop("url", self.url), token="tok", config_path=None, **kw))
        self.addCleanup(c.close)
        return c

    def test_pinned_fingerprint(self):
        c = self.client(tls_fingerprint=FINGERPRINT)
        self.assertEqual(c.health()["ok"], True)
        self.assertEqual(c.health()["ok"], True)  # a kept-alive connection

    def test_wrong_fingerprint_refused(self):
        c = self.client(tls_fingerprint="ab" * 32)
        with self.assertRaises(exception.ConnectionError) as cm:
            c.health()
        self.assertIn("pinned fingerprint", str(cm.exception))

    def test_ca_file(self):
        self.assertEqual(self.client(tls_ca_file=CERT).health()["ok"], True)

    def test_system_cas_refuse_a_self_signed_certificate(self):
        with self.assertRaises(exception.ConnectionError):
            self.client().health()

    def test_pin_needs_https(self):
        with self.assertRaises(exception.InvalidError):
            self.client(url="http://127.0.0.1:1", tls_fingerprint=FINGERPRINT)


class TLSConfigTest(unittest.TestCase):
    def setUp(self):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        self.path = os.path.join(d.name, "config.json")
        with open(self.path, "w") as f:
            json.dump({"active_profile": "prod", "profiles": {"prod": {
                "server_url": "https://gust.example:7420", "token": "t",
                "tls_fingerprint": FINGERPRINT.upper()}}}, f)

    def load(self, **env):
        env.setdefault("GUST_CONFIG", self.path)
        return _config.load(env)

    def test_profile_pin(self):
        self.assertEqual(self.load().tls_fingerprint, FINGERPRINT)

    def test_pin_stays_with_its_server(self):
        self.assertIsNone(self.load(GUST_SERVER_URL="http://127.0.0.1:7420").tls_fingerprint)
        self.assertEqual(self.load(GUST_SERVER_URL="https://gust.example:7420/").tls_fingerprint, FINGERPRINT)

    def test_environment(self):
        cfg = self.load(GUST_TLS_CA_FILE="/ca.pem")
        self.assertEqual((cfg.tls_fingerprint, cfg.tls_ca_file), (None, "/ca.pem"))
        cfg = self.load(GUST_TLS_FINGERPRINT="sha256:" + ":".join(FINGERPRINT[i:i + 2] for i in range(0, 64, 2)))
        self.assertEqual(cfg.tls_fingerprint, FINGERPRINT)
        with self.assertRaises(exception.InvalidError):
            self.load(GUST_TLS_FINGERPRINT="nope")


if __name__ == "__main__":
    unittest.main()
