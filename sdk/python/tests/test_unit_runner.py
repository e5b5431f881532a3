"""Offline tests of the function runner (gust/_runner.py).

Each test starts the runner as the worker does (``python3 -u -c "...import gust._runner as r;
sys.exit(r.main())" '<config>'``) on a module of user code written to a temporary directory, and
speaks the protocol of docs/functions.md ("Runner") over its stdin and stdout. The user code
uses plain marker attributes (``_gust_raw_f``, ``_gust_method``...), not gust's decorators.

Run: cd sdk/python && python3 -m unittest tests.test_unit_runner -v
"""

import base64
import contextlib
import io
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_MODULE = r'''
import asyncio
import os
import sys
import threading
import time

print("importing usermod")


class Wrapper:
    """Stands in for a Function made by @app.function."""
    def __init__(self, f):
        self._gust_raw_f = f

    def __call__(self, *args, **kwargs):
        raise RuntimeError("call .remote()")


def function(f):
    return Wrapper(f)


@function
def add(a, b=0):
    return a + b


def plain_add(a, b):
    return a + b


@function
def echo(*args, **kwargs):
    return [list(args), kwargs]


class MyError(Exception):
    pass


class Unloadable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


@function
def fail(x):
    raise MyError(f"bad {x}")  # the user's line


@function
def fail_unloadable():
    raise Unloadable(1, 2)


@function
def hello():
    print("hello from input")
    sys.stdout.write("partial")
    print("to stderr", file=sys.stderr)
    return 1


@function
def sub():
    os.system("echo hi-from-subprocess")
    os.write(2, b"raw-fd2\n")
    return 2


@function
def gen(n):
    for i in range(n):
        print(f"item {i}")
        yield i * i


@function
async def aadd(a, b):
    await asyncio.sleep(0.01)
    print("async print")
    return a + b


@function
async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@function
def sleeper(t):
    time.sleep(t)
    return t


@function
async def asleeper(t):
    await asyncio.sleep(t)
    return t


@function
def unpicklable():
    return threading.Lock()


@function
def not_json():
    return {1, 2}


@function
def sysexit():
    sys.exit(3)


@function
def start_thread():
    threading.Thread(target=time.sleep, args=(60,)).start()
    return "started"


@function
def remote_env():
    import subprocess
    stdin = subprocess.run(["cat"], capture_output=True, text=True, timeout=5).stdout
    return os.getpid(), os.environ.get("GUST_IS_REMOTE"), sys.argv, stdin


def method(f):
    f._gust_method = True
    return f


def enter(f):
    f._gust_enter = True
    return f


def exit_(f):
    f._gust_exit = True
    return f


class _Missing:
    pass


MISSING = _Missing()


class Param:
    _gust_parameter = True

    def __init__(self, default=MISSING):
        self.default = default


class ClsWrapper:
    def __init__(self, cls):
        self._gust_raw_cls = cls


class _Model:
    size = Param(default=1)
    name = Param()

    @enter
    def setup(self):
        self.entered = getattr(self, "entered", 0) + 1
        self.steps = ["setup"]
        time.sleep(0.1)

    @enter
    async def setup2(self):
        self.steps.append("setup2")

    @method
    def predict(self, x):
        return {"size": self.size, "name": self.name, "x": x, "steps": self.steps,
                "entered": self.entered, "obj": id(self)}

    @method
    async def apredict(self, x):
        await asyncio.sleep(0)
        return {"name": self.name, "x": x, "obj": id(self)}

    def helper(self):  # not marked: still callable
        return "helped"

    @exit_
    def done(self):
        print("exiting", self.name)
        with open(os.environ["RUNNER_TEST_EXIT_FILE"], "a") as f:
            f.write(f"{self.name}:{self.size}\n")


Model = ClsWrapper(_Model)


class _Inner:
    k = Param(default=2)

    @enter
    def setup(self):
        self.at_enter = self.one.local(1)  # Modal's self.method.local(), already in @enter

    @method
    def one(self, x):
        return x * self.k

    @method
    def both(self, x):
        return [self.at_enter, self.one.local(x), self.one(x), self.one.remote(x)]


class _InnerHandle(ClsWrapper):
    """The module's Cls: self.method.remote() goes through it, with the instance's parameters."""

    def __call__(self, **params):
        class Obj:
            class one:
                @staticmethod
                def remote(x):
                    return ["remote", params, x]
        return Obj()


Inner = _InnerHandle(_Inner)


class Plain:
    def __init__(self):
        self.x = 5

    def get(self):
        return self.x


class OldStyle:
    def __init__(self, n):
        self.n = n

    def get(self):
        return self.n


@function
def chatty(tag):
    for i in range(5):
        print(f"{tag}-{i}")
        time.sleep(0.01)
    return tag


@function
async def achatty(tag):
    for i in range(5):
        print(f"{tag}-{i}")
        await asyncio.sleep(0.01)
    return tag


class BadEnter:
    count = 0

    @enter
    def setup(self):
        BadEnter.count += 1
        raise RuntimeError(f"enter failed {BadEnter.count}")

    @method
    def run(self):
        return "never"


not_a_function = 42
'''

