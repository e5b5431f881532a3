"""Unit tests of Volume that need no server: names, mount checks as Modal makes them, mount
options, FileEntry, and the requests that listdir, remove_file and batch_upload send (a fake
client records them).
Run: cd sdk/python && python3 -m unittest discover -s tests -p 'test_unit*.py'
"""

import io
import unittest

import gust
from gust import exception
from gust.volume import FileEntry, FileEntryType, volume_mounts


class FakeClient:
    def __init__(self, answers):
        self.answers, self.sent = answers, []

    def json(self, method, path, **kw):
        self.sent.append((method, path, kw))
        a = self.answers.get((method, path.split("/")[-1]))
        if isinstance(a, Exception):
            raise a
        return a


def hydrated(client):
    return gust.Volume._hydrated({"volume_id": "vo-abc", "name": "v"}, client)


class TestVolume(unittest.TestCase):
    def test_names_and_versions(self):
        for bad in ("bad name", "", "x" * 65, "ap-" + "a" * 22):
            with self.assertRaises(exception.InvalidError):
                gust.Volume.from_name(bad)
        with self.assertRaises(exception.InvalidError):
            gust.Volume.from_name("ok", version=3)
        self.assertEqual(repr(gust.Volume.from_name("ok", version=2)), "Volume.from_name('ok')")
        with self.assertRaises(RuntimeError):
            gust.Volume()

    def test_mount_checks(self):
        v = gust.Volume.from_name("v")
        self.assertEqual(volume_mounts({"/data/": v}, "f"), [("/data", v)])
        for bad in ({"data": v}, {"/": v}, {"/tmp": v}, {"/root": v}, {"/d": "nope"}, ["/d"],
                    {"/a": v, "/b": v}):
            with self.assertRaises(exception.InvalidError, msg=repr(bad)):
                volume_mounts(bad, "f")
        app = gust.App("unit-volumes")
        with self.assertRaises(exception.InvalidError):
            app.function(volumes={"/d": object()})(lambda: None)
        with self.assertRaises(exception.InvalidError):
            gust.App("x", volumes={"rel": v})

    def test_mount_options(self):
        client = FakeClient({})
        v = hydrated(client)
        self.assertEqual(v._to_mount("/d"), {"path": "/d", "volume_id": "vo-abc"})
        ro = v.with_mount_options(read_only=True, sub_path="models")
        self.assertEqual(ro._to_mount("/m"), {"path": "/m", "volume_id": "vo-abc", "read_only": True, "sub_path": "models"})
        self.assertEqual(v.read_only()._to_mount("/r")["read_only"], True)
        self.assertNotIn("read_only", v._to_mount("/d"))  # the original is unchanged
        with self.assertRaises(exception.InvalidError):
            v.with_mount_options(sub_path="../up")
        with self.assertRaises(exception.InvalidError):
            v.with_mount_options(read_only="yes")

    def test_listdir_and_errors(self):
        client = FakeClient({("GET", "entries"): {"entries": [{"path": "a", "type": "directory", "mtime": 5, "size": 0},
                                                              {"path": "a/b", "type": "file", "mtime": 6, "size": 3}]},
                             ("POST", "remove"): exception.NotFoundError("No such file or directory: 'x'")})
        v = hydrated(client)
        got = v.listdir("/", recursive=True)
        self.assertEqual(got, [FileEntry("a", FileEntryType.DIRECTORY, 5, 0), FileEntry("a/b", FileEntryType.FILE, 6, 3)])
        self.assertEqual(client.sent[-1][2]["query"], {"path": "/", "recursive": "1"})
        self.assertEqual(int(FileEntryType.SYMLINK), 3)
        with self.assertRaises(FileNotFoundError):
            v.remove_file("x")
        with self.assertRaises(exception.InvalidError):
            v.listdir(3)
        with self.assertRaises(exception.InvalidError):
            v.copy_files("a", "b")

    def test_batch_upload_checks(self):
        v = hydrated(FakeClient({}))
        batch = v.batch_upload()
        with self.assertRaises(FileNotFoundError):
            batch.put_file("/no/such/file", "/x")
        with self.assertRaises(exception.InvalidError):
            batch.put_file(io.BytesIO(b"x"), "/dir/")
        with self.assertRaises(FileNotFoundError):
            batch.put_directory("/no/such/dir", "/x")

    def test_outside_a_container(self):
        v = hydrated(FakeClient({}))
        v.commit()  # nothing to commit outside a container
        with self.assertRaises(RuntimeError):
            v.reload()


if __name__ == "__main__":
    unittest.main()
