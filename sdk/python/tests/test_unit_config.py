"""Unit tests of the client configuration: profiles, token id and secret, precedence."""

import json
import os
import socketserver
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler
from unittest import mock

from gust import _config, _http, exception

ID, SECRET = "tk-" + "a" * 20, "ts-" + "b" * 40


class ProfileConfigTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.path = os.path.join(self.dir.name, "config.json")

    def load(self, data, **env):
        if data is not None:
            with open(self.path, "w") as f:
                json.dump(data, f)
        env.setdefault("GUST_CONFIG", self.path)
        return _config.load(env)

    def test_table(self):
        two = {"active_profile": "b", "server_url": "http://flat:1", "token": "flat-tok",
               "profiles": {"a": {"server_url": "http://a:1", "token_id": "tk-a", "token_secret": "ts-a"},
                            "b": {"server_url": "http://b:2", "token_id": "tk-b", "token_secret": "ts-b"},
                            "legacy": {"token": "leg-tok"},
                            "nourl": {"token_id": "tk-n", "token_secret": "ts-n"}}}
        cases = [
            # name, data, env, (url, token_id, token_secret, token, profile)
            ("legacy flat", {"server_url": "http://f:1/", "token": "t"}, {},
             ("http://f:1", None, None, "t", None)),
            ("active profile", two, {}, ("http://b:2", "tk-b", "ts-b", None, "b")),
            ("GUST_PROFILE over active", two, {"GUST_PROFILE": "a"}, ("http://a:1", "tk-a", "ts-a", None, "a")),
            ("legacy token in profile", two, {"GUST_PROFILE": "legacy"},
             ("http://flat:1", None, None, "leg-tok", "legacy")),
            ("url falls back to flat", two, {"GUST_PROFILE": "nourl"}, ("http://flat:1", "tk-n", "ts-n", None, "nourl")),
            ("default without active", {"profiles": {"x": {"token": "x"}, "default": {"token": "d"}}}, {},
             (_config.DEFAULT_SERVER_URL, None, None, "d", "default")),
            ("the only profile", {"profiles": {"solo": {"server_url": "s:9", "token": "s"}}}, {},
             ("http://s:9", None, None, "s", "solo")),
            ("no profile chosen among many", {"token": "flat", "profiles": {"x": {"token": "x"}, "y": {"token": "y"}}}, {},
             (_config.DEFAULT_SERVER_URL, None, None, "flat", None)),
            ("env id+secret over profile", two, {"GUST_TOKEN_ID": ID, "GUST_TOKEN_SECRET": SECRET},
             ("http://b:2", ID, SECRET, None, "b")),
            ("env id+secret over GUST_TOKEN", two, {"GUST_TOKEN_ID": ID, "GUST_TOKEN_SECRET": SECRET, "GUST_TOKEN": "env"},
             ("http://b:2", ID, SECRET, None, "b")),
            ("env token over profile pair", two, {"GUST_TOKEN": "env"}, ("http://b:2", None, None, "env", "b")),
            ("env url over profile", two, {"GUST_SERVER_URL": "10.0.0.1:7420"}, ("http://10.0.0.1:7420", "tk-b", "ts-b", None, "b")),
            ("empty env is unset", two, {"GUST_TOKEN": "", "GUST_TOKEN_ID": "", "GUST_PROFILE": ""},
             ("http://b:2", "tk-b", "ts-b", None, "b")),
            ("profile pair over flat token", {"token": "flat", "profiles": {"default": {"token_id": "i", "token_secret": "s"}}}, {},
             (_config.DEFAULT_SERVER_URL, "i", "s", None, "default")),
            ("no file, env only", None, {"GUST_CONFIG": "", "HOME": "/nonexistent", "GUST_TOKEN_ID": ID, "GUST_TOKEN_SECRET": SECRET},
             (_config.DEFAULT_SERVER_URL, ID, SECRET, None, None)),
        ]
        for name, data, env, want in cases:
            with self.subTest(name):
                c = self.load(data, **env)
                self.assertEqual((c.server_url, c.token_id, c.token_secret, c.token, c.profile), want)

    def test_errors(self):
        cases = [
            ("id without secret in env", {}, {"GUST_TOKEN_ID": ID}, "GUST_TOKEN_SECRET"),
            ("secret without id in env", {}, {"GUST_TOKEN_SECRET": SECRET, "GUST_TOKEN": "t"}, "GUST_TOKEN_ID"),
            ("unknown GUST_PROFILE", {"profiles": {"a": {}}}, {"GUST_PROFILE": "zz"}, "GUST_PROFILE names the gust profile 'zz'"),
            ("unknown active_profile", {"active_profile": "q", "profiles": {"a": {}}}, {}, "active_profile names"),
            ("GUST_PROFILE without profiles", {"token": "t"}, {"GUST_PROFILE": "p"}, "profiles: none"),
            ("profile id without secret", {"profiles": {"default": {"token_id": "i"}}}, {}, "token_secret"),
            ("profiles not a map", {"profiles": []}, {}, "profiles"),
            ("profile not an object", {"profiles": {"a": "x"}}, {}, "profiles"),
            ("token not a string", {"token": 5}, {}, "'token' must be a string"),
            ("not an object", [1], {}, "JSON object"),
        ]
        for name, data, env, msg in cases:
            with self.subTest(name):
                with self.assertRaises(exception.InvalidError) as cm:
                    self.load(data, **env)
                self.assertIn(msg, str(cm.exception))

    def test_authorization_header(self):
        self.assertEqual(_config.Config("http://x", None, None, ID, SECRET).authorization, f"Bearer {ID}:{SECRET}")
        self.assertEqual(_config.Config("http://x", "op", None).authorization, "Bearer op")
        self.assertEqual(_config.Config("http://x", "op", None, ID, SECRET).authorization, f"Bearer {ID}:{SECRET}")
        self.assertIsNone(_config.Config("http://x", None, None).authorization)
        self.assertFalse(_config.Config("http://x", None, None).has_credentials)

    def test_no_credentials_says_what_to_set(self):
        c = self.load({"profiles": {"default": {"server_url": "http://h:1"}}})
        client = _http.Client(c)
        self.addCleanup(client.close)
        with self.assertRaises(exception.AuthError) as cm:
            client.json("GET", "/v1/whoami")
        msg = str(cm.exception)
        for want in ("GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_TOKEN", "gust token set", self.path, "'default'"):
            self.assertIn(want, msg)


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.auth.append(self.headers.get("Authorization"))
        body = json.dumps({"workspace_id": "ws-1", "token_id": ID}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class InContainerTest(unittest.TestCase):
    """Inside a function container the SDK reaches the worker's unix socket with the worker's token."""

    def test_unix_socket_with_token_id_and_secret(self):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        sock = os.path.join(d.name, "api.sock")
        srv = _UnixHTTPServer(sock, _Recorder)
        srv.auth = []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        env = {"GUST_SERVER_URL": "unix://" + sock, "GUST_TOKEN_ID": ID, "GUST_TOKEN_SECRET": SECRET,
               "GUST_TOKEN": "container", "GUST_CONFIG": "", "GUST_PROFILE": "",
               "XDG_CONFIG_HOME": os.path.join(d.name, "no-config")}
        with mock.patch.dict(os.environ, env):
            c = _http.get_client()
            self.addCleanup(c.close)
            self.assertEqual(c.json("GET", "/v1/whoami")["workspace_id"], "ws-1")
        self.assertEqual(srv.auth, [f"Bearer {ID}:{SECRET}"])


if __name__ == "__main__":
    unittest.main()
