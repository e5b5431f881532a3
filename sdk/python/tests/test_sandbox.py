"""Integration tests of the Python SDK against a running gust server.

They need GUST_SERVER_URL and GUST_TOKEN (the Go integration harness sets both) and skip
without them. Run: cd sdk/python && python3 -m unittest discover -s tests -p 'test_sandbox*.py'
"""

import os
import tempfile
import threading
import time
import unittest
import uuid

import gust as modal
from gust import exception

APP_NAME = "sdk-python-tests"
_created = []


def setUpModule():
    if not os.environ.get("GUST_SERVER_URL") or not os.environ.get("GUST_TOKEN"):
        raise unittest.SkipTest("set GUST_SERVER_URL and GUST_TOKEN to run the SDK integration tests")


def tearDownModule():
    terminate_created()


def new_sandbox(*args, **kw):
    kw.setdefault("app", modal.App.lookup(APP_NAME, create_if_missing=True))
    kw.setdefault("timeout", 300)
    sb = modal.Sandbox.create(*args, **kw)
    _created.append(sb)
    return sb


def terminate_created():
    while _created:
        try:
            _created.pop().terminate()
        except Exception:
            pass


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class ExecTest(unittest.TestCase):
    """Processes in one shared sandbox."""

    @classmethod
    def setUpClass(cls):
        cls.sb = new_sandbox()

    @classmethod
    def tearDownClass(cls):
        terminate_created()

    def test_echo(self):
        p = self.sb.exec("echo", "hello")
        self.assertEqual(p.stdout.read(), "hello\n")
        self.assertEqual(p.wait(), 0)
        self.assertEqual(p.returncode, 0)
        self.assertTrue(p.object_id.startswith("ex-"))

    def test_stdout_stderr_separate(self):
        p = self.sb.exec("bash", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2")
        self.assertEqual(p.stdout.read(), "out1\nout2\n")
        self.assertEqual(p.stderr.read(), "err1\nerr2\n")
        self.assertEqual(p.wait(), 0)

    def test_exit_codes(self):
        self.assertEqual(self.sb.exec("sh", "-c", "exit 7").wait(), 7)
        self.assertEqual(self.sb.exec("false").wait(), 1)
        p = self.sb.exec("no-such-command-xyz")
        self.assertEqual(p.wait(), 127)
        self.assertNotEqual(p.stderr.read(), "")
        # killed by a signal N reports 128+N
        self.assertEqual(self.sb.exec("sh", "-c", "kill -9 $$").wait(), 137)

    def test_returncode_before_wait(self):
        p = self.sb.exec("sleep", "1")
        self.assertIsNone(p.poll())
        with self.assertRaises(exception.InvalidError):
            p.returncode
        self.assertEqual(p.wait(), 0)
        self.assertEqual(p.poll(), 0)

    def test_lines_arrive_while_running(self):
        start = time.monotonic()
        p = self.sb.exec("bash", "-c", "echo first; sleep 2; echo second", bufsize=1)
        it = iter(p.stdout)
        self.assertEqual(next(it), "first\n")
        self.assertLess(time.monotonic() - start, 1.0, "the first line must arrive before the process ends")
        self.assertIsNone(p.poll())
        self.assertEqual(next(it), "second\n")
        with self.assertRaises(StopIteration):
            next(it)
        self.assertEqual(p.wait(), 0)

    def test_iterate_lines(self):
        p = self.sb.exec("bash", "-c", "for i in 1 2 3; do echo line $i; done; printf tail", bufsize=1)
        self.assertEqual(list(p.stdout), ["line 1\n", "line 2\n", "line 3\n", "tail"])

    def test_iterate_chunks_default(self):
        p = self.sb.exec("bash", "-c", "echo a; sleep 0.3; echo b")
        self.assertEqual("".join(p.stdout), "a\nb\n")

    def test_stdin_round_trip(self):
        p = self.sb.exec("cat")
        p.stdin.write(b"hello ")
        p.stdin.write("world\n")
        p.stdin.drain()
        p.stdin.write("bye\n")
        p.stdin.write_eof()
        p.stdin.drain()
        self.assertEqual(p.stdout.read(), "hello world\nbye\n")
        self.assertEqual(p.wait(), 0)
        with self.assertRaises(ValueError):
            p.stdin.write("more")

    def test_stdin_interactive(self):
        p = self.sb.exec("bash", "-c", "while read line; do echo got $line; done", bufsize=1)
        lines = iter(p.stdout)
        for word in ("a", "b"):
            p.stdin.write(word + "\n")
            p.stdin.drain()
            self.assertEqual(next(lines), f"got {word}\n")
        p.stdin.write_eof()
        p.stdin.drain()
        self.assertEqual(p.wait(), 0)

    def test_bytes_mode(self):
        p = self.sb.exec("printf", "\\000\\377abc", text=False)
        self.assertEqual(p.stdout.read(), b"\x00\xffabc")
        self.assertEqual(p.wait(), 0)

    def test_utf8(self):
        p = self.sb.exec("python3", "-c", "import sys; sys.stdout.buffer.write('héllo wörld ✓\\n'.encode())")
        self.assertEqual(p.stdout.read(), "héllo wörld ✓\n")

    def test_env_workdir(self):
        class Secret:
            env = {"FROM_SECRET": "s", "OVERRIDDEN": "secret"}

        p = self.sb.exec("sh", "-c", "echo $FOO $FROM_SECRET $OVERRIDDEN; pwd", env={"FOO": "bar", "OVERRIDDEN": "env"},
                         secrets=[Secret()], workdir="/tmp")
        self.assertEqual(p.stdout.read(), "bar s env\n/tmp\n")

    def test_exec_timeout(self):
        start = time.monotonic()
        p = self.sb.exec("sleep", "30", timeout=1)
        self.assertEqual(p.wait(), 124)
        self.assertLess(time.monotonic() - start, 10)

    def test_large_output(self):
        p = self.sb.exec("python3", "-c", "import sys; sys.stdout.write('x' * 3000000)")
        out = p.stdout.read()
        self.assertEqual(len(out), 3000000)
        self.assertEqual(p.wait(), 0)

    def test_devnull(self):
        p = self.sb.exec("echo", "discarded", stdout=modal.StreamType.DEVNULL)
        self.assertEqual(p.wait(), 0)
        with self.assertRaises(exception.InvalidError):
            p.stdout.read()

    def test_concurrent_execs(self):
        results = {}

        def run(i):
            results[i] = self.sb.exec("sh", "-c", f"sleep 0.2; echo {i}").stdout.read()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, {i: f"{i}\n" for i in range(8)})

    def test_sequential_exec_round_trips(self):
        for i in range(20):
            p = self.sb.exec("true")
            self.assertEqual(p.wait(), 0)


class FilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sb = new_sandbox(workdir="/tmp")

    @classmethod
    def tearDownClass(cls):
        terminate_created()

    def test_text_and_bytes(self):
        fs = self.sb.filesystem
        fs.write_text("hello\nworld\n", "/tmp/ft/a.txt")  # Modal order; parents are created
        self.assertEqual(fs.read_text("/tmp/ft/a.txt"), "hello\nworld\n")
        fs.write_text("/tmp/ft/b.txt", "path first")  # also accepted
        self.assertEqual(fs.read_text("/tmp/ft/b.txt"), "path first")
        blob = bytes(range(256)) * 100
        fs.write_bytes(blob, "/tmp/ft/c.bin")
        self.assertEqual(fs.read_bytes("/tmp/ft/c.bin"), blob)
        p = self.sb.exec("cat", "/tmp/ft/a.txt")
        self.assertEqual(p.stdout.read(), "hello\nworld\n")

    def test_list_stat_mkdir_remove(self):
        fs = self.sb.filesystem
        fs.make_directory("/tmp/fl/sub/deeper")
        fs.write_text("x", "/tmp/fl/f.txt")
        entries = {e.name: e for e in fs.list_files("/tmp/fl")}
        self.assertEqual(set(entries), {"sub", "f.txt"})
        self.assertEqual(entries["sub"].type, modal.FileType.DIRECTORY)
        self.assertEqual(entries["f.txt"].type, "file")
        self.assertEqual(entries["f.txt"].size, 1)
        self.assertEqual(entries["f.txt"].path, "/tmp/fl/f.txt")
        self.assertGreater(entries["f.txt"].mtime, time.time() - 3600)
        st = fs.stat("/tmp/fl/f.txt")
        self.assertEqual((st.name, st.size, st.type), ("f.txt", 1, modal.FileType.FILE))
        with self.assertRaises(exception.SandboxFilesystemDirectoryNotEmptyError):
            fs.remove("/tmp/fl")
        fs.remove("/tmp/fl/f.txt")
        fs.remove("/tmp/fl", recursive=True)
        with self.assertRaises(exception.SandboxFilesystemNotFoundError):
            fs.stat("/tmp/fl")
        with self.assertRaises(FileNotFoundError):
            fs.read_text("/tmp/does-not-exist")
        with self.assertRaises(exception.SandboxFilesystemIsADirectoryError):
            fs.read_bytes("/tmp")
        with self.assertRaises(exception.InvalidError):
            fs.read_text("relative/path")

    def test_ls_mkdir_rm(self):
        self.sb.mkdir("/tmp/lmr")
        with self.sb.open("/tmp/lmr/one", "w") as f:
            f.write("1")
        self.sb.mkdir("/tmp/lmr/a/b", parents=True)
        self.assertEqual(sorted(self.sb.ls("/tmp/lmr")), ["a", "one"])
        self.sb.rm("/tmp/lmr/one")
        self.sb.rm("/tmp/lmr", recursive=True)
        self.assertNotIn("lmr", self.sb.ls("/tmp"))

    def test_open_read_write_append(self):
        with self.sb.open("/tmp/o.txt", "w") as f:
            f.write("line 1\n")
            f.write("line 2\n")
        with self.sb.open("/tmp/o.txt", "a") as f:
            f.write("line 3\n")
        with self.sb.open("/tmp/o.txt") as f:
            self.assertEqual(f.readline(), "line 1\n")
            self.assertEqual(list(f), ["line 2\n", "line 3\n"])
        with self.sb.open("/tmp/o.txt", "r") as f:
            self.assertEqual(f.read(4), "line")
            f.seek(0)
            self.assertEqual(f.read(), "line 1\nline 2\nline 3\n")
            f.seek(-7, 2)
            self.assertEqual(f.read(), "line 3\n")
        with self.sb.open("o.txt", "rb") as f:  # relative to the sandbox workdir
            self.assertEqual(f.readlines(), [b"line 1\n", b"line 2\n", b"line 3\n"])
        with self.sb.open("/tmp/o.bin", "wb") as f:
            f.write(b"\x00\x01")
            with self.assertRaises(TypeError):
                f.write("text")
        with self.sb.open("/tmp/o.txt", "r+") as f:
            f.seek(5)
            f.write("X")
        self.assertEqual(self.sb.filesystem.read_text("/tmp/o.txt"), "line X\nline 2\nline 3\n")
        with self.assertRaises(FileNotFoundError):
            self.sb.open("/tmp/missing.txt")
        with self.assertRaises(FileExistsError):
            self.sb.open("/tmp/o.txt", "x")
        with self.assertRaises(ValueError):
            self.sb.open("/tmp/o.txt", "rw")

    def test_large_file(self):
        data = os.urandom(20 * 1024 * 1024 + 123)  # above one transfer chunk
        self.sb.filesystem.write_bytes(data, "/tmp/big.bin")
        self.assertEqual(self.sb.filesystem.read_bytes("/tmp/big.bin"), data)
        with tempfile.TemporaryDirectory() as d:
            local = os.path.join(d, "sub", "big.bin")
            self.sb.filesystem.copy_to_local("/tmp/big.bin", local)
            with open(local, "rb") as f:
                self.assertEqual(f.read(), data)
            self.sb.filesystem.copy_from_local(local, "/tmp/copied/big.bin")
        p = self.sb.exec("cmp", "/tmp/big.bin", "/tmp/copied/big.bin")
        self.assertEqual(p.wait(), 0)


