"""Integration tests of Dict and Queue through the Python SDK against a running gust: Modal's
semantics, limits and errors. They need GUST_SERVER_URL and GUST_TOKEN; the Go integration
harness (TestDictQueueLimits) sets them.
Run: cd sdk/python/tests && python3 -m unittest -v test_dictqueue
"""

import asyncio
import os
import pickle
import queue
import threading
import time
import unittest
import uuid

import gust as modal
from gust import exception


def setUpModule():
    if not os.environ.get("GUST_SERVER_URL"):
        raise unittest.SkipTest("set GUST_SERVER_URL and GUST_TOKEN to run the Dict and Queue tests")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class DictTest(unittest.TestCase):
    def test_dict_api(self):
        name = unique("d")
        with self.assertRaises(exception.NotFoundError):
            modal.Dict.from_name(name).get("x")
        d = modal.Dict.from_name(name, create_if_missing=True)
        self.addCleanup(modal.Dict.objects.delete, name, allow_missing=True)
        d["a"] = 1
        d[("t", 2)] = {"nested": [1, 2]}
        self.assertEqual(d["a"], 1)
        self.assertEqual(d.get(("t", 2)), {"nested": [1, 2]})
        self.assertIsNone(d.get("missing"))
        self.assertEqual(d.get("missing", 7), 7)
        with self.assertRaises(KeyError):
            d["missing"]
        self.assertTrue(d.put("b", 2))
        self.assertFalse(d.put("b", 3, skip_if_exists=True))
        self.assertEqual(d["b"], 2)
        d.update({"c": 3}, e=5)
        self.assertIn("c", d)
        self.assertTrue(d.contains("e"))
        self.assertNotIn("zz", d)
        self.assertEqual(d.len(), 5)
        self.assertEqual(d.pop("c"), 3)
        self.assertEqual(d.pop("c", "gone"), "gone")
        with self.assertRaises(KeyError):
            d.pop("c")
        del d["e"]
        self.assertEqual(sorted(map(str, d.keys())), sorted(map(str, ["a", ("t", 2), "b"])))
        self.assertEqual(sorted(map(str, d.values())), sorted(map(str, [1, {"nested": [1, 2]}, 2])))
        self.assertEqual(dict(d.items())["a"], 1)
        info = d.info()
        self.assertEqual(info.name, name)
        self.assertIsNotNone(info.created_at)
        # Same object by ID, and in the listing.
        self.assertEqual(modal.Dict.from_id(d.object_id)["a"], 1)
        self.assertIn(name, [x.name for x in modal.Dict.objects.list()])
        self.assertEqual(len(modal.Dict.objects.list(max_objects=1)), 1)
        d.clear()
        self.assertEqual(d.len(), 0)

    def test_many_items_paged(self):
        with modal.Dict.ephemeral() as d:
            d.update({f"k{i}": i for i in range(250)})
            self.assertEqual(sorted(v for v in d.values()), list(range(250)))
            self.assertEqual(d.len(), 250)

    def test_keys_by_pickled_bytes(self):
        # Keys compare by their pickles, as in Modal: 1 and 1.0 are equal in Python, not here.
        with modal.Dict.ephemeral() as d:
            d[1] = "int"
            d[1.0] = "float"
            self.assertEqual(d[1], "int")
            self.assertEqual(d[1.0], "float")
            self.assertEqual(d.len(), 2)

    def test_objects_and_errors(self):
        name = unique("d")
        modal.Dict.objects.create(name)
        self.addCleanup(modal.Dict.objects.delete, name, allow_missing=True)
        with self.assertRaises(exception.AlreadyExistsError):
            modal.Dict.objects.create(name)
        modal.Dict.objects.create(name, allow_existing=True)
        modal.Dict.objects.delete(name)
        with self.assertRaises(exception.NotFoundError):
            modal.Dict.objects.delete(name)
        modal.Dict.objects.delete(name, allow_missing=True)
        for bad in ("", "has space", "a/b", "x" * 65):
            with self.assertRaises(exception.InvalidError):
                modal.Dict.from_name(bad)
        with self.assertRaises(RuntimeError):
            modal.Dict()
        with self.assertRaises(exception.NotFoundError):
            modal.Dict.from_id("di-doesnotexist00000000").len()

    def test_size_limits(self):
        with modal.Dict.ephemeral() as d:
            with self.assertRaises(exception.RequestSizeError) as cm:
                d.put("big", b"x" * (101 << 20))
            self.assertIn("Dict.put request is too large", str(cm.exception))
            with self.assertRaises(exception.RequestSizeError):
                d["k" * (20 << 10)] = 1
            d["ok"] = b"y" * (4 << 20)  # large values are fine
            self.assertEqual(len(d["ok"]), 4 << 20)

    def test_aio(self):
        async def go(d):
            await d.put.aio("x", 1)
            v = await d.get.aio("x")
            keys = [k async for k in d.keys.aio()]
            return v, keys

        with modal.Dict.ephemeral() as d:
            self.assertEqual(asyncio.run(go(d)), (1, ["x"]))

        async def eph():
            async with modal.Dict.ephemeral() as d:
                await d.put.aio("y", 2)
                return await d.get.aio("y")

        self.assertEqual(asyncio.run(eph()), 2)

    def test_server_never_unpickles(self):
        # The server keeps the client's pickle, byte for byte.
        with modal.Dict.ephemeral() as d:
            raw = pickle.dumps("plain", protocol=4)
            d["s"] = "plain"
            from gust import _http
            from gust._kv import b64d, b64url
            resp = _http.get_client().json("GET", f"/v1/dicts/{d.object_id}/entries/{b64url(pickle.dumps('s', protocol=4))}")
            self.assertEqual(b64d(resp["value"]), raw)


