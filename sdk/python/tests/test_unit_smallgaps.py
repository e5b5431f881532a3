"""Offline tests of the smaller Modal features of issue 13: @gust.batched (its rules, and the
runner gathering inputs into batches), with_options (option checks, the variant handle),
Image.uv_pip_install / run_function / refused constructors, and the modal compatibility mode.
test_smallgaps.py runs the same features against a real gust.

Run: cd sdk/python && python3 -m unittest tests.test_unit_smallgaps -v
"""

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import unittest

import gust
from gust import _compat, _config, exception
from gust.app import _variant_options
from gust.functions import _VariantHandle
from gust.image import Image, _upload_local

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_unit_runner import Runner, pargs, unpickle  # noqa: E402

SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BatchedDecoratorTest(unittest.TestCase):
    def test_bounds(self):
        for kw, msg in (({"max_batch_size": 0, "wait_ms": 1}, "max_batch_size must be a positive integer"),
                        ({"max_batch_size": 1001, "wait_ms": 1}, "cannot be greater than 1000"),
                        ({"max_batch_size": 2, "wait_ms": -1}, "wait_ms must be a non-negative integer"),
                        ({"max_batch_size": 2, "wait_ms": 600000}, "wait_ms cannot be greater than or equal to 600000"),
                        ({"max_batch_size": "2", "wait_ms": 1}, "must be an integer")):
            with self.subTest(kw=kw), self.assertRaisesRegex(exception.InvalidError, msg):
                gust.batched(**kw)

    def test_signature_rules(self):
        deco = gust.batched(max_batch_size=2, wait_ms=10)

        def none():
            return []

        def default(xs=1):
            return xs

        def var(*xs):
            return xs

        def gen(xs):
            yield xs

        for f, msg in ((none, "at least one argument"), (default, "default arguments"), (var, "variadic"),
                       (gen, "cannot be a generator")):
            with self.subTest(f=f.__name__), self.assertRaisesRegex(exception.InvalidError, msg):
                deco(f)

        def ok(xs, ys):
            return xs

        self.assertEqual(deco(ok)._gust_batched, (2, 10))

    def test_app_options(self):
        app = gust.App("batched-test")

        @app.function()
        @gust.batched(max_batch_size=8, wait_ms=100)
        def f(xs):
            return xs

        self.assertEqual((f._options["max_inputs"], f._options["target_inputs"]), (8, 8))
        with self.assertRaisesRegex(exception.InvalidError, "cannot be used together"):
            @app.function()
            @gust.concurrent(max_inputs=4)
            @gust.batched(max_batch_size=8, wait_ms=100)
            def g(xs):
                return xs
        with self.assertRaisesRegex(exception.InvalidError, "not above it"):
            gust.batched(max_batch_size=2, wait_ms=1)(f)

        with self.assertRaisesRegex(exception.InvalidError, "cannot have other modal methods"):
            @app.cls()
            class Two:
                @gust.batched(max_batch_size=2, wait_ms=1)
                def a(self, xs):
                    return xs

                @gust.method()
                def b(self):
                    return 1

        @app.cls()
        class One:
            @gust.batched(max_batch_size=3, wait_ms=1)
            def a(self, xs):
                return xs

        self.assertEqual(One._options["max_inputs"], 3)


BATCH_MODULE = '''
import asyncio, time

def _mark(size, wait):
    def deco(f):
        f._gust_batched = (size, wait)
        f._gust_method = True
        return f
    return deco

@_mark(3, 5000)
def add(xs, ys):
    print(f"batch of {len(xs)}")
    return [(x + y, len(xs)) for x, y in zip(xs, ys)]

@_mark(10, 200)
def waits(xs):
    return [(x, len(xs)) for x in xs]

@_mark(3, 5000)
def boom(xs):
    raise ValueError(f"bad batch {xs}")

@_mark(2, 5000)
def short(xs):
    return xs[:1]

class K:
    k = 3

    @_mark(2, 5000)
    async def scale(self, xs):
        await asyncio.sleep(0)
        return [x * self.k for x in xs]
'''

COMPAT_MODULE = '''
import modal
import modal.exception
from modal.exception import InvalidError

def where():
    return modal.__name__, modal.exception.__name__, InvalidError.__module__
'''


class RunnerBatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = cls._tmp.name
        with open(os.path.join(cls.dir, "batchmod.py"), "w") as f:
            f.write(BATCH_MODULE)
        with open(os.path.join(cls.dir, "compatmod.py"), "w") as f:
            f.write(COMPAT_MODULE)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def start(self, name, **kw):
        r = Runner(self.dir, name, module=kw.pop("module", "batchmod"), **kw)
        self.addCleanup(r.close)
        return r.ready()

    def test_full_batch_runs_at_once(self):
        r = self.start("add", max_inputs=3)
        ids = [r.submit(pargs(i, ys=10 * i)) for i in (1, 2, 3)]
        outs = [r.output(i, timeout=3) for i in ids]  # well before wait_ms (5 s): the batch was full
        self.assertEqual([unpickle(o["data"]) for o in outs], [(11, 3), (22, 3), (33, 3)])
        logs = "".join(m["data"] for m in r.of(ids[0], "log"))
        self.assertIn("batch of 3", logs)  # the batch's logs go with its first input
        self.assertEqual(r.shutdown(), 0)

    def test_wait_ms_flushes_a_partial_batch(self):
        r = self.start("waits", max_inputs=10)
        ids = [r.submit(pargs(i)) for i in (1, 2)]
        self.assertEqual([unpickle(r.output(i)["data"]) for i in ids], [(1, 2), (2, 2)])

    def test_exception_fails_the_whole_batch(self):
        r = self.start("boom", max_inputs=3)
        ids = [r.submit(pargs(i)) for i in (1, 2, 3)]
        for i in ids:
            out = r.output(i)
            self.assertEqual(out["status"], "failure")
            self.assertIn("ValueError: bad batch [1, 2, 3]", out["error"])

    def test_bad_arguments_fail_alone_and_short_results_fail_the_batch(self):
        r = self.start("add", max_inputs=3)
        bad = r.submit(pargs(1, 2, 3))
        good = [r.submit(pargs(i, i)) for i in (4, 5)]
        self.assertIn("takes 2 argument(s)", r.output(bad)["error"])
        self.assertEqual([unpickle(r.output(i)["data"]) for i in good], [(8, 2), (10, 2)])
        r2 = self.start("short", max_inputs=2)
        ids = [r2.submit(pargs(i)) for i in (1, 2)]
        for i in ids:
            self.assertIn("must be a list of equal length", r2.output(i)["error"])

    def test_async_class_method(self):
        r = self.start("K", kind="class", max_inputs=2)
        ids = [r.submit(pargs(i), method="scale") for i in (1, 2)]
        self.assertEqual([unpickle(r.output(i, timeout=3)["data"]) for i in ids], [3, 6])

    def test_modal_compat_config(self):
        r = self.start("where", module="compatmod", config_extra={"modal_compat": True})
        out = r.output(r.submit(pargs()))
        self.assertEqual(unpickle(out["data"]), ("gust", "gust.exception", "gust.exception"))
        r2 = Runner(self.dir, "where", module="compatmod")
        self.addCleanup(r2.close)
        m = r2.wait_for(lambda m: m.get("type") in ("ready", "init_error", "<eof>"))
        self.assertEqual(m["type"], "init_error")
        self.assertIn("No module named 'modal'", m["error"])


