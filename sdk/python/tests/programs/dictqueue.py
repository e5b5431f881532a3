"""A Modal program with a Dict and a Queue shared between the caller and functions in
containers, unchanged but for the import: what test/integration/dictqueue_test.go runs.

argv[1], if given, is the ID of another workspace's Dict: the function must not reach it.
"""
import queue
import statistics
import sys
import time

import gust as modal

app = modal.App("dq-program")
shared = modal.Dict.from_name("dq-shared", create_if_missing=True)


@app.function()
def producer(qid, n, gap):
    q = modal.Queue.from_id(qid)
    # The caller's get is blocked by now: each put must wake it at once.
    for i in range(n):
        time.sleep(gap)
        q.put({"i": i, "t": time.time()})
    q.put_many(["a", "b", "c"], partition="letters")
    return n


@app.function()
def dict_worker(k):
    # A named Dict, from the module level, read and written from a container.
    seen = shared.get("from_caller")
    shared[f"from_fn_{k}"] = {"k": k, "seen": seen}
    created = shared.put("once", k, skip_if_exists=True)
    return {"seen": seen, "created": created, "len": shared.len(), "has": "from_caller" in shared}


@app.function()
def foreign(other_dict_id):
    try:
        modal.Dict.from_id(other_dict_id).get("k")
        return "reached"
    except modal.exception.NotFoundError:
        return "NotFoundError"


def main():
    other = sys.argv[1] if len(sys.argv) > 1 else None
    with app.run():
        shared.clear()
        shared["from_caller"] = [1, 2, 3]
        outs = list(dict_worker.map(range(4)))
        print("RESULT dict_seen", sorted(set(str(o["seen"]) for o in outs)))
        print("RESULT dict_created", sum(1 for o in outs if o["created"]))
        print("RESULT dict_has", all(o["has"] for o in outs))
        print("RESULT dict_keys", sorted(k for k in shared.keys()))
        print("RESULT dict_fn_value", shared["from_fn_2"])
        print("RESULT dict_once", shared["once"] in range(4))

        with modal.Queue.ephemeral() as q:
            n = 20
            call = producer.spawn(q.object_id, n, 0.05)
            lat = []
            got = []
            for _ in range(n):
                v = q.get(timeout=120)
                lat.append(time.time() - v["t"])
                got.append(v["i"])
            print("RESULT queue_order", got == list(range(n)))
            print("RESULT queue_letters", q.get_many(10, partition="letters", timeout=30))
            print("RESULT producer", call.get(timeout=60))
            lat.sort()
            print("RESULT queue_latency_ms", f"p50={statistics.median(lat) * 1000:.1f} max={lat[-1] * 1000:.1f}")
            print("RESULT queue_fast", statistics.median(lat) < 0.25)
            qid = q.object_id
        try:
            modal.Queue.from_id(qid).len()
            print("RESULT ephemeral_gone", False)
        except modal.exception.NotFoundError:
            print("RESULT ephemeral_gone", True)

        if other:
            print("RESULT foreign", foreign.remote(other))


if __name__ == "__main__":
    main()
