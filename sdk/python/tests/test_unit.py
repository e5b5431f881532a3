"""Unit tests of the Python SDK that need no gust server (a fake HTTP server stands in where
sockets matter). Run: cd sdk/python && python3 -m unittest discover -s tests -p 'test_unit*.py'
"""

import base64
import contextlib
import io
import json
import os
import socket
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import gust
from gust import _config, _http, exception
from gust.container_process import ContainerProcess
from gust.io_streams import StreamReader, StreamWriter
from gust.sandbox import Sandbox, _env
from gust.sandbox_fs import FileInfo, FileType, SandboxFilesystem, _parse_time


def out(stream, data):
    if isinstance(data, str):
        data = data.encode()
    return {"stream": stream, "data": base64.b64encode(data).decode()}


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, path, data):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f)

    def test_default(self):
        c = _config.load({"HOME": self.dir.name})
        self.assertEqual(c.server_url, "http://127.0.0.1:7420")
        self.assertIsNone(c.token)
        self.assertIsNone(c.config_path)

    def test_home_file(self):
        path = os.path.join(self.dir.name, ".config", "gust", "config.json")
        self.write(path, {"server_url": "http://10.0.0.1:7420/", "token": "t1"})
        c = _config.load({"HOME": self.dir.name})
        self.assertEqual((c.server_url, c.token, c.config_path), ("http://10.0.0.1:7420", "t1", path))

    def test_xdg_file(self):
        path = os.path.join(self.dir.name, "xdg", "gust", "config.json")
        self.write(path, {"server_url": "http://xdg:1", "token": "t2"})
        c = _config.load({"HOME": "/nonexistent", "XDG_CONFIG_HOME": os.path.join(self.dir.name, "xdg")})
        self.assertEqual((c.server_url, c.token), ("http://xdg:1", "t2"))

    def test_gust_config_file(self):
        path = os.path.join(self.dir.name, "other.json")
        self.write(path, {"server_url": "http://other:2", "token": "t3"})
        c = _config.load({"HOME": self.dir.name, "GUST_CONFIG": path})
        self.assertEqual((c.server_url, c.token), ("http://other:2", "t3"))
        with self.assertRaises(exception.InvalidError):
            _config.load({"GUST_CONFIG": os.path.join(self.dir.name, "missing.json")})

    def test_env_overrides_file_per_field(self):
        path = os.path.join(self.dir.name, ".config", "gust", "config.json")
        self.write(path, {"server_url": "http://file:1", "token": "file-token"})
        c = _config.load({"HOME": self.dir.name, "GUST_TOKEN": "env-token"})
        self.assertEqual((c.server_url, c.token), ("http://file:1", "env-token"))
        c = _config.load({"HOME": self.dir.name, "GUST_SERVER_URL": "127.0.0.1:9"})
        self.assertEqual((c.server_url, c.token), ("http://127.0.0.1:9", "file-token"))

    def test_bad_file(self):
        path = os.path.join(self.dir.name, "bad.json")
        with open(path, "w") as f:
            f.write("{not json")
        with self.assertRaises(exception.InvalidError):
            _config.load({"GUST_CONFIG": path})


