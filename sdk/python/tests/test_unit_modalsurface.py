"""Unit tests of Modal names that need no server: FilePatternMatcher, the older gpu objects,
.env parsing, and the objects gust refuses or ignores."""

import os
import tempfile
import unittest
import warnings
from pathlib import Path

import gust
from gust import _local_files
from gust.secret import parse_dotenv


class FilePatternMatcherTest(unittest.TestCase):
    def test_patterns(self):
        cases = [
            (("*.pyc",), "a.pyc", True), (("*.pyc",), "d/a.pyc", False), (("**/*.pyc",), "d/e/a.pyc", True),
            (("**/*.pyc",), "a.pyc", True), (("build",), "build/x/y", True), (("build",), "src/build/x", False),
            (("**/build",), "src/build/x", True), (("a?c",), "abc", True), (("a?c",), "a/c", False),
            (("[ab].txt",), "b.txt", True), (("[!ab].txt",), "b.txt", False), (("./x/*.md",), "x/r.md", True),
            (("*.log", "!keep.log"), "keep.log", False), (("*.log", "!keep.log", "keep*"), "keep.log", True),
            (("# comment", ""), "# comment", False), (("d/**",), "d/x/y", True), (("d/**/z",), "d/z", True),
        ]
        for patterns, path, want in cases:
            with self.subTest(patterns=patterns, path=path):
                m = gust.FilePatternMatcher(*patterns)
                self.assertEqual(m(Path(path)), want)
                self.assertEqual((~m)(path), not want)

    def test_prune_and_from_file(self):
        self.assertTrue(gust.FilePatternMatcher("a").can_prune_directories())
        self.assertFalse(gust.FilePatternMatcher("a", "!a/b").can_prune_directories())
        with tempfile.NamedTemporaryFile("w", suffix=".dockerignore", delete=False) as f:
            f.write("# c\n*.tmp\n\n!x.tmp\n")
        try:
            m = gust.FilePatternMatcher.from_file(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual((m("a.tmp"), m("x.tmp"), m("a.txt")), (True, False, False))

    def test_pack_honours_exclusions_under_ignored_dirs(self):
        with tempfile.TemporaryDirectory() as d:
            for rel in ("build/keep.txt", "build/drop.txt", "a.txt"):
                os.makedirs(os.path.dirname(os.path.join(d, rel)) or d, exist_ok=True)
                open(os.path.join(d, rel), "w").close()
            import io
            import tarfile

            def names(ignore):
                with tarfile.open(fileobj=io.BytesIO(_local_files.pack(d, ignore=ignore))) as t:
                    return sorted(m.name for m in t.getmembers() if m.isfile())
            self.assertEqual(names(gust.FilePatternMatcher("build", "!build/keep.txt")), ["a.txt", "build/keep.txt"])
            self.assertEqual(names(["build"]), ["a.txt"])
            self.assertEqual(names(lambda p: isinstance(p, Path) and p.name == "drop.txt"), ["a.txt", "build/keep.txt"])
            with self.assertRaises(TypeError):
                names("build")


class GPUObjectsTest(unittest.TestCase):
    def test_specs(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(gust.gpu.A100(size="80GB", count=2), "A100-80GB:2")
            self.assertEqual(gust.gpu.H100(), "H100")
            self.assertEqual(gust.gpu.Any(count=3), "ANY:3")
        self.assertTrue(all(issubclass(x.category, DeprecationWarning) for x in w))
        from gust.app import _parse_gpu
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.assertEqual(_parse_gpu(gust.gpu.L4(count=2)), "L4:2")
            with self.assertRaises(gust.exception.InvalidError):
                gust.gpu.H100(size="80GB")
            with self.assertRaises(gust.exception.InvalidError):
                gust.gpu.T4(count=9)


class DotenvTest(unittest.TestCase):
    def test_parse(self):
        env = parse_dotenv('# c\nexport A=1\nB = "x\\ny" \nC=\'$lit\'\nD=v # note\nE=\n')
        self.assertEqual(env, {"A": "1", "B": "x\ny", "C": "$lit", "D": "v", "E": ""})
        with self.assertRaises(gust.exception.InvalidError):
            parse_dotenv("not a line\n")

    def test_found_in_parents(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "a", "b"))
            with open(os.path.join(d, ".env"), "w") as f:
                f.write("K=v\n")
            self.assertEqual(gust.Secret.from_dotenv(os.path.join(d, "a", "b")).env, {"K": "v"})
            open(os.path.join(d, "a", "mod.py"), "w").close()
            self.assertEqual(gust.Secret.from_dotenv(os.path.join(d, "a", "mod.py")).env, {"K": "v"})


class RefusedTest(unittest.TestCase):
    def test_refused_and_ignored(self):
        for make in (lambda: gust.CloudBucketMount("b", secret=None), lambda: gust.NetworkFileSystem.from_name("n"),
                     lambda: gust.NetworkFileSystem.ephemeral(), lambda: gust.Proxy.from_name("p")):
            with self.assertRaises(gust.exception.InvalidError) as cm:
                make()
            self.assertIn("not available on gust", str(cm.exception))
        self.assertIsNone(gust.interact())
        app = gust.App("unit-placement")

        @app.function(scheduler_placement=gust.SchedulerPlacement(region="us-east-1", spot=False))
        def f():
            return 1
        self.assertEqual(f.local(), 1)


if __name__ == "__main__":
    unittest.main()
