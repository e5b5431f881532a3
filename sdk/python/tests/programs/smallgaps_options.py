"""Function.with_options, Cls.with_options and @modal.batched: what test_smallgaps.py runs."""
import os
import time

import gust as modal

app = modal.App("smallgaps-options")


def _memory_limit():
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(p) as f:
                return int(f.read().strip()) // (1 << 20)
        except (OSError, ValueError):
            pass
    return None


@app.function(memory=256, env={"MODE": "base"})
def resources():
    return os.environ.get("MODE"), _memory_limit(), os.environ.get("GUST_CONTAINER_ID")


@app.function()
def slow(s):
    time.sleep(s)
    return s


@app.cls(env={"MODE": "base"})
class Model:
    size: int = modal.parameter(default=1)

    @modal.method()
    def describe(self):
        return self.size, os.environ.get("MODE"), _memory_limit()


@app.function(max_containers=1)
@modal.batched(max_batch_size=4, wait_ms=300)
def add(xs, ys):
    return [(x + y, len(xs)) for x, y in zip(xs, ys)]


@app.function(max_containers=1)
@modal.batched(max_batch_size=3, wait_ms=200)
def picky(xs):
    if any(x < 0 for x in xs):
        raise ValueError(f"negative in batch of {len(xs)}")
    if 99 in xs:
        return xs[:-1]  # one result short: the batch fails
    return [x * 10 for x in xs]


@app.cls(max_containers=1)
class Batcher:
    factor: int = modal.parameter(default=2)

    @modal.batched(max_batch_size=5, wait_ms=300)
    async def scale(self, xs):
        return [(x * self.factor, len(xs)) for x in xs]


@app.local_entrypoint()
def main():
    mode, mem, cid = resources.remote()
    print("RESULT base", mode, mem)
    v = resources.with_options(memory=512, env={"MODE": "variant"})
    vmode, vmem, vcid = v.remote()
    print("RESULT variant", vmode, vmem, vcid != cid)
    again = resources.with_options(memory=512, env={"MODE": "variant"})
    print("RESULT same_variant", again.object_id == v.object_id, v.object_id != resources.object_id)
    print("RESULT base_after", resources.remote()[0])
    try:
        slow.with_options(timeout=1, retries=0).remote(5)
        print("RESULT timeout none")
    except modal.exception.FunctionTimeoutError as e:
        print("RESULT timeout FunctionTimeoutError")
    print("RESULT slow_base", slow.remote(0))
    big = Model.with_options(memory=384, env={"MODE": "cls-variant"})
    print("RESULT cls", Model(size=3).describe.remote(), big(size=4).describe.remote())
    sums = list(add.map([1, 2, 3, 4, 5, 6, 7, 8], [10, 20, 30, 40, 50, 60, 70, 80]))
    print("RESULT batched", [s for s, _ in sums], max(n for _, n in sums) > 1, all(n <= 4 for _, n in sums))
    print("RESULT single", add.remote(2, ys=3))
    calls = [picky.spawn(x) for x in (1, 2, -3)]
    outs = []
    for c in calls:
        try:
            outs.append(c.get())
        except ValueError as e:
            outs.append("ValueError")
    print("RESULT picky_error", outs)
    try:
        picky.remote(1, 2)
        print("RESULT picky_args none")
    except modal.exception.InvalidError as e:
        print("RESULT picky_args InvalidError")
    calls = [picky.spawn(99)]
    errs = []
    for c in calls:
        try:
            errs.append(c.get())
        except Exception as e:  # noqa: BLE001
            errs.append(type(e).__name__ + (":len" if "equal length" in str(e) else ""))
    print("RESULT picky_short", errs)
    scaled = list(Batcher(factor=3).scale.map(range(5)))
    print("RESULT cls_batched", [s for s, _ in scaled], max(n for _, n in scaled) > 1)