class QueueTest(unittest.TestCase):
    def test_queue_api(self):
        with modal.Queue.ephemeral() as q:
            q.put("some value")
            q.put(123)
            self.assertEqual(q.get(), "some value")
            self.assertEqual(q.get(), 123)
            q.put(0)
            q.put(1, partition="foo")
            q.put(2, partition="bar")
            self.assertEqual(q.get(partition="bar"), 2)
            q.put(3, partition="foo", partition_ttl=10)
            q.put(1)
            self.assertEqual([v for v in q.iterate()], [0, 1])
            self.assertEqual(q.len(), 2)
            self.assertEqual(q.len(partition="foo"), 2)
            self.assertEqual(q.len(total=True), 4)
            q.put_many([5, 6, 7])
            self.assertEqual(q.get_many(2), [0, 1])
            self.assertEqual(q.get_many(10, block=False), [5, 6, 7])
            self.assertIsNone(q.get(block=False))
            self.assertEqual(q.get_many(3, block=False), [])
            q.clear(partition="foo")
            self.assertEqual(q.len(partition="foo"), 0)
            q.put(1, partition="x")
            q.clear(all=True)
            self.assertEqual(q.len(total=True), 0)
            with self.assertRaises(exception.InvalidError):
                q.clear(partition="x", all=True)
            with self.assertRaises(exception.InvalidError):
                q.len(partition="x", total=True)

    def test_blocking_get(self):
        with modal.Queue.ephemeral() as q:
            t0 = time.monotonic()
            with self.assertRaises(queue.Empty):
                q.get(timeout=0.3)
            self.assertGreaterEqual(time.monotonic() - t0, 0.29)
            with self.assertRaises(queue.Empty):
                q.get_many(3, timeout=0.1)
            put_at = []

            def later():
                time.sleep(0.3)
                put_at.append(time.monotonic())
                q.put("late")

            threading.Thread(target=later).start()
            self.assertEqual(q.get(timeout=10), "late")
            self.assertLess(time.monotonic() - put_at[0], 0.2)

    def test_iterate_waits(self):
        with modal.Queue.ephemeral() as q:
            q.put(1)

            def later():
                time.sleep(0.3)
                q.put(2)

            threading.Thread(target=later).start()
            self.assertEqual(list(q.iterate(item_poll_timeout=2.0)), [1, 2])
            self.assertEqual(q.len(), 2)  # iterate takes nothing

    def test_limits_and_errors(self):
        with modal.Queue.ephemeral() as q:
            with self.assertRaises(exception.RequestSizeError):
                q.put(b"x" * ((1 << 20) + 1))
            for bad in ("", "p" * 65):
                with self.assertRaises(exception.InvalidError):
                    q.put(1, partition=bad)
            q.put_many(list(range(5000)), partition="full")
            with self.assertRaises(queue.Full):
                q.put("one more", partition="full", block=False)
            t0 = time.monotonic()
            with self.assertRaises(queue.Full):
                q.put("one more", partition="full", timeout=0.3)
            self.assertGreaterEqual(time.monotonic() - t0, 0.29)

            # A blocked put gets in when a get makes room.
            done = []

            def putter():
                q.put("waited", partition="full", timeout=10)
                done.append(True)

            th = threading.Thread(target=putter)
            th.start()
            time.sleep(0.2)
            self.assertEqual(q.get(partition="full"), 0)
            th.join(10)
            self.assertEqual(done, [True])
            self.assertEqual(q.len(partition="full"), 5000)
        name = unique("q")
        modal.Queue.objects.create(name)
        with self.assertRaises(exception.AlreadyExistsError):
            modal.Queue.objects.create(name)
        self.assertIn(name, [x.name for x in modal.Queue.objects.list()])
        modal.Queue.objects.delete(name)
        with self.assertRaises(exception.NotFoundError):
            modal.Queue.from_name(name).put(1)

    def test_named_queue_shared(self):
        name = unique("q")
        a = modal.Queue.from_name(name, create_if_missing=True)
        self.addCleanup(modal.Queue.objects.delete, name, allow_missing=True)
        b = modal.Queue.from_name(name)
        a.put({"x": 1})
        self.assertEqual(b.get(timeout=5), {"x": 1})
        self.assertEqual(a.info().name, name)


if __name__ == "__main__":
    unittest.main()