BROKEN_MODULE = r'''
print("about to fail")
import does_not_exist_anywhere
'''


def b64(b):
    return base64.b64encode(b).decode()


def pargs(*args, **kwargs):
    return b64(pickle.dumps((args, kwargs), protocol=4))


def jargs(*args, **kwargs):
    return b64(json.dumps({"args": list(args), "kwargs": kwargs}).encode())


def unpickle(s):
    return pickle.loads(base64.b64decode(s))


class Runner:
    """A runner subprocess and the protocol messages it sent."""

    def __init__(self, tmpdir, name, kind="function", max_inputs=1, module="usermod", env=None, config_extra=None):
        code = ("import sys; sys.path[:0] = [%r, %r]; import gust._runner as r; sys.exit(r.main())"
                % (SDK_DIR, tmpdir))
        config = json.dumps({"module": module, "name": name, "kind": kind, "max_inputs": max_inputs, **(config_extra or {})})
        full_env = dict(os.environ)
        full_env.pop("GUST_IS_REMOTE", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", code, config], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmpdir, env=full_env)
        self.messages = []
        self.cond = threading.Condition()
        self.stderr = b""
        self._n = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.cond:
                self.messages.append(msg)
                self.cond.notify_all()
        with self.cond:
            self.messages.append({"type": "<eof>"})
            self.cond.notify_all()

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def send(self, msg):
        self.send_raw(json.dumps(msg).encode() + b"\n")

    def send_raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_for(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; messages so far: {self.messages[-20:]}; stderr: {self.stderr!r}")
                self.cond.wait(left)

    def wait_count(self, t, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for m in self.messages if m.get("type") == t) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {n} {t} messages")
                self.cond.wait(left)

    def wait_type(self, t, timeout=10):
        return self.wait_for(lambda m: m.get("type") == t, timeout)

    def ready(self):
        m = self.wait_for(lambda m: m.get("type") in ("ready", "init_error", "<eof>"))
        if m["type"] != "ready":
            raise AssertionError(f"runner not ready: {m}; stderr: {self.stderr!r}")
        return self

    def new_id(self):
        self._n += 1
        return f"in-{self._n}"

    def submit(self, args=None, fmt="pickle", method=None, params=None, iid=None):
        iid = iid or self.new_id()
        self.send({"type": "input", "id": iid, "args": pargs() if args is None else args, "format": fmt,
                   "method": method, "params": params})
        return iid

    def output(self, iid, timeout=10):
        return self.wait_for(lambda m: m.get("type") == "output" and m.get("id") == iid, timeout)

    def call(self, *args, fmt="pickle", method=None, params=None, **kwargs):
        args = jargs(*args, **kwargs) if fmt == "json" else pargs(*args, **kwargs)
        return self.output(self.submit(args, fmt=fmt, method=method, params=params))

    def value(self, *args, **kwargs):
        out = self.call(*args, **kwargs)
        if out["status"] != "success":
            raise AssertionError(f"input failed: {out['error']}\n{out['traceback']}")
        return unpickle(out["data"]) if out["data"] is not None else None

    def of(self, iid, t=None):
        with self.cond:
            return [m for m in self.messages if m.get("id") == iid and (t is None or m["type"] == t)]

    def shutdown(self, timeout=10):
        try:
            self.send({"type": "shutdown"})
        except (BrokenPipeError, ValueError):
            pass
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass


class RunnerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = cls._tmp.name
        with open(os.path.join(cls.dir, "usermod.py"), "w") as f:
            f.write(textwrap.dedent(USER_MODULE))
        with open(os.path.join(cls.dir, "broken.py"), "w") as f:
            f.write(BROKEN_MODULE)
        sys.path.insert(0, cls.dir)  # to unpickle the user's exceptions

    @classmethod
    def tearDownClass(cls):
        sys.path.remove(cls.dir)
        sys.modules.pop("usermod", None)
        cls._tmp.cleanup()

    def start(self, name, **kw):
        r = Runner(self.dir, name, **kw)
        self.addCleanup(r.close)
        return r

    # -------------------------------------------------------------- basics

    def test_ready_success_and_import_logs(self):
        r = self.start("add").ready()
        with r.cond:
            first = list(r.messages)
        logs = [m for m in first if m["type"] == "log"]
        self.assertTrue(any(m["data"] == "importing usermod\n" and m["id"] is None and m["stream"] == "stdout"
                            for m in logs), first)
        self.assertLess(first.index(next(m for m in logs if "importing" in m["data"])),
                        first.index({"type": "ready"}))
        self.assertEqual(r.value(1, 2), 3)
        self.assertEqual(r.value(1, b=5), 6)
        out = r.call(1, 2)
        self.assertEqual(out["format"], "pickle")
        self.assertIsNone(out["error"])
        self.assertIsNone(out["exc"])
        self.assertEqual(r.shutdown(), 0)

    def test_plain_function_and_remote_env(self):
        r = self.start("plain_add").ready()
        self.assertEqual(r.value(2, 3), 5)
        self.assertEqual(r.shutdown(), 0)

    def test_args_kwargs(self):
        r = self.start("echo").ready()
        self.assertEqual(r.value(1, "two", k="v", n=None), [[1, "two"], {"k": "v", "n": None}])
        self.assertEqual(r.value(), [[], {}])

    def test_failure(self):
        r = self.start("fail").ready()
        out = r.call(7)
        self.assertEqual(out["status"], "failure")
        self.assertEqual(out["error"], "MyError: bad 7")
        self.assertIsNone(out["data"])
        tb = out["traceback"]
        self.assertTrue(tb.startswith("Traceback (most recent call last):"), tb)
        self.assertIn('raise MyError(f"bad {x}")  # the user\'s line', tb)
        self.assertIn("usermod.py", tb)
        self.assertNotIn("_runner.py", tb)
        with contextlib.redirect_stdout(io.StringIO()):  # importing usermod here prints
            e = unpickle(out["exc"])
        self.assertEqual(type(e).__name__, "MyError")
        self.assertEqual(str(e), "bad 7")
        # The runner goes on.
        self.assertEqual(r.call(8)["error"], "MyError: bad 8")

    def test_failure_exception_not_loadable(self):
        r = self.start("fail_unloadable").ready()
        out = r.call()
        self.assertEqual(out["status"], "failure")
        self.assertEqual(out["error"], "Unloadable: 1/2")
        self.assertIsNone(out["exc"])

    def test_system_exit_fails_only_the_input(self):
        r = self.start("sysexit").ready()
        out = r.call()
        self.assertEqual(out["status"], "failure")
        self.assertEqual(out["error"], "SystemExit: 3")
        self.assertEqual(r.call()["status"], "failure")
        self.assertIsNone(r.proc.poll())
        self.assertEqual(r.shutdown(), 0)

    def test_unpicklable_result(self):
        r = self.start("unpicklable").ready()
        out = r.call()
        self.assertEqual(out["status"], "failure")
        self.assertTrue(out["error"].startswith("SerializationError: "), out["error"])

    # -------------------------------------------------------------- logs

    def test_print_becomes_logs_before_output(self):
        r = self.start("hello").ready()
        iid = r.submit()
        r.output(iid)
        msgs = r.of(iid)
        self.assertEqual(msgs[-1]["type"], "output")
        logs = [m for m in msgs if m["type"] == "log"]
        stdout = "".join(m["data"] for m in logs if m["stream"] == "stdout")
        stderr = "".join(m["data"] for m in logs if m["stream"] == "stderr")
        self.assertEqual(stdout, "hello from input\npartial")
        self.assertEqual(stderr, "to stderr\n")

    def _attribution(self, name):
        r = self.start(name, max_inputs=4).ready()
        ids = {r.submit(pargs(tag)): tag for tag in ("a", "b", "c", "d")}
        for iid, tag in ids.items():
            r.output(iid)
            text = "".join(m["data"] for m in r.of(iid, "log"))
            self.assertEqual(text, "".join(f"{tag}-{i}\n" for i in range(5)))

    def test_concurrent_inputs_logs_attribution(self):
        self._attribution("chatty")

    def test_concurrent_async_inputs_logs_attribution(self):
        self._attribution("achatty")

    def test_subprocess_output_captured(self):
        r = self.start("sub").ready()
        iid = r.submit()
        out = r.output(iid)
        self.assertEqual(unpickle(out["data"]), 2)
        msgs = r.of(iid)
        self.assertEqual(msgs[-1]["type"], "output")
        logs = [m for m in msgs if m["type"] == "log"]
        self.assertIn("hi-from-subprocess\n", "".join(m["data"] for m in logs if m["stream"] == "stdout"))
        self.assertIn("raw-fd2\n", "".join(m["data"] for m in logs if m["stream"] == "stderr"))

    def test_bad_protocol_lines_are_reported_and_ignored(self):
        r = self.start("add").ready()
        r.send_raw(b"this is not json\n")
        r.send({"type": "bogus"})
        r.send_raw(b"\n")
        self.assertEqual(r.value(2, 2), 4)
        errs = [m for m in r.messages if m["type"] == "log" and m["stream"] == "stderr" and m["id"] is None]
        self.assertTrue(any("not JSON" in m["data"] for m in errs), errs)
        self.assertTrue(any("bogus" in m["data"] for m in errs), errs)

    # -------------------------------------------------------------- generators, async

    def test_generator(self):
        r = self.start("gen").ready()
        iid = r.submit(pargs(4))
        out = r.output(iid)
        self.assertEqual(out["status"], "success")
        self.assertIsNone(out["data"])
        msgs = r.of(iid)
        items = [unpickle(m["data"]) for m in msgs if m["type"] == "item"]
        self.assertEqual(items, [0, 1, 4, 9])
        # Each item's print comes before the item.
        kinds = [(m["type"], m.get("data") if m["type"] == "log" else None) for m in msgs]
        self.assertEqual(kinds[0], ("log", "item 0\n"))
        self.assertEqual(kinds[1][0], "item")
        self.assertEqual(msgs[-1]["type"], "output")

    def test_async_function(self):
        r = self.start("aadd").ready()
        iid = r.submit(pargs(2, 3))
        out = r.output(iid)
        self.assertEqual(unpickle(out["data"]), 5)
        logs = r.of(iid, "log")
        self.assertEqual([m["data"] for m in logs], ["async print\n"])

    def test_async_generator(self):
        r = self.start("agen").ready()
        iid = r.submit(pargs(3))
        out = r.output(iid)
        self.assertEqual(out["status"], "success")
        self.assertEqual([unpickle(m["data"]) for m in r.of(iid, "item")], [0, 1, 2])

    def _concurrent(self, name):
        r = self.start(name, max_inputs=4).ready()
        t0 = time.monotonic()
        ids = [r.submit(pargs(0.3)) for _ in range(4)]
        for iid in ids:
            self.assertEqual(r.output(iid)["status"], "success")
        return time.monotonic() - t0

    def test_concurrency_threads(self):
        self.assertLess(self._concurrent("sleeper"), 1.0)

    def test_concurrency_async(self):
        self.assertLess(self._concurrent("asleeper"), 1.0)

    def test_async_max_inputs(self):
        r = self.start("asleeper", max_inputs=2).ready()
        t0 = time.monotonic()
        ids = [r.submit(pargs(0.2)) for _ in range(4)]
        for iid in ids:
            r.output(iid)
        self.assertGreaterEqual(time.monotonic() - t0, 0.38)

    # -------------------------------------------------------------- formats

    def test_json_format(self):
        r = self.start("add").ready()
        out = r.call(1, 2, fmt="json")
        self.assertEqual(out["status"], "success")
        self.assertEqual(out["format"], "json")
        self.assertEqual(json.loads(base64.b64decode(out["data"])), 3)
        out = r.call(1, "x", fmt="json")
        self.assertEqual(out["status"], "failure")
        self.assertTrue(out["error"].startswith("TypeError"), out["error"])
        self.assertIsNone(out["exc"])

    def test_json_not_serialisable(self):
        r = self.start("not_json").ready()
        out = r.call(fmt="json")
        self.assertEqual(out["status"], "failure")
        self.assertTrue(out["error"].startswith("SerializationError: "), out["error"])
        self.assertIn("JSON", out["error"])
        self.assertIsNone(out["exc"])

    # -------------------------------------------------------------- classes

    def test_class_params_enter_exit(self):
        exit_file = os.path.join(self.dir, "exits.txt")
        if os.path.exists(exit_file):
            os.remove(exit_file)
        r = self.start("Model", kind="class", max_inputs=4, env={"RUNNER_TEST_EXIT_FILE": exit_file}).ready()

        def params(**kw):
            return {"data": b64(pickle.dumps(kw, protocol=4)), "format": "pickle"}

        pa, pb = params(name="a"), params(name="b", size=3)
        # Concurrent first inputs for one instance: it is made once.
        ids = [r.submit(pargs(i), method="predict", params=pa) for i in range(3)]
        outs = [unpickle(r.output(i)["data"]) for i in ids]
        self.assertEqual({o["obj"] for o in outs}, {outs[0]["obj"]})
        for i, o in enumerate(outs):
            self.assertEqual(o["x"], i)
            self.assertEqual((o["name"], o["size"], o["entered"]), ("a", 1, 1))
            self.assertEqual(o["steps"], ["setup", "setup2"])
        b = r.value(10, method="predict", params=pb)
        self.assertEqual((b["name"], b["size"], b["entered"]), ("b", 3, 1))
        self.assertNotEqual(b["obj"], outs[0]["obj"])
        # An async method of the same instance.
        ab = r.value(11, method="apredict", params=pb)
        self.assertEqual((ab["name"], ab["obj"]), ("b", b["obj"]))
        # A method without the marker still runs.
        self.assertEqual(r.value(method="helper", params=pa), "helped")
        # Missing / unknown parameters, unknown methods.
        out = r.call(1, method="predict", params=None)
        self.assertEqual(out["status"], "failure")
        self.assertIn("'name'", out["error"])
        out = r.call(1, method="predict", params=params(name="c", colour="red"))
        self.assertEqual(out["status"], "failure")
        self.assertIn("'colour'", out["error"])
        out = r.call(1, method="nope", params=pa)
        self.assertEqual(out["status"], "failure")
        self.assertIn("'nope'", out["error"])
        out = r.call(1, method="__init__", params=pa)
        self.assertEqual(out["status"], "failure")

        self.assertEqual(r.shutdown(), 0)
        with open(exit_file) as f:
            self.assertEqual(sorted(f.read().split()), ["a:1", "b:3"])
        exiting = [m for m in r.messages if m["type"] == "log" and m["data"].startswith("exiting")]
        self.assertEqual(len(exiting), 2)
        self.assertTrue(all(m["id"] is None for m in exiting))

    def test_methods_call_each_other_as_in_modal(self):
        r = self.start("Inner", kind="class").ready()
        p = {"data": b64(pickle.dumps({"k": 3}, protocol=4)), "format": "pickle"}
        self.assertEqual(r.value(5, method="both", params=p), [3, 15, 15, ["remote", {"k": 3}, 5]])
        self.assertEqual(r.value(5, method="one", params=p), 15)

    def test_plain_class(self):
        r = self.start("Plain", kind="class").ready()
        self.assertEqual(r.value(method="get"), 5)

    def test_old_style_class_init_takes_the_parameters(self):
        r = self.start("OldStyle", kind="class").ready()
        p = {"data": b64(pickle.dumps({"n": 4}, protocol=4)), "format": "pickle"}
        self.assertEqual(r.value(method="get", params=p), 4)
        out = r.call(method="get", params=None)
        self.assertEqual(out["status"], "failure")
        self.assertIn("TypeError", out["error"])

    def test_enter_failure(self):
        r = self.start("BadEnter", kind="class", max_inputs=2).ready()
        outs = [r.call(method="run") for _ in range(3)]
        for out in outs:
            self.assertEqual(out["status"], "failure")
            self.assertEqual(out["error"], "RuntimeError: enter failed 1")
            self.assertIn("raise RuntimeError", out["traceback"])
            self.assertIsNotNone(out["exc"])

    # -------------------------------------------------------------- start and stop

    def test_import_error(self):
        r = self.start("f", module="broken")
        m = r.wait_type("init_error")
        self.assertEqual(m["error"], "ModuleNotFoundError: No module named 'does_not_exist_anywhere'")
        self.assertIn("import does_not_exist_anywhere", m["traceback"])
        self.assertNotIn("_runner.py", m["traceback"])
        self.assertEqual(r.proc.wait(10), 1)
        logs = [x for x in r.messages if x["type"] == "log"]
        self.assertEqual(logs[0]["data"], "about to fail\n")

    def test_missing_name_and_not_a_function(self):
        r = self.start("no_such_thing")
        m = r.wait_type("init_error")
        self.assertIn("no_such_thing", m["error"])
        self.assertEqual(r.proc.wait(10), 1)
        r = self.start("not_a_function")
        m = r.wait_type("init_error")
        self.assertTrue(m["error"].startswith("TypeError"), m)
        self.assertEqual(r.proc.wait(10), 1)

    def test_stdin_eof_and_sigterm(self):
        r = self.start("add").ready()
        r.proc.stdin.close()
        self.assertEqual(r.proc.wait(10), 0)
        r = self.start("sleeper").ready()
        iid = r.submit(pargs(0.3))
        time.sleep(0.1)
        r.proc.send_signal(signal.SIGTERM)
        self.assertEqual(r.proc.wait(10), 0)
        self.assertEqual(r.output(iid)["status"], "success")  # it finished in the grace period

    def test_environment(self):
        r = self.start("remote_env").ready()
        pid, is_remote, argv, stdin = r.value()
        self.assertEqual(pid, r.proc.pid)
        self.assertEqual(is_remote, "1")
        self.assertEqual(argv, ["-c"])  # the config is not left for user code to trip over
        self.assertEqual(stdin, "")  # fd 0 is /dev/null: subprocesses cannot eat protocol lines

    # -------------------------------------------------------------- speed

    def test_latency(self):
        r = self.start("add").ready()
        payload = pargs(1, 2)
        for _ in range(20):  # warm up
            r.output(r.submit(payload))
        n = 300
        t0 = time.monotonic()
        for _ in range(n):
            r.output(r.submit(payload))
        per = (time.monotonic() - t0) / n
        print(f"\nrunner round trip (sequential, with the test's own pipe handling): {per * 1e6:.0f} us",
              file=sys.stderr)
        self.assertLess(per, 0.005)

    def test_user_thread_does_not_block_exit(self):
        r = self.start("start_thread").ready()
        self.assertEqual(r.value(), "started")
        t0 = time.monotonic()
        self.assertEqual(r.shutdown(), 0)
        self.assertLess(time.monotonic() - t0, 3)

    def test_input_running_past_the_grace(self):
        r = self.start("sleeper").ready()
        iid = r.submit(pargs(30))
        time.sleep(0.2)
        t0 = time.monotonic()
        self.assertEqual(r.shutdown(), 0)
        self.assertLess(time.monotonic() - t0, 6)
        self.assertEqual(r.of(iid, "output"), [])

    def test_throughput(self):
        n = 3000
        for max_inputs in (1, 8):
            r = self.start("add", max_inputs=max_inputs).ready()
            payload = pargs(1, 2)
            lines = b"".join(json.dumps({"type": "input", "id": f"t-{i}", "args": payload, "format": "pickle",
                                         "method": None, "params": None}).encode() + b"\n" for i in range(n))
            t0 = time.monotonic()
            r.send_raw(lines)
            r.wait_count("output", n, timeout=60)
            dt = time.monotonic() - t0
            rate = n / dt
            print(f"\nrunner throughput (max_inputs={max_inputs}): {rate:.0f} inputs/s", file=sys.stderr)
            self.assertEqual(sum(1 for m in r.messages if m.get("type") == "output"), n)
            self.assertGreater(rate, 300)
            self.assertEqual(r.shutdown(), 0)


if __name__ == "__main__":
    unittest.main()