class ErrorMappingTest(unittest.TestCase):
    def test_kinds(self):
        cases = {
            "invalid": exception.InvalidError, "not_found": exception.NotFoundError,
            "conflict": exception.ConflictError, "too_large": exception.InvalidError,
            "unauthorized": exception.AuthError, "unavailable": exception.RemoteError,
            "internal": exception.RemoteError, "something_new": exception.RemoteError,
            "forbidden": exception.PermissionDeniedError, "quota_exceeded": exception.ResourceExhaustedError,
            "rate_limited": exception.ResourceExhaustedError,
        }
        for kind, cls in cases.items():
            e = exception.from_api(kind, "msg")
            self.assertIsInstance(e, cls, kind)
            self.assertIsInstance(e, exception.Error)
            self.assertEqual(str(e), "msg")

    def test_body(self):
        e = _http.error_from_body(409, b'{"error": {"kind": "conflict", "message": "name taken"}}')
        self.assertIsInstance(e, exception.ConflictError)
        self.assertEqual((str(e), e._kind, e._http_status), ("name taken", "conflict", 409))
        e = _http.error_from_body(404, b"404 page not found\n")
        self.assertIsInstance(e, exception.NotFoundError)
        self.assertIn("404 page not found", str(e))
        e = _http.error_from_body(502, b"")
        self.assertIsInstance(e, exception.RemoteError)
        e = _http.error_from_body(403, b'{"error": {"kind": "forbidden", "message": "role readonly may not create sandboxes"}}')
        self.assertIsInstance(e, exception.PermissionDeniedError)
        self.assertNotIsInstance(e, exception.AuthError)
        self.assertEqual((e._kind, e._http_status), ("forbidden", 403))
        e = _http.error_from_body(403, b'{"error": {"kind": "quota_exceeded", "message": "workspace ws-a is at its quota of 2 sandboxes"}}')
        self.assertIsInstance(e, exception.ResourceExhaustedError)
        self.assertIn("quota of 2 sandboxes", str(e))
        e = _http.error_from_body(429, b'{"error": {"kind": "rate_limited", "message": "over 10 requests/s"}}')
        self.assertIsInstance(e, exception.ResourceExhaustedError)
        self.assertEqual(e._kind, "rate_limited")
        # Without a JSON body, the status decides.
        self.assertIsInstance(_http.error_from_body(403, b"Forbidden"), exception.PermissionDeniedError)
        self.assertIsInstance(_http.error_from_body(429, b""), exception.ResourceExhaustedError)

    def test_hierarchy_matches_modal(self):
        self.assertTrue(issubclass(exception.ConflictError, exception.InvalidError))
        self.assertTrue(issubclass(exception.SandboxTimeoutError, exception.TimeoutError))
        self.assertTrue(issubclass(exception.ExecTimeoutError, exception.TimeoutError))
        self.assertTrue(issubclass(exception.ImageBuildError, exception.RemoteError))
        self.assertTrue(issubclass(exception.SandboxFilesystemNotFoundError, FileNotFoundError))
        self.assertTrue(issubclass(exception.SandboxFilesystemNotFoundError, exception.SandboxFilesystemError))
        self.assertIs(gust.Error, exception.Error)


class FakeStream:
    """Stands in for _http.NDJSONStream: yields lines, optionally failing after some."""

    def __init__(self, lines, fail_after=None, delay=0.0):
        self._lines = list(lines)
        self._fail_after = fail_after
        self._delay = delay
        self.closed = False

    def __iter__(self):
        for i, ln in enumerate(self._lines):
            if self._fail_after is not None and i == self._fail_after:
                raise exception.ConnectionError("stream broke")
            if self._delay:
                time.sleep(self._delay)
            yield ln

    def settimeout(self, t):
        pass

    def close(self):
        self.closed = True


class FakeClient:
    def __init__(self, streams=()):
        self.streams = list(streams)
        self.calls = []

    def stream(self, method, path, **kw):
        self.calls.append((method, path))
        if not self.streams:
            raise exception.NotFoundError("no such process")
        return self.streams.pop(0)

    def request(self, method, path, **kw):
        self.calls.append((method, path, kw))
        return 204, b""


def fake_sandbox(client=None, data=None):
    return Sandbox(data or {"sandbox_id": "sb-test", "status": "running", "workdir": "/root"}, client or FakeClient())