class LifecycleTest(unittest.TestCase):
    def tearDown(self):
        terminate_created()

    def test_command_sandbox(self):
        sb = new_sandbox("python3", "-c", "print(1)")
        self.assertEqual(sb.wait(), 0)
        self.assertEqual(sb.returncode, 0)
        self.assertEqual(sb.stdout.read(), "1\n")
        self.assertEqual(sb.poll(), 0)

    def test_main_stdout_lines_and_stderr(self):
        sb = new_sandbox("bash", "-c", "for i in 1 2 3; do echo line $i; echo e$i >&2; sleep 0.1; done; exit 4")
        self.assertEqual(list(sb.stdout), ["line 1\n", "line 2\n", "line 3\n"])
        self.assertEqual(sb.stderr.read(), "e1\ne2\ne3\n")
        self.assertEqual(sb.wait(), 4)

    def test_main_stdin(self):
        sb = new_sandbox("cat")
        sb.stdin.write(b"piped\n")
        sb.stdin.write_eof()
        sb.stdin.drain()
        self.assertEqual(sb.stdout.read(), "piped\n")
        self.assertEqual(sb.wait(), 0)

    def test_terminate(self):
        sb = new_sandbox()
        self.assertIsNone(sb.poll())
        self.assertIsNone(sb.returncode)
        sb.terminate()
        self.assertEqual(sb.poll(), 137)
        with self.assertRaises(exception.SandboxTerminatedError):
            sb.exec("echo", "too late")
        with self.assertRaises(exception.SandboxTerminatedError):
            sb.filesystem.read_text("/etc/hostname")
        with self.assertRaises(exception.SandboxTerminatedError):
            sb.wait()
        self.assertEqual(sb.wait(raise_on_termination=False), 137)
        sb.terminate()  # idempotent
        self.assertEqual(sb.terminate(wait=True), 137)

    def test_timeout(self):
        start = time.monotonic()
        sb = new_sandbox("sleep", "60", timeout=2)
        with self.assertRaises(exception.SandboxTimeoutError):
            sb.wait()
        self.assertEqual(sb.returncode, 124)
        self.assertLess(time.monotonic() - start, 30)
        with self.assertRaises(exception.SandboxTerminatedError):
            sb.exec("true")

    def test_env_and_secrets(self):
        secret = modal.Secret.from_dict({"TOKEN": "from-secret-" + unique("v")})
        sb = new_sandbox(env={"FOO": "bar", "DROPPED": None}, secrets=[secret])
        p = sb.exec("sh", "-c", "echo $FOO $TOKEN ${DROPPED-unset}")
        self.assertEqual(p.stdout.read(), "bar " + secret.env["TOKEN"] + " unset\n")
        # Secret values are never listed back by the API.
        import json, urllib.request
        req = urllib.request.Request(os.environ["GUST_SERVER_URL"] + "/v1/sandboxes?include_finished=1",
                                     headers={"Authorization": "Bearer " + os.environ["GUST_TOKEN"]})
        listing = urllib.request.urlopen(req).read().decode()
        self.assertNotIn(secret.env["TOKEN"], listing)

    def test_from_id_from_name_list_tags(self):
        name = unique("named")
        tag = unique("t")
        sb = new_sandbox(name=name, tags={"suite": tag})
        self.assertEqual(sb.get_tags(), {"suite": tag})
        again = modal.Sandbox.from_id(sb.object_id)
        self.assertEqual(again.object_id, sb.object_id)
        self.assertEqual(again.exec("echo", "same").stdout.read(), "same\n")
        by_name = modal.Sandbox.from_name(APP_NAME, name)
        self.assertEqual(by_name.object_id, sb.object_id)
        with self.assertRaises(exception.AlreadyExistsError):
            new_sandbox(name=name)
        listed = [s.object_id for s in modal.Sandbox.list(tags={"suite": tag})]
        self.assertEqual(listed, [sb.object_id])
        app = modal.App.lookup(APP_NAME)
        self.assertIn(sb.object_id, [s.object_id for s in modal.Sandbox.list(app_id=app.app_id)])
        sb.set_tags({"suite": tag, "extra": "1"})
        self.assertEqual(sb.get_tags(), {"suite": tag, "extra": "1"})
        self.assertEqual([s.object_id for s in modal.Sandbox.list(tags={"extra": "1", "suite": tag})], [sb.object_id])
        sb.set_tags({})
        self.assertEqual(list(modal.Sandbox.list(tags={"suite": tag})), [])
        sb.terminate()
        with self.assertRaises(exception.NotFoundError):
            modal.Sandbox.from_name(APP_NAME, name)
        with self.assertRaises(exception.NotFoundError):
            modal.Sandbox.from_id("sb-doesnotexist0000000")

    def test_snapshot_filesystem(self):
        sb = new_sandbox()
        sb.filesystem.write_text("persisted\n", "/root/state.txt")
        image = sb.snapshot_filesystem()
        self.assertTrue(image.object_id.startswith("im-"))
        sb.terminate()
        sb2 = new_sandbox(image=image)
        self.assertEqual(sb2.filesystem.read_text("/root/state.txt"), "persisted\n")
        sb3 = new_sandbox(image=modal.Image.from_id(image.object_id))
        self.assertEqual(sb3.exec("cat", "/root/state.txt").stdout.read(), "persisted\n")

    def test_block_network(self):
        script = "import os; print(sorted(os.listdir('/sys/class/net')))"
        sb = new_sandbox(block_network=True)
        self.assertTrue(sb._data["block_network"])
        self.assertEqual(sb.exec("python3", "-c", script).stdout.read(), "['lo']\n")
        route = sb.exec("cat", "/proc/net/route").stdout.read().splitlines()[1:]
        self.assertEqual(route, [], "a sandbox without network has no routes")

    def test_gvisor(self):
        try:
            sb = new_sandbox(isolation="gvisor")
        except (exception.ServiceError, exception.InvalidError) as e:
            self.skipTest(f"no gVisor here: {e}")
        self.assertEqual(sb.exec("echo", "in gvisor").stdout.read(), "in gvisor\n")

    def test_image_and_app_objects(self):
        app = modal.App(unique("lazy-app"))
        image = modal.Image.debian_slim()
        with modal.enable_output():
            sb = new_sandbox(app=app, image=image)
        self.assertTrue(app.app_id.startswith("ap-"))
        self.assertTrue(image.object_id.startswith("im-"))
        self.assertEqual(sb.exec("python3", "--version").wait(), 0)
        self.assertEqual(modal.Image.debian_slim(python_version="3.11").object_id, image.object_id)
        with self.assertRaises(exception.InvalidError):
            modal.Image.debian_slim(python_version="2.7").hydrate()
        with self.assertRaises(exception.NotFoundError):
            modal.App.lookup(unique("missing-app"))


