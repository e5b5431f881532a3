"""Integration tests of functions through the Python SDK, run as users run them: Modal
programs (tests/programs) started with python3, `gust run` and `gust deploy`, against a running
gust. They need GUST_SERVER_URL, GUST_TOKEN and GUST_BIN (the gust binary); the Go integration
harness sets them. Run: cd sdk/python && python3 -m unittest discover -s tests -p 'test_functions*.py'
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "programs")
SDK = os.path.dirname(HERE)


def setUpModule():
    for k in ("GUST_SERVER_URL", "GUST_TOKEN", "GUST_BIN"):
        if not os.environ.get(k):
            raise unittest.SkipTest("set GUST_SERVER_URL, GUST_TOKEN and GUST_BIN to run the function tests")


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = SDK + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(args, cwd=PROGRAMS, timeout=300, check=True):
    p = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def results(out):
    """The RESULT lines a program printed, by their first word."""
    r = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, key, *rest = line.split(" ", 2)
            r[key] = rest[0] if rest else ""
    return r


def gust(*args, **kw):
    return run([os.environ["GUST_BIN"], *args], **kw)


class ModalProgramTest(unittest.TestCase):
    def test_basic_program(self):
        p = run([sys.executable, "basic.py"])
        r = results(p.stdout)
        want = {
            "square": "49", "local": "9", "map": "[0, 1, 4, 9, 16]", "starmap": "[3, 7]", "kwargs": "3",
            "spawn": "81", "raised": "ValueError boom", "map_exc": "['ValueError', 'ValueError']",
            "gen": "[3, 2, 1]", "timeout": "ok", "flaky": "3", "concurrent": "[0, 1, 2, 3] fast",
            "where": "True True True None", "fan_out": "30", "in_sandbox": "from-a-sandbox", "big": "8388608 12582912", "cls": "101 102 2 True", "cls_default": "5",
        }
        for k, v in want.items():
            self.assertEqual(r.get(k), v, f"{k}: {r.get(k)!r}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        self.assertIn("unpicklable", r)
        self.assertIn("SerializationError", r["unpicklable"])
        # The remote print reached this terminal as it happened.
        self.assertIn("squaring 7", p.stdout + p.stderr)
        # The remote traceback came with the exception.
        self.assertIn("DONE", p.stdout)

    def test_gust_run_entrypoint_flags(self):
        p = gust("run", "entry.py", "--name", "gust", "--times", "2", "--shout")
        self.assertIn("RESULT HELLO GUST HELLO GUST", p.stdout, p.stderr)
        p = gust("run", "entry.py::main")
        self.assertIn("RESULT hello world", p.stdout, p.stderr)
        p = gust("run", "entry.py", "--times", "notanumber", check=False)
        self.assertNotEqual(p.returncode, 0)

    def test_edit_and_rerun_needs_no_build(self):
        d = tempfile.mkdtemp()
        try:
            helper = os.path.join(d, "helper.py")
            main = os.path.join(d, "prog.py")
            with open(main, "w") as f:
                f.write("import gust as modal\nimport helper\napp = modal.App('fn-edit')\n"
                        "@app.function()\ndef f():\n    return helper.VALUE\n"
                        "@app.local_entrypoint()\ndef main():\n    print('RESULT value', f.remote())\n")
            for value in ("one", "two"):
                with open(helper, "w") as f:
                    f.write(f"VALUE = {value!r}\n")
                t = time.time()
                p = gust("run", "prog.py", cwd=d)
                self.assertEqual(results(p.stdout).get("value"), value, p.stdout + p.stderr)
                self.assertNotIn("Building image", p.stdout + p.stderr)
                self.assertLess(time.time() - t, 20)
        finally:
            shutil.rmtree(d)

    def test_deploy_from_name_secret_schedule(self):
        gust("secret", "create", "fn-test-secret", "TOKEN=t0ps3cret", "--force")
        p = gust("deploy", "deployed.py")
        self.assertIn("fn-deployed", p.stdout + p.stderr)
        code = ("import gust as modal\n"
                "f = modal.Function.from_name('fn-deployed', 'double')\n"
                "print('RESULT double', f.remote(21))\n"
                "s = modal.Function.from_name('fn-deployed', 'secret_value')\n"
                "print('RESULT secret', s.remote('TOKEN'))\n"
                "call = f.spawn(4)\n"
                "fc = modal.FunctionCall.from_id(call.object_id)\n"
                "print('RESULT from_id', fc.get(timeout=60))\n"
                "try:\n"
                "    modal.Function.from_name('fn-deployed', 'nope').remote()\n"
                "except modal.exception.NotFoundError as e:\n"
                "    print('RESULT notfound ok')\n")
        p = run([sys.executable, "-c", code])
        r = results(p.stdout)
        self.assertEqual(r.get("double"), "42", p.stdout + p.stderr)
        self.assertEqual(r.get("secret"), "t0ps3cret")
        self.assertEqual(r.get("from_id"), "8")
        self.assertEqual(r.get("notfound"), "ok")
        # The secret's value never shows in listings or logs.
        for args in (("secret", "list"), ("app", "list"), ("app", "show", "fn-deployed")):
            out = gust(*args).stdout
            self.assertNotIn("t0ps3cret", out, args)
        # The schedule runs the deployed heartbeat; app logs keep its output.
        deadline = time.time() + 30
        while True:
            logs = gust("app", "logs", "fn-deployed").stdout
            if logs.count("heartbeat tick") >= 2 and "doubling 21" in logs:
                break
            if time.time() > deadline:
                self.fail("no scheduled runs in the app logs:\n" + logs)
            time.sleep(0.5)
        show = gust("app", "show", "fn-deployed").stdout
        self.assertIn("double", show)
        # update_autoscaler keeps a container warm for the deployed function.
        run([sys.executable, "-c", "import gust as modal\n"
             "modal.Function.from_name('fn-deployed', 'double').update_autoscaler(min_containers=1)\n"])
        deadline = time.time() + 30
        while True:
            stats = run([sys.executable, "-c", "import gust as modal\n"
                         "s = modal.Function.from_name('fn-deployed', 'double').get_current_stats()\n"
                         "print('RESULT runners', s.num_total_runners)\n"]).stdout
            if results(stats).get("runners") == "1":
                break
            if time.time() > deadline:
                self.fail("update_autoscaler(min_containers=1) kept no container warm: " + stats)
            time.sleep(0.5)
        gust("app", "stop", "fn-deployed")
        self.assertIn("stopped", gust("app", "list").stdout)

    def test_bad_input_is_refused_before_anything_runs(self):
        d = tempfile.mkdtemp()
        try:
            cases = {
                "gpu": "@app.function(gpu='H1000')\ndef f():\n    pass\n",
                "bounds": "@app.function(min_containers=3, max_containers=1)\ndef f():\n    pass\n",
            }
            for name, body in cases.items():
                path = os.path.join(d, f"bad_{name}.py")
                with open(path, "w") as f:
                    f.write("import gust as modal\napp = modal.App('fn-bad')\n" + body +
                            "@app.local_entrypoint()\ndef main():\n    f.remote()\n")
                p = gust("run", path, cwd=d, check=False)
                self.assertNotEqual(p.returncode, 0, name)
                out = p.stdout + p.stderr
                self.assertRegex(out, re.compile("gpu|max_containers", re.I), out)
                self.assertNotIn("Traceback", out, out)
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main()