class DemuxTest(unittest.TestCase):
    def proc(self, lines, **kw):
        client = kw.pop("client", FakeClient())
        sb = fake_sandbox(client)
        return ContainerProcess(sb, "ex-1", FakeStream(lines, kw.pop("fail_after", None)), **kw)

    def test_routes_stdout_stderr_and_exit(self):
        p = self.proc([out("stdout", "a\n"), out("stderr", "e1\n"), out("stdout", "b\n"), {"exit_code": 3}])
        self.assertEqual(p.stdout.read(), "a\nb\n")
        self.assertEqual(p.stderr.read(), "e1\n")
        self.assertEqual(p.wait(), 3)
        self.assertEqual(p.returncode, 3)
        self.assertEqual(p.poll(), 3)

    def test_utf8_split_across_chunks(self):
        data = "héllo ✓\n".encode()
        p = self.proc([out("stdout", data[:2]), out("stdout", data[2:7]), out("stdout", data[7:]), {"exit_code": 0}])
        self.assertEqual(p.stdout.read(), "héllo ✓\n")
        p = self.proc([out("stdout", data[:2]), out("stdout", data[2:]), {"exit_code": 0}])
        self.assertEqual("".join(p.stdout), "héllo ✓\n")

    def test_invalid_utf8_replaced(self):
        p = self.proc([out("stdout", b"ok\xff\n"), {"exit_code": 0}])
        self.assertEqual(p.stdout.read(), "ok\ufffd\n")

    def test_by_line(self):
        p = self.proc([out("stdout", "one\ntw"), out("stdout", "o\nthr"), out("stdout", "ee"), {"exit_code": 0}],
                      by_line=True)
        self.assertEqual(list(p.stdout), ["one\n", "two\n", "three"])

    def test_bytes(self):
        p = self.proc([out("stdout", b"\x00\xff"), {"exit_code": 0}], text=False)
        self.assertEqual(p.stdout.read(), b"\x00\xff")
        self.assertEqual(p.stderr.read(), b"")

    def test_exec_timeout_is_124(self):
        p = self.proc([out("stdout", "partial"), {"exit_code": 124, "error": "exec timed out after 1 s"}])
        self.assertEqual(p.wait(), 124)
        self.assertEqual(p.stdout.read(), "partial")

    def test_resumes_broken_stream(self):
        client = FakeClient([FakeStream([out("stdout", "second\n"), {"exit_code": 0}])])
        p = self.proc([out("stdout", "first\n"), out("stdout", "never\n")], fail_after=1, client=client)
        self.assertEqual(p.stdout.read(), "first\nsecond\n")
        self.assertEqual(p.wait(), 0)
        self.assertEqual(client.calls, [("GET", "/v1/sandboxes/sb-test/execs/ex-1/output")])

    def test_stdout_to_local_stdout(self):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            p = self.proc([out("stdout", "printed\n"), {"exit_code": 0}], stdout=gust.StreamType.STDOUT)
            self.assertEqual(p.wait(), 0)
        self.assertEqual(buf.getvalue(), "printed\n")
        with self.assertRaises(exception.InvalidError):
            p.stdout.read()

    def test_returncode_before_exit(self):
        gate = threading.Event()

        class Slow(FakeStream):
            def __iter__(self):
                yield out("stdout", "x")
                gate.wait(5)
                yield {"exit_code": 0}

        p = ContainerProcess(fake_sandbox(), "ex-2", Slow([]))
        self.assertIsNone(p.poll())
        with self.assertRaises(exception.InvalidError):
            p.returncode
        gate.set()
        self.assertEqual(p.wait(), 0)

    def test_main_without_command_reads_empty(self):
        sb = fake_sandbox(FakeClient([]))  # GET .../execs/main/output answers 404
        self.assertEqual(sb.stdout.read(), "")
        self.assertEqual(list(sb.stderr), [])


class StreamWriterTest(unittest.TestCase):
    def test_write_drain_eof(self):
        sent = []
        w = StreamWriter(lambda data, eof: sent.append((data, eof)))
        w.drain()  # nothing to send
        w.write(b"a")
        w.write("é")
        w.write(bytearray(b"c"))
        w.drain()
        w.write_eof()
        with self.assertRaises(ValueError):
            w.write("late")
        w.drain()
        w.drain()
        self.assertEqual(sent, [(b"a\xc3\xa9c", False), (b"", True)])
        with self.assertRaises(TypeError):
            StreamWriter(lambda d, e: None).write(3)

    def test_reader_errors_after_data(self):
        r = StreamReader(1)
        r._feed(b"partial")
        r._close(exception.ConnectionError("lost"))
        self.assertEqual(next(r), "partial")
        with self.assertRaises(exception.ConnectionError):
            next(r)


