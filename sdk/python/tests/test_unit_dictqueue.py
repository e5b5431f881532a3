"""Unit tests of Dict and Queue that need no server: names, partition keys, request sizes,
and the requests they send (a fake client records them).
Run: cd sdk/python && python3 -m unittest discover -s tests -p 'test_unit*.py'
"""

import base64
import pickle
import queue
import unittest

import gust
from gust import _kv, exception


class FakeClient:
    """Answers like the server would for the few requests these tests make."""

    def __init__(self, answers):
        self.answers = answers
        self.sent = []

    def json(self, method, path, **kw):
        self.sent.append((method, path, kw))
        a = self.answers.get((method, path.split("/")[-1]))
        if isinstance(a, Exception):
            raise a
        return a

    def request(self, method, path, **kw):
        self.sent.append((method, path, kw))
        a = self.answers.get((method, path.split("/")[-1]))
        if isinstance(a, Exception):
            raise a
        return 204, b""


class NamesTest(unittest.TestCase):
    def test_names(self):
        for ok in ("a", "my-dict_1.v2", "x" * 64):
            _kv.check_object_name(ok, "Dict")
        for bad in ("", "a b", "a/b", "x" * 65, "ap-" + "a" * 22, 3):
            with self.assertRaises(exception.InvalidError):
                _kv.check_object_name(bad, "Dict")

    def test_constructors(self):
        with self.assertRaises(RuntimeError):
            gust.Dict()
        with self.assertRaises(RuntimeError):
            gust.Queue()
        d = gust.Dict.from_name("d")
        self.assertEqual(d.name, "d")
        self.assertEqual(repr(d), "Dict.from_name('d')")

    def test_partition_keys(self):
        self.assertEqual(gust.Queue.validate_partition_key(None), b"")
        self.assertEqual(gust.Queue.validate_partition_key("p"), b"p")
        for bad in ("", "é" * 33):  # 66 bytes of UTF-8
            with self.assertRaises(exception.InvalidError):
                gust.Queue.validate_partition_key(bad)


class RequestsTest(unittest.TestCase):
    def queue(self, answers):
        c = FakeClient(answers)
        return gust.Queue._hydrated({"queue_id": "qu-1", "name": "q"}, c), c

    def test_put_sends_pickles(self):
        q, c = self.queue({})
        q.put({"a": 1}, partition="p", partition_ttl=10)
        method, path, kw = c.sent[0]
        self.assertEqual((method, path), ("POST", "/v1/queues/qu-1/put"))
        body = kw["json"]
        self.assertEqual(pickle.loads(base64.b64decode(body["values"][0])), {"a": 1})
        self.assertEqual((body["partition"], body["partition_ttl"]), ("p", 10))

    def test_full_and_empty(self):
        q, c = self.queue({("POST", "put"): exception.ResourceExhaustedError("full"),
                           ("POST", "get"): {"values": []}})
        with self.assertRaises(queue.Full):
            q.put(1, block=False)
        self.assertEqual(c.sent[-1][2]["json"]["timeout"], 0)
        with self.assertRaises(queue.Full):
            q.put(1, timeout=0)
        self.assertIsNone(q.get(block=False))
        with self.assertRaises(queue.Empty):
            q.get(timeout=0)

    def test_request_size(self):
        q, _ = self.queue({})
        with self.assertRaises(exception.RequestSizeError) as cm:
            q.put_many([b"x" * (40 << 20), b"y" * (40 << 20)])
        self.assertIn("Queue.put_many request is too large", str(cm.exception))

    def test_dict_get_missing(self):
        c = FakeClient({})
        d = gust.Dict._hydrated({"dict_id": "di-1", "name": "d"}, c)
        c.answers[("GET", _kv.b64url(pickle.dumps("k", protocol=4)))] = {"found": False}
        self.assertEqual(d.get("k", 5), 5)
        with self.assertRaises(KeyError):
            d["k"]
        method, path, _ = c.sent[0]
        self.assertEqual(path, "/v1/dicts/di-1/entries/" + _kv.b64url(pickle.dumps("k", protocol=4)))


if __name__ == "__main__":
    unittest.main()