class WithOptionsTest(unittest.TestCase):
    def test_options_spelled_for_the_server(self):
        got = _variant_options({"cpu": (1, 2), "memory": (256, 512), "gpu": "h100:2", "timeout": 30, "retries": 2,
                                "max_containers": 3, "scaledown_window": 5, "env": {"A": "1", "B": None},
                                "secrets": [gust.Secret.from_dict({"K": "v"})], "region": "eu",
                                "concurrency_limit": 4}, "w")
        self.assertEqual(got["cpu"], 1)
        self.assertEqual(got["cpu_limit"], 2)
        self.assertEqual(got["memory"], 512)
        self.assertEqual(got["gpu"], "H100:2")
        self.assertEqual(got["timeout"], 30)
        self.assertEqual(got["retries"]["max_retries"], 2)
        self.assertEqual(got["max_containers"], 3)
        self.assertEqual(got["env"], {"A": "1"})
        self.assertEqual(got["secrets"], [{"env": {"K": "v"}}])
        self.assertNotIn("region", got)
        self.assertEqual(_variant_options({}, "w"), {})

    def test_bad_options(self):
        for kw, err in (({"cpu": 0}, exception.InvalidError), ({"gpu": "Z9"}, exception.InvalidError),
                        ({"memory": 1}, exception.InvalidError), ({"secrets": ["x"]}, exception.InvalidError),
                        ({"nope": 1}, TypeError), ({"volumes": {"/d": object()}}, exception.InvalidError)):
            with self.subTest(kw=kw), self.assertRaises(err):
                _variant_options(kw, "w")

    def test_variant_handle(self):
        calls = []

        class Client:
            def json(self, method, path, json=None, **kw):
                calls.append((method, path, json))
                return {"function_id": f"fu-v{len(calls)}", "name": "f~x"}

        class Base:
            name = "f"
            lookup = None
            fid = "fu-base"

            def resolve(self):
                return client, self.fid

        client, base = Client(), Base()
        v = _VariantHandle(base, {"memory": 512, "env": {"A": "1"}})
        self.assertEqual(v.resolve(), (client, "fu-v1"))
        self.assertEqual(v.resolve(), (client, "fu-v1"))  # made once
        self.assertEqual(calls, [("POST", "/v1/functions/fu-base/variants", {"options": {"memory": 512, "env": {"A": "1"}}})])
        vv = _VariantHandle(v, {"memory": 1024, "env": {"B": "2"}})
        vv.resolve()
        self.assertEqual(calls[-1], ("POST", "/v1/functions/fu-base/variants",
                                     {"options": {"memory": 1024, "env": {"A": "1", "B": "2"}}}))
        base.fid = "fu-base2"  # published again: the variant is asked for again
        self.assertEqual(v.resolve()[1], "fu-v3")
        self.assertEqual(calls[-1][1], "/v1/functions/fu-base2/variants")

    def test_function_and_cls_with_options(self):
        app = gust.App("wo-test")

        @app.function(memory=256)
        def f(x):
            return x

        @app.cls()
        class C:
            @gust.method()
            def m(self):
                return 1

        g = f.with_options(memory=512)
        self.assertIsInstance(g._handle, _VariantHandle)
        self.assertIs(g._handle.base, f._handle)
        self.assertEqual(g.local(3), 3)  # same Python function
        self.assertNotIn("g", app.registered_functions)
        c2 = C.with_options(gpu="A100")
        self.assertIsInstance(c2._handle, _VariantHandle)
        self.assertEqual(c2()._cls._handle.options, {"gpu": "A100"})
        c3 = C.with_concurrency(max_inputs=4)
        self.assertEqual(c3._handle.options, {"max_inputs": 4})


class FakeBlobClient:
    """Answers the blob upload of image steps: GET 404, POST stores."""

    def __init__(self):
        self.blobs = {}

    def request(self, method, path, **kw):
        raise exception.NotFoundError("no blob")

    def json(self, method, path, body=None, **kw):
        assert (method, path) == ("POST", "/v1/blobs")
        s = hashlib.sha256(body).hexdigest()
        self.blobs[s] = body
        return {"blob": s}


def bake(path, word, *, times=1):
    with open(path, "w") as f:
        f.write(f"{word * times} {os.environ.get('BAKE_SECRET')} {os.environ.get('GUST_IS_REMOTE')}")