class CreateValidationTest(unittest.TestCase):
    """Argument checks happen before anything is sent."""

    def test_rejects(self):
        with self.assertRaises(TypeError):
            Sandbox.create(app=gust.App("x"), no_such_option=1)
        with self.assertRaises(exception.InvalidError):
            Sandbox.create(gpu="H1000")  # unknown GPU types are refused before anything is sent
        with self.assertRaises(exception.InvalidError):
            Sandbox.create(gpu=["H100", "B2000"])
        with self.assertRaises(exception.InvalidError):
            Sandbox.create(volumes={"/data": object()})
        with self.assertRaises(exception.InvalidError):
            Sandbox.create("echo", 1)
        with self.assertRaises(exception.InvalidError):
            Sandbox.create(workdir="relative")
        with self.assertRaises(exception.InvalidError):
            Sandbox.create(image="debian")

    def test_exec_rejects(self):
        sb = fake_sandbox()
        with self.assertRaises(exception.InvalidError):
            sb.exec("echo", 1)
        with self.assertRaises(exception.InvalidError):
            sb.exec("ls", workdir="tmp")
        with self.assertRaises(ValueError):
            sb.exec("ls", text=False, bufsize=1)

    def test_env_merge(self):
        class Secret:
            env = {"A": "secret", "B": "b"}

        self.assertEqual(_env([Secret(), {"C": "c"}], {"A": "env", "D": None}), {"A": "env", "B": "b", "C": "c"})
        with self.assertRaises(exception.InvalidError):
            _env([object()], None)


class FilesUnitTest(unittest.TestCase):
    def test_parse_time(self):
        self.assertAlmostEqual(_parse_time("1970-01-01T00:00:01.123456789Z"), 1.123456, places=5)
        self.assertEqual(_parse_time(None), 0.0)

    def test_file_info(self):
        fi = FileInfo._from_api({"name": "f", "path": "/d/f", "type": "other", "size": 3, "mode": 0o644,
                                 "mtime": "2026-01-02T03:04:05Z"})
        self.assertEqual((fi.type, fi.permissions, fi.size), (FileType.UNKNOWN, "0644", 3))
        self.assertEqual(fi.mtime, fi.modified_time)
        self.assertEqual(FileInfo._from_api({"type": "directory"}).type, "directory")

    def test_write_text_argument_order(self):
        fs = SandboxFilesystem(fake_sandbox())
        calls = []
        fs._files.write_all = lambda path, data, make_parents=False: calls.append((path, data))
        fs.write_text("data", "/a")  # Modal's order
        fs.write_text("/b", "data")  # path first
        fs.write_bytes(b"x", "/c")
        fs.write_bytes("/d", b"y")
        self.assertEqual(calls, [("/a", b"data"), ("/b", b"data"), ("/c", b"x"), ("/d", b"y")])
        with self.assertRaises(exception.InvalidError):
            fs.read_text("relative")


class OutputTest(unittest.TestCase):
    def test_enable_output(self):
        from gust import output
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            output.log("hidden")
            with gust.enable_output():
                output.log("shown")
            output.log("hidden again")
        self.assertEqual(buf.getvalue(), "shown\n")


# A fake gust server for the HTTP layer.

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-gust"

    def log_message(self, *args):
        pass

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_one_request(self):
        self.server.ports.add(self.client_address[1])
        super().handle_one_request()

    def do_GET(self):
        if self.path == "/v1/health":
            return self._json(200, {"ok": True, "version": "test"})
        if self.headers.get("Authorization") != "Bearer tok":
            return self._json(401, {"error": {"kind": "unauthorized", "message": "wrong token"}})
        if self.path.startswith("/v1/sandboxes/sb-1"):
            return self._json(200, {"sandbox_id": "sb-1", "status": "running", "tags": {"a": "b"}})
        self._json(404, {"error": {"kind": "not_found", "message": f"nothing at {self.path}"}})

    def do_POST(self):
        body = json.loads(self._body() or b"{}")
        if self.path == "/v1/sandboxes/sb-1/execs":
            self.server.exec_bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk({"exec_id": "ex-9"})
            self._chunk(out("stdout", "first\n"))
            time.sleep(0.5)
            self._chunk(out("stderr", "oops\n"))
            self._chunk(out("stdout", "second\n"))
            self._chunk({"exit_code": 5})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        if self.path == "/v1/sandboxes/sb-1/terminate":
            return self._json(409, {"error": {"kind": "conflict", "message": "busy"}})
        self._json(400, {"error": {"kind": "invalid", "message": "bad request"}})


class HTTPTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.server.daemon_threads = True
        cls.server.ports = set()
        cls.server.exec_bodies = []
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def client(self, token="tok", url=None):
        c = _http.Client(_config.Config(server_url=url or self.url, token=token, config_path=None))
        self.addCleanup(c.close)
        return c

    def test_keep_alive_reuses_connection(self):
        c = self.client()
        self.server.ports.clear()
        for _ in range(10):
            self.assertEqual(c.health()["ok"], True)
            c.json("GET", "/v1/sandboxes/sb-1")
        self.assertEqual(len(self.server.ports), 1)

    def test_reconnects_after_server_closes(self):
        c = self.client()
        c.health()
        for conn in c._idle:  # the server went away from the idle connection
            conn.sock.shutdown(socket.SHUT_RDWR)
        self.assertEqual(c.health()["ok"], True)

    def test_errors(self):
        c = self.client()
        with self.assertRaises(exception.NotFoundError):
            c.json("GET", "/v1/nothing")
        with self.assertRaises(exception.AuthError):
            self.client(token="wrong").json("GET", "/v1/sandboxes/sb-1")
        with self.assertRaises(exception.AuthError):
            self.client(token=None).json("GET", "/v1/sandboxes/sb-1")

    def test_unreachable(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        url = f"http://127.0.0.1:{port}"
        with self.assertRaises(exception.ConnectionError) as cm:
            self.client(url=url).health()
        self.assertIn(f"cannot reach gust server at {url}", str(cm.exception))
        self.assertIn("gust up", str(cm.exception))

    def test_exec_streams_line_by_line(self):
        c = self.client()
        sb = Sandbox.from_id("sb-1", client=c)
        self.assertEqual(sb.get_tags(), {"a": "b"})
        start = time.monotonic()
        p = sb.exec("prog", "arg", env={"K": "V"}, workdir="/w", timeout=9, bufsize=1)
        self.assertEqual(p.object_id, "ex-9")
        self.assertEqual(next(iter(p.stdout)), "first\n")
        self.assertLess(time.monotonic() - start, 0.4)
        self.assertEqual(p.stdout.read(), "second\n")
        self.assertEqual(p.stderr.read(), "oops\n")
        self.assertEqual(p.wait(), 5)
        self.assertEqual(self.server.exec_bodies[-1], {"command": ["prog", "arg"], "stream": True, "env": {"K": "V"},
                                                       "workdir": "/w", "timeout": 9})
        # The stream's connection went back to the pool.
        self.server.ports.clear()
        c.health()
        c.health()
        self.assertEqual(len(self.server.ports), 1)

    def test_conflict_on_running_sandbox_stays_conflict(self):
        sb = Sandbox.from_id("sb-1", client=self.client())
        with self.assertRaises(exception.ConflictError) as cm:
            sb._call("POST", "/terminate")
        self.assertNotIsInstance(cm.exception, exception.SandboxTerminatedError)

    def test_get_client_follows_environment(self):
        with mock.patch.dict(os.environ, {"GUST_SERVER_URL": self.url, "GUST_TOKEN": "tok"}):
            a = _http.get_client()
            self.addCleanup(a.close)
            self.assertIs(a, _http.get_client())
            self.assertEqual(a.url, self.url)
        with mock.patch.dict(os.environ, {"GUST_SERVER_URL": "http://127.0.0.1:1", "GUST_TOKEN": "tok"}):
            b = _http.get_client()
            self.addCleanup(b.close)
            self.assertIsNot(b, a)


if __name__ == "__main__":
    unittest.main()


class SecretTest(unittest.TestCase):
    def test_from_dict(self):
        import gust
        s = gust.Secret.from_dict({"A": "1", "B": None})
        self.assertEqual(s.env, {"A": "1"})
        with self.assertRaises(gust.exception.InvalidError):
            gust.Secret.from_dict({"A": 1})

    def test_from_name_is_a_lazy_reference(self):
        import gust
        s = gust.Secret.from_name("x")  # nothing sent yet
        self.assertEqual(s._to_spec(), {"name": "x"})
        with self.assertRaises(gust.exception.InvalidError) as cm:
            s.env  # sandboxes need the values, which stay on the server
        self.assertIn("from_dict", str(cm.exception))


class ImageStepsTest(unittest.TestCase):
    def test_steps_chain_without_building(self):
        import gust
        base = gust.Image.debian_slim()
        img = base.run_commands("echo hi", ["a", "b"]).env({"X": "1"}).workdir("/w").pip_install("requests", find_links="/wheels")
        self.assertNotIn("steps", base._spec)  # each step returns a new image
        self.assertEqual([s["type"] for s in img._spec["steps"]], ["run_commands", "env", "workdir", "pip_install"])
        self.assertEqual(img._spec["steps"][0]["commands"], ["echo hi", "a", "b"])
        self.assertTrue(base.run_commands("x", force_build=True)._spec["force_build"])

    def test_unsupported_steps_say_why(self):
        import gust
        with self.assertRaises(gust.exception.InvalidError):
            gust.Image.from_registry("python:3.11", add_python="3.12")
        with self.assertRaises(gust.exception.InvalidError):
            gust.Image.debian_slim().pip_install_from_requirements("/no/such/requirements.txt")
        with self.assertRaises(gust.exception.InvalidError):
            gust.Image.debian_slim().env({"X": 1})


class LocalFilesTest(unittest.TestCase):
    def test_pack_is_deterministic_and_ignores(self):
        import tempfile, tarfile, io
        from gust import _local_files
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "pkg", "__pycache__"))
            with open(os.path.join(d, "pkg", "a.py"), "w") as f:
                f.write("x = 1\n")
            with open(os.path.join(d, "pkg", "__pycache__", "a.pyc"), "w") as f:
                f.write("junk")
            one = _local_files.pack(d, ignore=["**/__pycache__"])
            os.utime(os.path.join(d, "pkg", "a.py"), (1, 1))
            two = _local_files.pack(d, ignore=["**/__pycache__"])
            self.assertEqual(one, two)  # mtimes do not change the blob
            names = tarfile.open(fileobj=io.BytesIO(one)).getnames()
            self.assertEqual(names, ["pkg", "pkg/a.py"])


