"""Integration tests of the smaller Modal features (issue 13's last section), run as users run
them, through `gust run` against a running gust: Image.uv_pip_install / run_function / build,
with_options, @modal.batched, python_version="3.13" and `import modal` (--modal-compat). They
need GUST_SERVER_URL, GUST_TOKEN and GUST_BIN; the Go integration harness sets them
(TestPythonSmallGaps). Run: cd sdk/python && python3 -m unittest tests.test_smallgaps -v
"""

import base64
import hashlib
import json
import os
import tempfile
import time
import unittest
import zipfile

from test_functions import PROGRAMS, gust, results


def setUpModule():
    for k in ("GUST_SERVER_URL", "GUST_TOKEN", "GUST_BIN"):
        if not os.environ.get(k):
            raise unittest.SkipTest("set GUST_SERVER_URL, GUST_TOKEN and GUST_BIN to run these tests")


def make_wheel(d, value):
    """A minimal pure-Python wheel of the package gustdemo, whose VALUE is value."""
    files = {
        "gustdemo/__init__.py": f"VALUE = {value!r}\n",
        "gustdemo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: gustdemo\nVersion: 1.0\n",
        "gustdemo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gust-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("gustdemo-1.0.dist-info/RECORD,,")
    files["gustdemo-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(os.path.join(d, "gustdemo-1.0-py3-none-any.whl"), "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


class SmallGapsTest(unittest.TestCase):
    def check(self, r, want, p):
        for k, v in want.items():
            self.assertEqual(r.get(k), v, f"{k}: {r.get(k)!r}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")

    def test_image_uv_pip_install_run_function_build(self):
        with tempfile.TemporaryDirectory(prefix="smallgaps-wheels-") as d:
            value = f"v{time.time_ns()}"  # a new wheel each run: the steps build, not hit the cache
            make_wheel(d, value)
            env_before = os.environ.get("SMALLGAPS_WHEELS")
            os.environ["SMALLGAPS_WHEELS"] = d
            try:
                p = gust("run", "smallgaps_image.py", timeout=600)
            finally:
                if env_before is None:
                    os.environ.pop("SMALLGAPS_WHEELS", None)
                else:
                    os.environ["SMALLGAPS_WHEELS"] = env_before
        r = results(p.stdout)
        self.check(r, {"built": "True True", "check": f"{value}|hello {value} s3cret /root!|[]"}, p)
        out = p.stdout + p.stderr
        self.assertIn("uv_pip_install installs with pip instead", out)  # the build log says so
        self.assertIn("running smallgaps_image.bake in the image (run_function)", out)

    def test_explore_modal_habits(self):
        os.environ["EXPLORE_LOCAL"] = "from-local-env"
        try:
            p = gust("run", "--modal-compat", "explore_modal.py", timeout=300)
        finally:
            os.environ.pop("EXPLORE_LOCAL", None)
        self.check(results(p.stdout), {"secret": "from-local-env imported", "pair": "(3, 15, 15, 'fc-', 21)", "countdown": "4",
                                       "get_timeout": "True", "dockerfile": "from-dockerfile dfc"}, p)

    def test_refused_image_constructors(self):
        p = gust("run", "smallgaps_refused.py")
        r = results(p.stdout)
        self.check(r, {"micromamba": "InvalidError True", "from_aws_ecr": "InvalidError True",
                       "micromamba_install": "InvalidError True"}, p)

    def test_with_options_and_batched(self):
        p = gust("run", "smallgaps_options.py", timeout=600)
        r = results(p.stdout)
        self.check(r, {
            "base": "base 256", "variant": "variant 512 True", "same_variant": "True True", "base_after": "base",
            "timeout": "FunctionTimeoutError", "slow_base": "0",
            "cls": "(3, 'base', 1024) (4, 'cls-variant', 384)",
            "batched": "[11, 22, 33, 44, 55, 66, 77, 88] True True", "single": "(5, 1)",
            "picky_error": "['ValueError', 'ValueError', 'ValueError']", "picky_args": "InvalidError",
            "picky_short": "['InvalidError:len']", "cls_batched": "[0, 3, 6, 9, 12] True",
        }, p)

    def test_modal_compat(self):
        want = {"local": "gust gust.exception gust.queue gust.app", "remote": "gust gust.exception gust.dict False"}
        p = gust("run", "--modal-compat", "smallgaps_compat.py")
        self.check(results(p.stdout), want, p)
        # Without the flag a program importing modal fails as Python says ...
        p = gust("run", "smallgaps_compat.py", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("No module named 'modal'", p.stderr)
        # ... and the client config's modal_compat turns it on.
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="smallgaps-config-") as cfg:
            json.dump({"modal_compat": True}, cfg)
            cfg.flush()
            os.environ["GUST_CONFIG"] = cfg.name
            try:
                p = gust("run", "smallgaps_compat.py")
            finally:
                os.environ.pop("GUST_CONFIG", None)
        self.check(results(p.stdout), want, p)

    def test_more_modal_surface(self):
        with tempfile.TemporaryDirectory(prefix="smallgaps-more-") as d:
            for rel, text in (("a.txt", "a"), ("x.log", "x"), ("keep.log", "k"), ("sub/b.log", "b"),
                              ("sub/c.txt", "c"), ("build/out.bin", "o"), ("sub/build/z.txt", "z"),
                              (".dockerignore", "# comment\n**/*.txt\n!a.txt\n"),
                              ("Dockerfile", "FROM python:3.11-slim\nCOPY . /data\n"),
                              (".env", "export FROM_DOTENV=dot # a comment\nQUOTED=\"two words\"\n")):
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(text)
            secret = f"smallgaps-more-{time.time_ns()}"
            os.environ["SMALLGAPS_DIR"], os.environ["SMALLGAPS_SECRET"] = d, secret
            try:
                # Secret.objects.create from a separate process, before the app needs it.
                c = ("import gust, os; gust.Secret.objects.create(os.environ['SMALLGAPS_SECRET'], {'STORED': 'stored'})")
                import subprocess
                import sys
                from test_functions import env
                subprocess.run([sys.executable, "-c", c], env=env(), check=True, timeout=60)
                p = gust("run", "smallgaps_more.py", timeout=600)
            finally:
                os.environ.pop("SMALLGAPS_DIR", None)
                os.environ.pop("SMALLGAPS_SECRET", None)
        self.check(results(p.stdout), {
            "matcher": str(sorted([".dockerignore", ".env", "Dockerfile", "a.txt", "keep.log", "sub/c.txt",
                                   "sub/build/z.txt"])),
            "predicate": str(sorted([".dockerignore", ".env", "Dockerfile", "a.txt", "sub/c.txt"])),
            "dockerignore": str(sorted([".dockerignore", ".env", "Dockerfile", "a.txt", "build/out.bin", "keep.log",
                                        "sub/b.log", "x.log"])),
            "env": "('stored', 'dot', 'two words')", "again": "AlreadyExistsError", "listed": "True",
            "deleted_twice": "NotFoundError", "refused": "[True, True, True]",
        }, p)

    def test_async_api(self):
        p = gust("run", "smallgaps_async.py", timeout=300)
        self.check(results(p.stdout), {
            "remote_aio": "9", "map_aio": "[0, 1, 4, 9, 16]", "gen_aio": "[0, 1, 2]", "spawn": "16", "cls": "11",
            "dict": "1 1", "queue": "5", "sb": "'hi\\n'", "lines": "'a\\nb\\n'", "file": "hello",
            "listed": "True"}, p)
        import subprocess
        import sys
        from test_functions import env
        p = subprocess.run([sys.executable, os.path.join(PROGRAMS, "smallgaps_async.py")], env=env(),
                           capture_output=True, text=True, timeout=300)
        self.check(results(p.stdout), {"script": "25"}, p)

    def test_python_313(self):
        p = gust("run", "smallgaps_py313.py", timeout=900)
        r = results(p.stdout)
        self.check(r, {"remote": "3.13", "refused": "InvalidError True True"}, p)


if __name__ == "__main__":
    unittest.main()
