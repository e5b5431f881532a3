"""Offline tests of the client side of functions: decorators and their checks, publishing,
calls (remote, map, spawn, generators, classes), code shipping and ``gust run``/``deploy``.

A fake gust server on 127.0.0.1 (an ephemeral port) speaks the HTTP API of docs/functions.md and
runs inputs in threads of this process, calling the user's Python functions directly.

Run: cd sdk/python && python3 -m unittest tests.test_unit_functions -v
"""

import bisect
import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import traceback
import unittest
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import gust
from gust import _cli, _code, _config, _http, exception
from gust._serialization import b64d, b64e, decode_args, deserialize, serialize
from gust.functions import _encode_input, _decode_output

SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# User code that the fake server runs.

class Boom(Exception):
    pass


_current = threading.local()


def flog(stream, text):
    """print() inside a fake container: a log line of the running input."""
    _current.server.add_line(_current.call, {"log": {"index": _current.index, "stream": stream, "data": text}})


class FakeStatus(Exception):
    """Raised by user code to make the fake server report another status (timeout, terminated)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def square(x):
    return x * x


def jittery_square(x):
    time.sleep(random.random() * 0.01)
    return x * x


def fail_on_3(x: int):
    if x == 3:
        raise Boom(f"bad input {x}")
    return x


def noisy(x):
    flog("stdout", f"hello {x}\n")
    flog("stderr", "careful\n")
    return x + 1


def add(a, b=0):
    return a + b


def length(x):
    return len(x)


def typed_add(a: int, b: int = 0):
    return a + b


def countdown(n: int):
    for i in range(n, 0, -1):
        yield i


def times_out(x):
    raise FakeStatus("timeout")


def unpicklable_error(x):
    class Local(Exception):  # cannot be pickled: the output carries no exc
        pass
    raise Local("local failure")


def slow(x):
    time.sleep(x)
    return "done"


class Model:
    size: int = gust.parameter(default=2)
    name: str = gust.parameter()

    @gust.enter()
    def load(self):
        self.offset = 100

    @gust.method()
    def predict(self, x):
        return x * self.size + self.offset

    @gust.method()
    def describe(self):
        return f"{self.name}:{self.size}"

    @gust.method()
    def stream(self, n):
        yield from range(n)


# The fake server.

class Call:
    def __init__(self, cid, fid, kind, method, params):
        self.id, self.fid, self.kind, self.method, self.params = cid, fid, kind, method, params
        self.lines = []  # NDJSON lines (bytes), in order
        self.output_pos = []  # index in lines of each output
        self.count = 0
        self.cancelled = False


class FakeGust:
    def __init__(self):
        self.cond = threading.Condition()
        self.blobs = {}
        self.requests = []  # (method, path, body)
        self.published = []
        self.functions = {}  # fid -> {"name", "spec", "app_id", "mode", "app_name"}
        self.calls = {}
        self.impls = {}  # function name -> python callable (or class)
        self.stopped = []
        self.image_builds = 0
        self.faults = []  # for the next call streams: ("timeout"|"break", after_n_lines)
        self.pool = ThreadPoolExecutor(16)
        self.instances = {}
        self.n = 0

    def new_id(self, prefix):
        with self.cond:
            self.n += 1
            return f"{prefix}-{self.n}"

    def add_line(self, call, obj, output=False):
        with self.cond:
            if output:
                obj["output"]["seq"] = len(call.output_pos)
                call.output_pos.append(len(call.lines))
            call.lines.append((json.dumps(obj) + "\n").encode())
            self.cond.notify_all()

    def enqueue(self, call, inputs):
        with self.cond:
            first = call.count
            call.count += len(inputs)
        for i, inp in enumerate(inputs):
            self.pool.submit(self.run_input, call, first + i, inp)
        return first

    def target(self, call):
        fn = self.functions[call.fid]
        impl = self.impls[fn["name"]]
        if fn["spec"]["kind"] != "class":
            return impl
        params = deserialize(b64d(call.params["data"])) if call.params else {}
        key = (fn["name"], tuple(sorted(params.items())))
        with self.cond:
            inst = self.instances.get(key)
            if inst is None:
                inst = impl()
                for k, v in params.items():
                    setattr(inst, k, v)
                for name in dir(impl):
                    if getattr(getattr(impl, name), "_gust_enter", False):
                        getattr(inst, name)()
                self.instances[key] = inst
        return getattr(inst, call.method)

    def run_input(self, call, index, inp):
        out = {"index": index, "data": None, "format": "pickle"}
        if call.cancelled:
            out.update(status="terminated", error="the call was cancelled")
            return self.add_line(call, {"output": out}, output=True)
        _current.server, _current.call, _current.index = self, call, index
        try:
            args, kwargs = decode_args(b64d(inp["args"]), inp["format"])
            r = self.target(call)(*args, **kwargs)
            if hasattr(r, "__next__"):
                for item in r:
                    self.add_line(call, {"item": {"index": index, "data": b64e(serialize(item)), "format": "pickle"}})
                r = None
            out.update(status="success", data=b64e(serialize(r)))
        except FakeStatus as e:
            out.update(status=e.status, error=f"input {e.status}")
        except Exception as e:  # noqa: BLE001
            try:
                exc_data = b64e(pickle.dumps(e))
            except Exception:  # noqa: BLE001
                exc_data = None
            out.update(status="failure", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                       exc=exc_data)
        self.add_line(call, {"output": out}, output=True)

    def function_doc(self, fid):
        fn = self.functions[fid]
        sp = fn["spec"]
        return {"function_id": fid, "app_id": fn["app_id"], "name": fn["name"], "kind": sp["kind"],
                "mode": fn["mode"], "state": "active", "methods": sp.get("methods"),
                "is_generator": sp.get("is_generator", False), "spec": sp,
                "stats": {"pending": 0, "running": 0, "containers": 1, "idle_containers": 1}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def g(self) -> FakeGust:
        return self.server.gust

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, kind, message):
        self._json(status, {"error": {"kind": kind, "message": message}})

    def _start_ndjson(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        self.g.requests.append(("GET", u.path, q))
        parts = u.path.strip("/").split("/")
        if parts[:2] == ["v1", "blobs"]:
            if parts[2] in self.g.blobs:
                return self._json(200, {"blob": parts[2]})
            return self._error(404, "not_found", "no such blob")
        if parts[:2] == ["v1", "calls"] and len(parts) == 4 and parts[3] == "stream":
            call = self.g.calls[parts[2]]
            self._start_ndjson()
            self.stream_call(call, int(q.get("from", 0)), int(q.get("until", -1)), float(q.get("timeout", 60)))
            return self._end()
        if parts[:2] == ["v1", "calls"] and len(parts) == 3:
            call = self.g.calls[parts[2]]
            return self._json(200, {"call_id": call.id, "function_id": call.fid, "count": call.count,
                                    "done": len(call.output_pos), "status": "pending"})
        if parts[:2] == ["v1", "functions"] and len(parts) == 3:
            return self._json(200, self.g.function_doc(parts[2]))
        if parts[:2] == ["v1", "apps"] and len(parts) == 3:
            docs = [self.g.function_doc(fid) for fid, fn in self.g.functions.items() if fn["app_id"] == parts[2]]
            return self._json(200, {"app_id": parts[2], "function_details": docs})
        self._error(404, "not_found", f"nothing at {u.path}")

    def stream_call(self, call, from_, until, timeout):
        g = self.g
        fault = g.faults.pop(0) if g.faults else None
        with g.cond:
            pos = 0
            if from_ > 0:
                pos = call.output_pos[from_ - 1] + 1 if from_ <= len(call.output_pos) else len(call.lines)
        deadline = time.monotonic() + timeout
        written = 0
        while True:
            with g.cond:
                lines = call.lines[pos:]
                pos = len(call.lines)
                sent = bisect.bisect_left(call.output_pos, pos)
                want = until if until >= 0 else call.count
            for ln in lines:
                if fault is not None and written >= fault[1]:
                    if fault[0] == "timeout":
                        return self._chunk(b'{"timeout": true}\n')
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    raise ConnectionAbortedError("fault: broken stream")
                self._chunk(ln)
                written += 1
            if sent >= want and want > 0:
                return
            with g.cond:
                if len(call.lines) == pos:
                    g.cond.wait(max(0.0, min(0.5, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return self._chunk(b'{"timeout": true}\n')

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionAbortedError, ConnectionResetError, BrokenPipeError):  # faults, clients going away
            self.close_connection = True

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        raw = self._body()
        parts = u.path.strip("/").split("/")
        g = self.g
        if u.path == "/v1/blobs":
            s = hashlib.sha256(raw).hexdigest()
            g.blobs[s] = raw
            g.requests.append(("POST", u.path, len(raw)))
            return self._json(201, {"blob": s})
        body = json.loads(raw or b"{}")
        g.requests.append(("POST", u.path, body))
        if u.path == "/v1/images":
            g.image_builds += 1
            self._start_ndjson()
            self._chunk(b'{"log": "building"}\n')
            self._chunk(json.dumps({"image": {"image_id": f"im-{g.image_builds}"}}).encode() + b"\n")
            return self._end()
        if u.path == "/v1/apps/lookup":
            return self._json(200, {"app_id": "ap-sb", "name": body["name"]})
        if u.path == "/v1/apps/publish":
            g.published.append(body)
            for sp in body["functions"]:
                if sp.get("gpu") == "B200":  # a server-side refusal
                    return self._error(400, "invalid", "no worker has gpu=B200")
            app_id = "ap-1"
            ids = {}
            for sp in body["functions"]:
                fid = g.new_id("fu")
                g.functions[fid] = {"name": sp["name"], "spec": sp, "app_id": app_id, "mode": body["mode"],
                                    "app_name": body["name"]}
                ids[sp["name"]] = fid
            return self._json(200, {"app_id": app_id, "app_name": body["name"] or "ephemeral-x",
                                    "mode": body["mode"], "functions": ids})
        if parts[:2] == ["v1", "apps"] and parts[-1] == "stop":
            g.stopped.append(body["functions"])
            return self._json(200, {"stopped": body["functions"]})
        if u.path == "/v1/functions/lookup":
            for fid, fn in g.functions.items():
                if fn["mode"] == "deployed" and fn["app_name"] == body["app_name"] and fn["name"] == body["name"]:
                    return self._json(200, g.function_doc(fid))
            return self._error(404, "not_found", f"app {body['app_name']!r} has no deployed function")
        if u.path == "/v1/secrets/lookup":
            if body["name"] == "known":
                return self._json(200, {"secret_id": "st-1", "name": "known", "keys": ["K"]})
            return self._error(404, "not_found", "no such secret")
        if parts[:2] == ["v1", "functions"] and parts[-1] == "calls":
            call = Call(g.new_id("fc"), parts[2], body["kind"], body.get("method"), body.get("params"))
            g.calls[call.id] = call
            first = g.enqueue(call, body["inputs"])
            head = {"call_id": call.id, "first_index": first, "count": len(body["inputs"])}
            if not body.get("stream"):
                return self._json(201, head)
            self._start_ndjson()
            self._chunk((json.dumps({"call": head}) + "\n").encode())
            self.stream_call(call, 0, -1, 300)
            return self._end()
        if parts[:2] == ["v1", "calls"] and parts[-1] == "inputs":
            call = g.calls[parts[2]]
            first = g.enqueue(call, body["inputs"])
            return self._json(200, {"call_id": call.id, "first_index": first, "count": len(body["inputs"])})
        if parts[:2] == ["v1", "calls"] and parts[-1] == "cancel":
            g.calls[parts[2]].cancelled = True
            return self._json(200, {})
        self._error(404, "not_found", f"nothing at {u.path}")


class ServerTest(unittest.TestCase):
    """Tests against the fake server; each gets a fresh one."""

    def setUp(self):
        self.gust = FakeGust()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.gust = self.gust
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.addCleanup(self.httpd.server_close)
        self.addCleanup(self.httpd.shutdown)
        self.addCleanup(self.gust.pool.shutdown, wait=False, cancel_futures=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.client = _http.Client(_config.Config(server_url=self.url, token="tok", config_path=None))
        self.addCleanup(self.client.close)
        # Code shipping has its own tests; here the functions live in this test module.
        p = mock.patch.object(_code, "package", return_value=(b"code-tar", "test_unit_functions"))
        p.start()
        self.addCleanup(p.stop)

    @contextlib.contextmanager
    def running(self, app, **impls):
        self.gust.impls.update(impls)
        with app.run(client=self.client):
            yield app


# Checks made before anything is sent.

class ValidationTest(unittest.TestCase):
    def setUp(self):
        self.app = gust.App("v")

    def bad(self, **kw):
        with self.assertRaises(exception.InvalidError, msg=str(kw)):
            self.app.function(**kw)(square)

    def test_gpu(self):
        for ok, spelled in (("h100", "H100"), ("A100-80GB:2", "A100-80GB:2"), ("any", "ANY"), ("t4:8", "T4:8"),
                            ("a10", "A10"), (["H100", "a100"], ["H100", "A100"])):
            f = self.app.function(gpu=ok)(square)
            self.assertEqual(f._options["gpu"], spelled)
        for bad in ("H101", "H100:0", "H100:9", "H100:x", "", [], ["H100", 3], 5):
            self.bad(gpu=bad)

    def test_resources_and_scaling(self):
        for kw in ({"cpu": 0}, {"cpu": -1}, {"cpu": (2, 1)}, {"cpu": (1, 2, 3)}, {"memory": 8}, {"memory": 1.5}, {"timeout": 0}, {"timeout": -5},
                   {"timeout": 0.5}, {"cpu": 0.005}, {"cpu": (0.001, 1)},
                   {"scaledown_window": 0}, {"min_containers": -1}, {"buffer_containers": -1},
                   {"max_containers": 0}, {"min_containers": 3, "max_containers": 2},
                   {"retries": 11}, {"retries": "3"}, {"allow_concurrent_inputs": 0},
                   {"image": "debian"}, {"secrets": [{"K": "V"}]}, {"env": {"K": 1}}, {"schedule": "daily"},
                   {"volumes": {"/data": object()}}, {"block_network": True, "outbound_cidr_allowlist": ["1.2.3.0/24"]},
                   {"outbound_domain_allowlist": "pypi.org"}, {"keep_warm": 2, "concurrency_limit": 1}):
            self.bad(**kw)
        with self.assertRaises(TypeError):
            self.app.function(no_such_option=1)(square)
        # Modal options that change nothing here are accepted.
        self.app.function(region="us-east", cloud="aws", enable_memory_snapshot=True, serialized=True,
                          _experimental_scheduler_placement=None, volumes={})(square)

    def test_network_options(self):
        f = self.app.function(block_network=True)(square)
        self.assertEqual(f._options["network"], {"block_network": True})
        f = self.app.function(outbound_cidr_allowlist=["203.0.113.0/24"], outbound_domain_allowlist=["pypi.org"])(square)
        self.assertEqual(f._options["network"], {"outbound_cidr_allowlist": ["203.0.113.0/24"],
                                                 "outbound_domain_allowlist": ["pypi.org"]})

    def test_old_modal_names(self):
        f = self.app.function(concurrency_limit=5, keep_warm=1, container_idle_timeout=120,
                              allow_concurrent_inputs=8)(square)
        o = f._options
        self.assertEqual((o["max_containers"], o["min_containers"], o["scaledown_window"], o["max_inputs"]),
                         (5, 1, 120, 8))

    def test_what_may_be_decorated(self):
        with self.assertRaises(exception.InvalidError):
            self.app.function()(42)
        with self.assertRaises(exception.InvalidError):
            self.app.function()(Model)
        with self.assertRaises(exception.InvalidError) as cm:
            class C:
                @self.app.function()
                def m(self):
                    pass
        self.assertIn("@app.cls()", str(cm.exception))
        with self.assertRaises(exception.InvalidError):
            self.app.function()(self.app.function()(square))
        with self.assertRaises(exception.InvalidError):
            self.app.cls()(square)
        with self.assertRaises(exception.InvalidError):
            @self.app.cls()
            class NoMethods:
                pass
        with self.assertRaises(exception.InvalidError):
            @self.app.cls()
            class InitArgs:
                def __init__(self, size):
                    pass

                @gust.method()
                def f(self):
                    pass

    def test_bare_decorators(self):
        f = self.app.function(square)
        self.assertIsInstance(f, gust.Function)
        self.assertIs(f._gust_raw_f, square)
        self.assertEqual(f.local(4), 16)
        self.assertEqual(f(5), 25)  # calling the Function runs it here

        @gust.method
        def m(self):
            pass
        self.assertTrue(m._gust_method)

    def test_markers(self):
        self.assertTrue(Model.predict._gust_method)
        self.assertTrue(Model.load._gust_enter)
        self.assertTrue(Model.__dict__["size"]._gust_parameter)
        self.assertEqual(Model.__dict__["size"].default, 2)
        self.assertIs(Model.__dict__["name"].default, gust._partial.MISSING)
        self.assertIs(pickle.loads(pickle.dumps(gust._partial.MISSING)), gust._partial.MISSING)

    def test_concurrent(self):
        @self.app.function()
        @gust.concurrent(max_inputs=10, target_inputs=4)
        def c(x):
            return x
        self.assertEqual((c._options["max_inputs"], c._options["target_inputs"]), (10, 4))
        above = gust.concurrent(max_inputs=3)(self.app.function()(add))  # also above @app.function
        self.assertEqual(above._options["max_inputs"], 3)
        for kw in ({"max_inputs": 0}, {"max_inputs": 2, "target_inputs": 3}, {"max_inputs": 1.5}):
            with self.assertRaises(exception.InvalidError):
                gust.concurrent(**kw)

    def test_retries(self):
        r = gust.Retries(max_retries=3, backoff_coefficient=1.5, initial_delay=0, max_delay=10)
        self.assertEqual(r._to_spec(), {"max_retries": 3, "backoff_coefficient": 1.5, "initial_delay": 0.0,
                                        "max_delay": 10.0})
        self.assertEqual(gust.Retries._from(2)._to_spec(), {"max_retries": 2, "backoff_coefficient": 1.0,
                                                             "initial_delay": 1.0, "max_delay": 60.0})
        for kw in ({"max_retries": -1}, {"max_retries": 11}, {"max_retries": 1, "backoff_coefficient": 0.5},
                   {"max_retries": 1, "initial_delay": 61}, {"max_retries": 1, "max_delay": 0.5}):
            with self.assertRaises(exception.InvalidError, msg=str(kw)):
                gust.Retries(**kw)

    def test_schedules(self):
        self.assertEqual(gust.Period(hours=1, minutes=30)._to_spec(), {"period": 5400.0})
        self.assertEqual(gust.Cron("0 9 * * 1")._to_spec(), {"cron": "0 9 * * 1", "timezone": "UTC"})
        self.assertEqual(gust.Cron("*/5 1-3 1,15 JAN-MAR mon-fri", timezone="Europe/Paris")._to_spec()["timezone"],
                         "Europe/Paris")
        gust.Cron("@daily")
        for bad in (lambda: gust.Period(), lambda: gust.Period(seconds=-1), lambda: gust.Period(months=1),
                    lambda: gust.Cron("* * * *"), lambda: gust.Cron("60 * * * *"), lambda: gust.Cron("* 24 * * *"),
                    lambda: gust.Cron("* * 0 * *"), lambda: gust.Cron("* * * 13 *"), lambda: gust.Cron("@sometimes"),
                    lambda: gust.Cron("a b c d e")):
            with self.assertRaises(exception.InvalidError):
                bad()

    def test_cls_parameters(self):
        M = self.app.cls()(Model)
        self.assertIs(M._gust_raw_cls, Model)
        self.assertEqual(M(name="a")._param_values, {"name": "a", "size": 2})
        self.assertEqual(M(name="a", size=5)._param_values, {"name": "a", "size": 5})
        for args, kw in (((), {}), ((), {"name": "a", "colour": "red"}), ((3,), {"name": "a"}),
                         ((), {"name": 3}), ((), {"name": "a", "size": "big"})):
            with self.assertRaises(exception.InvalidError, msg=str((args, kw))):
                M(*args, **kw)
        with self.assertRaises(AttributeError):
            M(name="a").load  # not a @gust.method
        # .local() makes one local instance: parameters set, @enter run.
        obj = M(name="a", size=3)
        self.assertEqual(obj.predict.local(2), 106)
        self.assertEqual(obj.describe.local(), "a:3")
        self.assertIs(obj._local_instance(), obj._local_instance())

    def test_remote_needs_a_running_app(self):
        f = self.app.function()(square)
        with self.assertRaises(exception.ExecutionError) as cm:
            f.remote(2)
        self.assertIn("app.run()", str(cm.exception))

    def test_in_a_container_nothing_is_sent(self):
        f = self.app.function()(square)
        with mock.patch.dict(os.environ, {"GUST_IS_REMOTE": "1", "GUST_SERVER_URL": "http://127.0.0.1:1"}):
            self.assertFalse(gust.is_local())
            with self.app.run():  # publishes nothing
                pass
            self.app.deploy()
            with self.assertRaises(ImportError):
                with gust.Image.debian_slim().imports():
                    import gust_no_such_module  # noqa: F401
        self.assertTrue(gust.is_local())
        with gust.Image.debian_slim().imports():
            import gust_no_such_module  # noqa: F401,F811
        self.assertIsNone(f._handle.function_id)

    def test_deploy_needs_a_name(self):
        app = gust.App()
        app.function()(square)
        with self.assertRaises(exception.InvalidError):
            app.deploy()


# Publishing and calling.

class PublishTest(ServerTest):
    def test_publish_body(self):
        app = gust.App("pub", secrets=[gust.Secret.from_dict({"A": "1"})])
        img = gust.Image.debian_slim().pip_install("numpy")
        f = app.function(gpu=["h100:2", "A100"], cpu=(2, 4), memory=(512, 2048), timeout=60, retries=2,
                         env={"X": "1", "Y": None}, secrets=[gust.Secret.from_name("known")],
                         min_containers=1, max_containers=4, buffer_containers=1, scaledown_window=30,
                         schedule=gust.Cron("0 9 * * 1"), image=img)(square)
        def ticker(n):
            yield n
        app.function(schedule=gust.Period(minutes=5))(gust.concurrent(max_inputs=8)(ticker))
        M = app.cls(gpu="L4")(Model)
        with self.running(app):
            self.assertTrue(f.object_id.startswith("fu-"))
            self.assertTrue(M.object_id.startswith("fu-"))
        body = self.gust.published[0]
        self.assertEqual((body["name"], body["mode"]), ("pub", "ephemeral"))
        self.assertEqual(body["code"], {"blob": hashlib.sha256(b"code-tar").hexdigest(), "module": "test_unit_functions"})
        self.assertIn(body["code"]["blob"], self.gust.blobs)
        specs = {s["name"]: s for s in body["functions"]}
        self.assertEqual(sorted(specs), ["Model", "square", "ticker"])
        self.assertEqual(specs["square"], {
            "name": "square", "kind": "function", "is_generator": False, "image_id": specs["square"]["image_id"],
            "cpu": 2, "cpu_limit": 4, "memory": 2048, "gpu": ["H100:2", "A100"], "timeout": 60,
            "retries": {"max_retries": 2, "backoff_coefficient": 1.0, "initial_delay": 1.0, "max_delay": 60.0},
            "env": {"X": "1"}, "secrets": [{"env": {"A": "1"}}, {"name": "known"}],
            "min_containers": 1, "max_containers": 4, "buffer_containers": 1, "scaledown_window": 30,
            "max_inputs": 1, "target_inputs": None, "schedule": {"cron": "0 9 * * 1", "timezone": "UTC"}})
        self.assertNotEqual(specs["square"]["image_id"], specs["ticker"]["image_id"])
        self.assertEqual(specs["ticker"]["image_id"], specs["Model"]["image_id"])  # one default image
        self.assertEqual(self.gust.image_builds, 2)
        c = specs["ticker"]
        self.assertEqual((c["is_generator"], c["max_inputs"], c["schedule"], c["retries"], c["gpu"], c["cpu"]),
                         (True, 8, {"period": 300.0}, None, None, None))
        m = specs["Model"]
        self.assertEqual((m["kind"], m["gpu"]), ("class", "L4"))
        self.assertEqual(m["methods"], {"describe": {"is_generator": False}, "predict": {"is_generator": False},
                                        "stream": {"is_generator": True}})
        # Stopped at the end of the block, with exactly its functions; then not callable.
        self.assertEqual(sorted(self.gust.stopped[0]), sorted(self.gust.functions))
        with self.assertRaises(exception.ExecutionError):
            f.remote(1)

    def test_server_refusal_comes_before_running(self):
        app = gust.App("pub")
        app.function(gpu="B200")(square)
        with self.assertRaises(exception.InvalidError):
            with self.running(app):
                self.fail("the block must not run")
        self.assertEqual(self.gust.stopped, [])

    def test_code_blob_uploaded_once(self):
        app = gust.App("pub")
        app.function()(square)
        with self.running(app):
            pass
        with self.running(app):
            pass
        uploads = [r for r in self.gust.requests if r[:2] == ("POST", "/v1/blobs")]
        self.assertEqual(len(uploads), 1)

    def test_deploy_and_from_name(self):
        app = gust.App("dep")
        app.function()(square)
        app.cls()(Model)
        self.gust.impls.update(square=square, Model=Model)
        app.deploy(client=self.client)
        self.assertEqual(self.gust.published[0]["mode"], "deployed")
        self.assertEqual(self.gust.stopped, [])
        f = gust.Function.from_name("dep", "square", client=self.client)
        self.assertEqual([r for r in self.gust.requests if r[1] == "/v1/functions/lookup"], [])  # lazy
        self.assertEqual(f.remote(7), 49)
        self.assertEqual(gust.Function.lookup("dep", "square", client=self.client).object_id, f.object_id)
        self.assertEqual(f.get_current_stats(), gust.functions.FunctionStats(backlog=0, num_total_runners=1))
        M = gust.Cls.from_name("dep", "Model", client=self.client)
        self.assertEqual(M(name="x", size=3).predict.remote(1), 103)
        with self.assertRaises(exception.NotFoundError):
            gust.Function.from_name("dep", "nope", client=self.client).remote(1)
        with self.assertRaises(exception.NotFoundError):
            gust.Function.from_name("nope", "square", client=self.client).hydrate()

    def test_secret_from_name_lookup(self):
        self.assertEqual(gust.Secret.from_name("known").hydrate(self.client)._data["secret_id"], "st-1")
        with self.assertRaises(exception.NotFoundError):
            gust.Secret.from_name("missing").hydrate(self.client)
        with self.assertRaises(exception.NotFoundError):
            gust.Secret.from_name("known", required_keys=["OTHER"]).hydrate(self.client)


class CallTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.app = gust.App("calls")
        a = self.app
        self.f = {name: a.function()(fn) for name, fn in (
            ("square", square), ("jittery_square", jittery_square), ("fail_on_3", fail_on_3), ("noisy", noisy),
            ("add", add), ("countdown", countdown), ("times_out", times_out),
            ("unpicklable_error", unpicklable_error), ("slow", slow), ("length", length))}
        self.M = a.cls()(Model)
        self.gust.impls.update({n: f._raw_f for n, f in self.f.items()}, Model=Model)
        cm = self.app.run(client=self.client)
        cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)

    def call_bodies(self):
        return [r[2] for r in self.gust.requests if r[0] == "POST" and r[1].endswith("/calls")]

    def test_remote_round_trip(self):
        self.assertEqual(self.f["square"].remote(12), 144)
        self.assertEqual(self.f["add"].remote("a", b="b"), "ab")
        self.assertEqual(self.f["add"].remote([1], b=[2]), [1, 2])
        body = self.call_bodies()[0]
        self.assertEqual((body["kind"], body["method"], body["params"], body["stream"]), ("remote", None, None, True))
        self.assertEqual(decode_args(b64d(body["inputs"][0]["args"])), ((12,), {}))

    def test_remote_aio(self):
        import asyncio
        self.assertEqual(asyncio.run(self.f["square"].remote.aio(3)), 9)

        async def collect():
            return [x async for x in self.f["square"].map.aio([1, 2, 3])]
        self.assertEqual(asyncio.run(collect()), [1, 4, 9])

    def test_exception_is_reraised_with_remote_traceback(self):
        with self.assertRaises(Boom) as cm:
            self.f["fail_on_3"].remote(3)
        self.assertEqual(str(cm.exception), "bad input 3")
        notes = "\n".join(getattr(cm.exception, "__notes__", []))
        self.assertIn("Remote traceback", notes)
        self.assertIn("in fail_on_3", notes)
        with self.assertRaises(exception.RemoteError) as cm:
            self.f["unpicklable_error"].remote(1)
        self.assertIn("local failure", str(cm.exception))
        self.assertIn("in unpicklable_error", "\n".join(cm.exception.__notes__))
        with self.assertRaises(exception.FunctionTimeoutError):
            self.f["times_out"].remote(1)
        self.assertTrue(issubclass(exception.FunctionTimeoutError, exception.TimeoutError))

    def test_logs_reach_local_stdout_and_stderr(self):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(self.f["noisy"].remote(1), 2)
        self.assertEqual(out.getvalue(), "hello 1\n")
        self.assertEqual(err.getvalue(), "careful\n")

    def test_unpicklable_arguments_fail_before_sending(self):
        n = len(self.gust.requests)
        with self.assertRaises(exception.SerializationError):
            self.f["square"].remote(threading.Lock())
        with self.assertRaises(exception.SerializationError):
            list(self.f["square"].map([1, threading.Lock()]))
        with self.assertRaises(exception.SerializationError):
            self.f["square"].spawn(threading.Lock())
        self.assertEqual(len(self.gust.requests), n)

    def test_generators(self):
        with self.assertRaises(exception.InvalidError) as cm:
            self.f["countdown"].remote(3)
        self.assertIn("remote_gen", str(cm.exception))
        self.assertEqual(list(self.f["countdown"].remote_gen(4)), [4, 3, 2, 1])
        with self.assertRaises(exception.InvalidError):
            self.f["square"].remote_gen(1)
        for call in (lambda: self.f["countdown"].map([1]), lambda: self.f["countdown"].for_each([1]),
                     lambda: self.f["countdown"].starmap([(1,)])):
            with self.assertRaises(exception.InvalidError) as cm:
                call()
            self.assertIn("generator function cannot be called", str(cm.exception))
        self.assertEqual(list(self.M(name="n").stream.remote_gen(3)), [0, 1, 2])

    def test_map_in_order_across_batches(self):
        n = 1300  # more than two batches of 500, sent while outputs are read
        self.assertEqual(list(self.f["jittery_square"].map(range(n))), [i * i for i in range(n)])
        bodies = self.call_bodies()
        self.assertEqual((bodies[-1]["kind"], len(bodies[-1]["inputs"])), ("map", 500))
        added = [r for r in self.gust.requests if r[1].endswith("/inputs")]
        self.assertEqual([len(r[2]["inputs"]) for r in added], [500, 300])

    def test_map_batches_stay_under_the_body_limit(self):
        # The server takes at most 64 MiB per request: large inputs go in smaller batches.
        big = [bytes(1 << 20)] * 40
        self.assertEqual(list(self.f["length"].map(big)), [1 << 20] * 40)
        batches = [r[2]["inputs"] for r in self.gust.requests
                   if r[0] == "POST" and (r[1].endswith("/inputs") or r[1].endswith("/calls"))]
        self.assertEqual(sum(len(b) for b in batches), 40)
        for b in batches:
            self.assertLessEqual(sum(len(i["args"]) for i in b), 16 << 20)
        n = len(self.gust.requests)
        self.f["length"].spawn_map(iter(big))
        # Only the input posts: a heartbeat may land in between.
        added = [r[2]["inputs"] for r in self.gust.requests[n:]
                 if r[0] == "POST" and (r[1].endswith("/inputs") or r[1].endswith("/calls"))]
        self.assertEqual(sum(len(b) for b in added), 40)
        self.assertGreater(len(added), 2)

    def test_map_is_lazy_over_its_input(self):
        seen = []

        def gen():
            for i in range(5):
                seen.append(i)
                yield i
        it = self.f["square"].map(gen())
        self.assertEqual(seen, [])
        self.assertEqual(next(it), 0)
        self.assertEqual(list(it), [1, 4, 9, 16])

    def test_map_unordered_and_starmap_and_kwargs(self):
        got = list(self.f["jittery_square"].map(range(50), order_outputs=False))
        self.assertEqual(sorted(got), [i * i for i in range(50)])
        self.assertEqual(list(self.f["add"].map([1, 2], [10, 20])), [11, 22])
        self.assertEqual(list(self.f["add"].starmap([(1, 2), (3, 4)])), [3, 7])
        self.assertEqual(list(self.f["add"].map([1, 2], kwargs={"b": 5})), [6, 7])
        self.assertEqual(list(self.f["square"].map([])), [])

    def test_map_exceptions(self):
        got = list(self.f["fail_on_3"].map(range(6), return_exceptions=True))
        self.assertEqual(got[:3], [0, 1, 2])
        self.assertIsInstance(got[3], Boom)
        self.assertEqual(got[4:], [4, 5])
        with self.assertRaises(Boom):
            list(self.f["fail_on_3"].map(range(6)))
        self.f["fail_on_3"].for_each(range(6), ignore_exceptions=True)
        with self.assertRaises(Boom):
            self.f["fail_on_3"].for_each(range(6))

    def test_map_throughput(self):
        n = 5000
        start = time.monotonic()
        total = sum(self.f["square"].map(range(n)))
        rate = n / (time.monotonic() - start)
        self.assertEqual(total, sum(i * i for i in range(n)))
        self.assertGreater(rate, 1000, f"{rate:.0f} inputs/s")

    def test_map_break_cancels_the_rest(self):
        it = self.f["square"].map(range(2000))
        self.assertEqual(next(it), 0)
        it.close()
        self.assertTrue(any(c.cancelled for c in self.gust.calls.values()))

    def test_stream_resumes_after_timeout_and_broken_connection(self):
        self.gust.faults = [("timeout", 1)]  # the call's stream stops after its first line
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(self.f["noisy"].remote(5), 6)
        self.assertEqual(out.getvalue(), "hello 5\n")  # the replayed log line is not printed twice
        streams = [r for r in self.gust.requests if r[0] == "GET" and r[1].endswith("/stream")]
        self.assertEqual(streams[-1][2]["from"], "0")
        self.gust.faults = [("timeout", 2)]  # a generator's items are not repeated after a resume
        self.assertEqual(list(self.f["countdown"].remote_gen(5)), [5, 4, 3, 2, 1])
        self.gust.faults = [("break", 3), ("timeout", 2)]
        self.assertEqual(list(self.f["square"].map(range(10))), [i * i for i in range(10)])
        streams = [r for r in self.gust.requests if r[0] == "GET" and r[1].endswith("/stream")]
        self.assertEqual([s[2]["from"] for s in streams[-2:]], ["3", "5"])

    def test_spawn_get_and_cancel(self):
        fc = self.f["slow"].spawn(0.5)
        self.assertTrue(fc.object_id.startswith("fc-"))
        with self.assertRaises(exception.TimeoutError):
            fc.get(timeout=0)
        with self.assertRaises(exception.TimeoutError):
            fc.get(timeout=0.1)
        with self.assertRaises(TimeoutError):  # Modal raises Python's own TimeoutError here
            fc.get(timeout=0.1)
        self.assertEqual(fc.get(), "done")
        self.assertEqual(fc.get(timeout=0), "done")
        again = gust.FunctionCall.from_id(fc.object_id, client=self.client)
        self.assertEqual(again.get(), "done")
        self.assertEqual(again.num_inputs(), 1)
        self.assertEqual(pickle.loads(pickle.dumps(fc)).object_id, fc.object_id)
        body = self.call_bodies()[-1]
        self.assertEqual((body["kind"], body["stream"]), ("spawn", False))
        calls = [self.f["square"].spawn(i) for i in range(4)]
        self.assertEqual(gust.functions.gather(*calls), [0, 1, 4, 9])
        with self.assertRaises(Boom):
            self.f["fail_on_3"].spawn(3).get()
        gen = self.f["countdown"].spawn(3)
        self.assertEqual(list(gen.get_gen()), [3, 2, 1])
        fc = self.f["slow"].spawn(1)
        fc.cancel()
        self.assertTrue(self.gust.calls[fc.object_id].cancelled)
        m = self.f["square"].spawn_map(range(600))
        self.assertEqual(m.num_inputs(), 600)
        self.assertEqual(m.get(index=599), 599 * 599)

    def test_class_methods(self):
        obj = self.M(name="m", size=4)
        self.assertEqual(obj.predict.remote(2), 108)
        self.assertEqual(obj.describe.remote(), "m:4")
        self.assertEqual(list(obj.predict.map([1, 2])), [104, 108])
        self.assertEqual(obj.predict.spawn(0).get(), 100)
        body = self.call_bodies()[0]
        self.assertEqual(body["method"], "predict")
        self.assertEqual(body["params"]["format"], "pickle")
        self.assertEqual(deserialize(b64d(body["params"]["data"])), {"name": "m", "size": 4})
        # The same parameters give the same payload (one container instance per distinct params).
        self.assertEqual(self.M(size=4, name="m").predict._params, obj.predict._params)

    def test_calls_from_inside_a_container(self):
        # The module as the runner imports it: same decorators, nothing published, ids found via the app.
        app = gust.App("calls")
        other = app.function()(square)
        me = self.f["add"].object_id
        env = {"GUST_IS_REMOTE": "1", "GUST_FUNCTION_ID": me, "GUST_SERVER_URL": self.url, "GUST_TOKEN": "tok"}
        with mock.patch.dict(os.environ, env):
            self.addCleanup(lambda: _http.get_client().close())
            self.assertEqual(other.remote(6), 36)
            self.assertEqual(other.object_id, self.f["square"].object_id)
        env.update(GUST_TOKEN="", XDG_CONFIG_HOME=tempfile.gettempdir() + "/gust-no-config")  # no config file
        with mock.patch.dict(os.environ, env):
            with self.assertRaises(exception.ExecutionError) as cm:
                gust.App("calls").function()(square).remote(1)
            self.assertIn("GUST_TOKEN", str(cm.exception))

    def test_functions_pass_as_arguments(self):
        f = pickle.loads(pickle.dumps(self.f["square"]))
        self.assertEqual(f.object_id, self.f["square"].object_id)


# Code shipping.

class CodeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        self.mods_before = set(sys.modules)
        self.addCleanup(self._unimport)
        self.addCleanup(setattr, _code, "_entrypoint", None)

    def _unimport(self):
        for m in set(sys.modules) - self.mods_before:
            del sys.modules[m]
        if self.dir in sys.path:
            sys.path.remove(self.dir)

    def write(self, rel, text):
        p = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(textwrap.dedent(text))
        return p

    def project(self):
        self.write("helpers.py", "def double(x):\n    return 2 * x\n")
        self.write("pkg/__init__.py", "")
        self.write("pkg/util.py", "import json\nK = 3\n")
        self.write("unused.py", "raise SystemExit('never imported')\n")
        return self.write("main.py", """
            import gust
            import helpers
            from pkg import util

            app = gust.App("code")

            @app.function()
            def f(x):
                return helpers.double(x) + util.K

            @app.cls()
            class M:
                @gust.method()
                def g(self):
                    return 1
            """)

    def test_tar_holds_the_local_modules(self):
        main = _cli.import_file(self.project())
        app = main.app
        objs = [(n, o, o._raw_f if isinstance(o, gust.Function) else o._raw_cls) for n, o in app._objects()]
        tar, module = _code.package(objs)
        self.assertEqual(module, "main")
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            members = t.getmembers()
            names = [m.name for m in members]
            self.assertEqual(names, ["helpers.py", "main.py", "pkg", "pkg/__init__.py", "pkg/util.py"])
            self.assertTrue(all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members))
            self.assertIn(b"def double", t.extractfile("helpers.py").read())
        self.assertEqual(_code.package(objs), (tar, module))  # deterministic

    def test_functions_in_several_modules_get_a_shim(self):
        self.write("funcs.py", """
            import gust
            app = gust.App("multi")

            @app.function()
            def f(x):
                return x
            """)
        main = _cli.import_file(self.write("main.py", """
            import gust
            import funcs
            app = gust.App("main")
            app.include(funcs.app)

            @app.function(name="renamed")
            def g(x):
                return x
            """))
        objs = [(n, o, o._raw_f) for n, o in main.app._objects()]
        self.assertEqual([n for n, _, _ in objs], ["f", "renamed"])
        tar, module = _code.package(objs)
        self.assertEqual(module, _code.SHIM_MODULE)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            shim = t.extractfile(_code.SHIM_MODULE + ".py").read().decode()
        self.assertIn("f = getattr(_importlib.import_module('funcs'), 'f')", shim)
        self.assertIn("renamed = getattr(_importlib.import_module('main'), 'g')", shim)

    def test_functions_must_be_top_level(self):
        main = _cli.import_file(self.write("main.py", """
            import gust
            app = gust.App("x")

            def make():
                @app.function()
                def inner(x):
                    return x
                return inner
            make()
            """))
        objs = [(n, o, o._raw_f) for n, o in main.app._objects()]
        with self.assertRaises(exception.InvalidError) as cm:
            _code.package(objs)
        self.assertIn("top level", str(cm.exception))

    def test_import_root_of_packages(self):
        self.assertEqual(_code.import_root("a.b", "/x/a/b.py"), "/x")
        self.assertEqual(_code.import_root("a", "/x/a/__init__.py"), "/x")
        self.assertEqual(_code.import_root("m", "/x/m.py"), "/x")

    @unittest.skipUnless(os.path.exists(os.path.join(SDK_DIR, "gust", "_runner.py")), "no runner yet")
    def test_runner_runs_the_shipped_code(self):
        """The code tar, the module name and the payloads, as the runner in a container sees them."""
        main = _cli.import_file(self.project())
        objs = [(n, o, o._raw_f if isinstance(o, gust.Function) else o._raw_cls) for n, o in main.app._objects()]
        tar, module = _code.package(objs)
        appdir = os.path.join(self.dir, "unpacked")
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(appdir, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        config = json.dumps({"module": module, "name": "f", "kind": "function", "max_inputs": 1})
        code = ("import sys; sys.path[:0] = [%r, %r]; import gust._runner as r; sys.exit(r.main())"
                % (SDK_DIR, appdir))
        env = dict(os.environ, GUST_IS_REMOTE="1", GUST_FUNCTION_ID="fu-x")
        p = subprocess.Popen([sys.executable, "-u", "-c", code, config], cwd=appdir, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            inp = dict(_encode_input((4,), {}), type="input", id="in-1", method=None, params=None)
            p.stdin.write(json.dumps(inp) + "\n")
            p.stdin.flush()
            output = None
            deadline = time.monotonic() + 20
            while output is None and time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("type") == "init_error":
                    self.fail(f"runner could not import the code: {msg}")
                if msg.get("type") == "output":
                    output = msg
            self.assertIsNotNone(output, p.stderr.read() if p.poll() is not None else "no output")
            self.assertEqual(_decode_output(output), (True, 11))
        finally:
            p.kill()
            p.wait()
            for s in (p.stdin, p.stdout, p.stderr):
                s.close()


# gust run / gust deploy

class CLIFlagsTest(unittest.TestCase):
    def test_flags_from_the_signature(self):
        def main(name: str, count: int = 2, ratio: float = 0.5, verbose: bool = False, untyped="x",
                 maybe: "int | None" = None, snake_case: int = 0):
            pass
        kw = _cli.parse_flags("p", main, ["--name", "n", "--count", "3", "--verbose", "--maybe", "4",
                                          "--snake-case", "5"])
        self.assertEqual(kw, {"name": "n", "count": 3, "ratio": 0.5, "verbose": True, "untyped": "x", "maybe": 4,
                              "snake_case": 5})
        kw = _cli.parse_flags("p", main, ["--name=n", "--no-verbose", "--ratio", "2", "--snake_case", "1"])
        self.assertEqual((kw["verbose"], kw["ratio"], kw["snake_case"]), (False, 2.0, 1))
        for bad in ([], ["--name", "n", "--count", "x"], ["--name", "n", "--other", "1"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                _cli.parse_flags("p", main, bad)
            self.assertEqual(cm.exception.code, 2)
            self.assertIn("usage: p", err.getvalue())

    def test_unsupported_type(self):
        def main(xs: list):
            pass
        with self.assertRaises(_cli.UsageError):
            _cli.parse_flags("p", main, [])


class CLITest(ServerTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        before = set(sys.modules)
        self.addCleanup(lambda: [sys.modules.pop(m) for m in set(sys.modules) - before])
        self.addCleanup(lambda: self.dir in sys.path and sys.path.remove(self.dir))
        self.addCleanup(setattr, _code, "_entrypoint", None)
        env = mock.patch.dict(os.environ, {"GUST_SERVER_URL": self.url, "GUST_TOKEN": "tok"})
        env.start()
        self.addCleanup(env.stop)
        self.addCleanup(lambda: _http.get_client().close())  # the client `gust run` used
        self.gust.impls.update(square=square, typed_add=typed_add, countdown=countdown, fail_on_3=fail_on_3)

    def write_app(self, name, body):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(f"import gust\nfrom {__name__} import square as _sq, typed_add as _add, countdown as _cd, "
                    "fail_on_3 as _f3\n" + textwrap.dedent(body))
        return p

    def cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = _cli.main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def test_run_local_entrypoint_with_flags(self):
        p = self.write_app("prog.py", """
            app = gust.App("prog")
            square = app.function(name="square")(_sq)

            @app.local_entrypoint()
            def main(x: int, twice: bool = False, label: str = "r"):
                r = square.remote(x)
                print(label, r * 2 if twice else r)
            """)
        self.assertEqual(self.cli("run", p, "--x", "3", "--twice", "--label", "got")[:2], (0, "got 18\n"))
        self.assertEqual(self.gust.published[-1]["mode"], "ephemeral")
        self.assertEqual(len(self.gust.stopped), 1)
        rc, out, err = self.cli("run", p)
        self.assertEqual(rc, 2)
        self.assertIn("--x", err)
        self.assertEqual(len(self.gust.published), 1)  # nothing published for bad flags

    def test_run_a_function_and_pick_by_name(self):
        p = self.write_app("prog2.py", """
            app = gust.App("prog2")
            add = app.function(name="typed_add")(_add)
            countdown = app.function(name="countdown")(_cd)
            fail_on_3 = app.function(name="fail_on_3")(_f3)
            """)
        self.assertEqual(self.cli("run", f"{p}::typed_add", "--a", "2", "--b", "5")[:2], (0, "7\n"))
        self.assertEqual(self.cli("run", f"{p}::app.countdown", "--n", "2")[:2], (0, "2\n1\n"))
        rc, out, err = self.cli("run", p)
        self.assertEqual(rc, 1)
        self.assertIn("several functions", err)
        rc, out, err = self.cli("run", f"{p}::fail_on_3", "--x", "3")
        self.assertEqual(rc, 1)
        self.assertIn("Boom: bad input 3", err)
        self.assertIn("Remote traceback", err)
        rc, out, err = self.cli("run", f"{p}::nothing")
        self.assertEqual((rc, err.count("\n")), (1, 1))
        self.assertNotIn("Traceback", err)

    def test_deploy(self):
        p = self.write_app("prog3.py", """
            app = gust.App("prog3")
            square = app.function(name="square")(_sq)
            add = app.function(name="typed_add")(_add)
            """)
        self.assertEqual(self.cli("deploy", p)[:2], (0, "Deployed app prog3: square, typed_add\n"))
        self.assertEqual(self.cli("deploy", p, "--name", "other")[:2], (0, "Deployed app other: square, typed_add\n"))
        self.assertEqual([b["name"] for b in self.gust.published], ["prog3", "other"])
        self.assertEqual(self.gust.published[0]["mode"], "deployed")

    def test_errors_are_one_line(self):
        self.assertEqual(self.cli("run", os.path.join(self.dir, "missing.py"))[0], 1)
        rc, out, err = self.cli("frobnicate")
        self.assertEqual(rc, 2)
        p = self.write_app("broken.py", "raise ValueError('at import')\n")
        rc, out, err = self.cli("run", p)
        self.assertEqual(rc, 1)
        self.assertIn("ValueError: at import", err)  # the user's own traceback


if __name__ == "__main__":
    unittest.main()