class DockerfileTest(unittest.TestCase):
    def _write(self, d, name, text):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_common_instructions_become_steps(self):
        import tempfile
        import gust
        with tempfile.TemporaryDirectory() as d:
            self._write(d, "app.py", "print(1)\n")
            df = self._write(d, "Dockerfile", "ARG G=hi\nFROM python:3.11-slim\nRUN echo $G > /g && \\\n    true\n"
                                              "ENV A=1 B=\"two words\"\nWORKDIR /app\nCOPY app.py .\nCMD [\"python\", \"app.py\"]\n")
            steps = gust.Image.from_dockerfile(df)._spec["steps"]
            self.assertEqual([s["type"] for s in steps], ["run_commands", "env", "workdir", "add_local"])
            self.assertTrue(steps[0]["commands"][0].startswith("echo hi > /g"))
            self.assertEqual(steps[1]["env"], {"A": "1", "B": "two words"})
            self.assertEqual(steps[3]["remote"], "/app/app.py")

    def test_unsupported_instruction_is_a_clear_error(self):
        import tempfile
        import gust
        with tempfile.TemporaryDirectory() as d:
            df = self._write(d, "Dockerfile", "FROM debian_slim\nHEALTHCHECK CMD true\n")
            with self.assertRaises(gust.exception.InvalidError) as cm:
                gust.Image.from_dockerfile(df)
            self.assertIn("Dockerfile:2", str(cm.exception))
            self.assertIn("HEALTHCHECK", str(cm.exception))
            df = self._write(d, "Dockerfile", "FROM nginx:latest\n")
            with self.assertRaises(gust.exception.InvalidError):
                gust.Image.from_dockerfile(df)


class DockerfileScratchTest(unittest.TestCase):
    def test_scratch_and_entrypoint(self):
        import tempfile
        import gust
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "bin.txt"), "w") as f:
                f.write("x")
            p = os.path.join(d, "Dockerfile")
            with open(p, "w") as f:
                f.write('FROM scratch\nCOPY bin.txt /bin.txt\nENTRYPOINT ["/app"]\n')
            im = gust.Image.from_dockerfile(p)
            self.assertEqual(im._spec["kind"], "scratch")
            self.assertEqual([s["type"] for s in im._spec["steps"]], ["add_local", "entrypoint"])