if __name__ == "__main__":
    unittest.main()


class ImageBuildTest(unittest.TestCase):
    def test_chain_build_and_cache(self):
        tag = unique("img")
        image = (modal.Image.debian_slim()
                 .run_commands(f"echo {tag} > /opt/tag")
                 .env({"IMG_TAG": tag})
                 .workdir("/opt"))
        sb = new_sandbox(image=image)
        self.assertEqual(sb.exec("sh", "-c", "cat tag; echo $IMG_TAG").stdout.read(), f"{tag}\n{tag}\n")
        # The same definition from a new Image object resolves to the same cached image.
        again = (modal.Image.debian_slim().run_commands(f"echo {tag} > /opt/tag")
                 .env({"IMG_TAG": tag}).workdir("/opt"))
        self.assertEqual(again.object_id, image.object_id)

    def test_failed_step_raises_image_build_error(self):
        image = modal.Image.debian_slim().run_commands("echo nearly; exit 9")
        with self.assertRaises(exception.ImageBuildError) as cm:
            new_sandbox(image=image)
        self.assertIn("exited with code 9", str(cm.exception))


def _make_wheel(directory, name="gustdemo", version="1.0", value="42"):
    """Build a pure-Python wheel by hand (no `wheel` package needed)."""
    import base64, hashlib, zipfile
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gust-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(directory, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


class LocalFilesImageTest(unittest.TestCase):
    def test_pip_install_a_local_wheel(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            _make_wheel(d, value=unique("v"))
            image = (modal.Image.debian_slim()
                     .add_local_dir(d, "/wheels", copy=True)
                     .pip_install("gustdemo", find_links="/wheels"))
            sb = new_sandbox(image=image)
            out = sb.exec("python", "-c", "import gustdemo; print(gustdemo.VALUE)").stdout.read()
            self.assertTrue(out.startswith("v-"), out)

    def test_add_local_mount_is_last_and_sees_edits(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "conf.txt"), "w") as f:
                f.write("one")
            image = modal.Image.debian_slim().add_local_file(os.path.join(d, "conf.txt"), "/etc/app/conf.txt")
            sb = new_sandbox(image=image)
            self.assertEqual(sb.exec("cat", "/etc/app/conf.txt").stdout.read(), "one")
            with open(os.path.join(d, "conf.txt"), "w") as f:
                f.write("two")
            image2 = modal.Image.debian_slim().add_local_file(os.path.join(d, "conf.txt"), "/etc/app/conf.txt")
            sb2 = new_sandbox(image=image2)
            self.assertEqual(sb2.exec("cat", "/etc/app/conf.txt").stdout.read(), "two")
            with self.assertRaises(exception.InvalidError) as cm:
                new_sandbox(image=image.run_commands("true"))
            self.assertIn("copy=False", str(cm.exception))


class DockerfileImageTest(unittest.TestCase):
    def test_dockerfile_build_runs(self):
        import tempfile
        tag = unique("df")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "app.py"), "w") as f:
                f.write(f"print('app {tag}')\n")
            with open(os.path.join(d, "Dockerfile"), "w") as f:
                f.write(f"FROM python:3.11-slim\nARG WHO=docker\nRUN echo built-by-$WHO > /who\n"
                        f"ENV TAG={tag}\nWORKDIR /srv\nCOPY app.py .\nCMD [\"python\", \"app.py\"]\n")
            image = modal.Image.from_dockerfile(os.path.join(d, "Dockerfile"))
            sb = new_sandbox(image=image)
            out = sb.exec("sh", "-c", "cat /who; echo $TAG; python app.py").stdout.read()
            self.assertEqual(out, f"built-by-docker\n{tag}\napp {tag}\n")

    def test_user(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "Dockerfile"), "w") as f:
                f.write("FROM debian_slim\nRUN useradd -m app\nUSER app\nRUN whoami > /home/app/built-as\n")
            sb = new_sandbox(image=modal.Image.from_dockerfile(os.path.join(d, "Dockerfile")))
            out = sb.exec("sh", "-c", "whoami; cat /home/app/built-as; echo $HOME").stdout.read()
            self.assertEqual(out, "app\napp\n/home/app\n")

    def test_from_scratch(self):
        import tempfile
        tag = unique("scratch")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "data.txt"), "w") as f:
                f.write(tag)
            with open(os.path.join(d, "Dockerfile"), "w") as f:
                f.write("FROM scratch\nCOPY data.txt /srv/data.txt\n")
            sb = new_sandbox(image=modal.Image.from_dockerfile(os.path.join(d, "Dockerfile")))
            # No shell in a scratch image: gust-init serves the files all the same.
            with sb.open("/srv/data.txt") as f:
                self.assertEqual(f.read(), tag)

    def test_requirements_and_steps_over_a_snapshot(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            _make_wheel(d, name="gustreq", value="from-requirements")
            req = os.path.join(d, "requirements.txt")
            with open(req, "w") as f:
                f.write("gustreq==1.0\n")
            image = (modal.Image.debian_slim().add_local_dir(d, "/wheels", copy=True)
                     .pip_install_from_requirements(req, find_links="/wheels", index_url="file:///wheels"))
            sb = new_sandbox(image=image)
            self.assertEqual(sb.exec("python", "-c", "import gustreq; print(gustreq.VALUE)").stdout.read(), "from-requirements\n")
            sb.exec("sh", "-c", "echo snap > /snap.txt").wait()
            on_snapshot = sb.snapshot_filesystem().run_commands("cat /snap.txt > /copied.txt")
            sb2 = new_sandbox(image=on_snapshot)
            self.assertEqual(sb2.exec("cat", "/copied.txt").stdout.read(), "snap\n")