class ImageStepsTest(unittest.TestCase):
    def test_uv_pip_install_spec(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
            req.write("numpy\n")
            req.flush()
            im = Image.debian_slim().uv_pip_install("a", ["b==1"], requirements=[req.name], index_url="http://127.0.0.1:1/s",
                                                    extra_options="--no-deps", pre=True)
        steps = im._spec["steps"]
        self.assertEqual(steps[0]["type"], "add_local")
        self.assertTrue(steps[0]["copy"])
        self.assertEqual(steps[1], {"type": "uv_pip_install", "packages": ["a", "b==1"], "requirements": [steps[0]["remote"]],
                                    "index_url": "http://127.0.0.1:1/s", "extra_options": "--no-deps", "pre": True})
        base = Image.debian_slim()
        self.assertIs(base.uv_pip_install(), base)
        with self.assertRaisesRegex(exception.InvalidError, "gpu"):
            base.uv_pip_install("a", gpu="H100")

    def test_refused_constructors(self):
        for name, call in (("micromamba", lambda: Image.micromamba()),
                           ("micromamba_install", lambda: Image.debian_slim().micromamba_install("x")),
                           ("from_aws_ecr", lambda: Image.from_aws_ecr("x")),
                           ("from_gcp_artifact_registry", lambda: Image.from_gcp_artifact_registry("x")),
                           ("uv_sync", lambda: Image.debian_slim().uv_sync())):
            with self.subTest(name=name), self.assertRaisesRegex(exception.InvalidError, f"Image.{name} is not supported by gust"):
                call()

    def test_run_function_ships_code_and_runs(self):
        with self.assertRaisesRegex(exception.InvalidError, "top level"):
            Image.debian_slim().run_function(lambda: None)
        with self.assertRaisesRegex(exception.InvalidError, "gpu"):
            Image.debian_slim().run_function(bake, gpu="A10G")
        im = Image.debian_slim().run_function(bake, args=("/x", "ab"), kwargs={"times": 2},
                                              secrets=[gust.Secret.from_dict({"BAKE_SECRET": "s"})])
        client = FakeBlobClient()
        spec = _upload_local(client, im._spec)
        add, run = spec["steps"]
        self.assertEqual(add["type"], "add_local")
        self.assertTrue(add["remote"].startswith("/.gust-build/fn-"))
        self.assertEqual(run["type"], "run_commands")
        self.assertEqual(run["env"], {"BAKE_SECRET": "s"})
        # The same function and arguments make the same blob (the step's cache key) ...
        again = _upload_local(client, Image.debian_slim().run_function(
            bake, args=("/x", "ab"), kwargs={"times": 2}, secrets=[gust.Secret.from_dict({"BAKE_SECRET": "s"})])._spec)
        self.assertEqual(again["steps"][0]["blob"], add["blob"])
        # ... other arguments another.
        other = _upload_local(client, Image.debian_slim().run_function(bake, args=("/x", "cd"))._spec)
        self.assertNotEqual(other["steps"][0]["blob"], add["blob"])
        # Unpack the blob where the step would, and run the step's command as the build does.
        with tempfile.TemporaryDirectory() as root:
            d = root + add["remote"]
            os.makedirs(d)
            with tarfile.open(fileobj=io.BytesIO(client.blobs[add["blob"]])) as t:
                t.extractall(d)
            out = os.path.join(root, "out.txt")
            cmd = run["commands"][0].replace(add["remote"], d).replace("'/x'", repr(out))
            with open(os.path.join(d, "args.pkl"), "wb") as f:
                pickle.dump(((out, "ab"), {"times": 2}), f)
            env = dict(os.environ, BAKE_SECRET="s")
            env.pop("PYTHONPATH", None)
            p = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("run_function", p.stdout)
            with open(out) as f:
                self.assertEqual(f.read(), "abab s 1")
            self.assertFalse(os.path.exists(d), "the step removes its directory")


class CompatTest(unittest.TestCase):
    def test_finder_in_a_fresh_process(self):
        code = textwrap.dedent("""
            import sys
            sys.path.insert(0, %r)
            import gust, gust._compat as c
            c.install()
            import modal, modal.exception
            from modal.queue import Queue
            from modal import Dict
            assert modal is gust and modal.exception is gust.exception, modal
            assert gust.__spec__.name == "gust", gust.__spec__
            assert Queue is gust.Queue and Dict is gust.Dict
            try:
                import modal.not_there
            except ModuleNotFoundError as e:
                assert "modal.not_there" in str(e), e
            else:
                raise AssertionError("modal.not_there imported")
            import json
            print("OK")
        """ % SDK_DIR)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.stdout.strip(), "OK", p.stderr)

    def test_config_setting(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "config.json")
            for data, want in (({"modal_compat": True}, True), ({}, False),
                               ({"profiles": {"default": {"modal_compat": True}}}, True)):
                with open(path, "w") as f:
                    json.dump(data, f)
                self.assertEqual(_config.load({"GUST_CONFIG": path}).modal_compat, want)
                self.assertEqual(_compat.wanted(_config.load({"GUST_CONFIG": path})), want or bool(os.environ.get(_compat.ENV)))
            with open(path, "w") as f:
                json.dump({"modal_compat": "yes"}, f)
            with self.assertRaisesRegex(exception.InvalidError, "modal_compat"):
                _config.load({"GUST_CONFIG": path})


if __name__ == "__main__":
    unittest.main()
