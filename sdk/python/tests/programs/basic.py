"""A Modal program, unchanged but for the import: what test_functions.py runs."""
import os
import sys
import threading
import time

import gust as modal

app = modal.App("fn-basic")
image = modal.Image.debian_slim()


@app.function(image=image)
def square(x):
    print(f"squaring {x}")
    return x * x


@app.function()
def fail(msg):
    raise ValueError(msg)


@app.function()
def add(a, b=10):
    return a + b


@app.function()
def countdown(n):
    for i in range(n, 0, -1):
        yield i


@app.function(timeout=2)
def sleepy(s):
    time.sleep(s)
    return s


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.1, backoff_coefficient=1.0))
def flaky(n):
    p = "/tmp/attempts"
    c = int(open(p).read()) + 1 if os.path.exists(p) else 1
    open(p, "w").write(str(c))
    if c < n:
        raise RuntimeError(f"attempt {c}")
    return c


@app.function()
@modal.concurrent(max_inputs=4)
def wait_a_bit(i):
    time.sleep(0.5)
    return i


@app.function()
def where():
    return {"remote": not modal.is_local(), "cwd": os.getcwd(), "input": modal.current_input_id(),
            "call": modal.current_function_call_id()}


@app.function()
def fan_out(n):
    # Functions call functions, as in Modal: one remote call and a map, from inside a container.
    return square.remote(n) + sum(square.map(range(n)))


@app.function()
def big(data, n):
    # Megabytes in, megabytes out.
    return len(data), b"y" * n


@app.function()
def in_sandbox(cmd):
    # Functions create sandboxes too, as in Modal.
    sb = modal.Sandbox.create(app=modal.App.lookup("fn-basic-sandboxes", create_if_missing=True))
    try:
        p = sb.exec("sh", "-c", cmd)
        return p.stdout.read().strip()
    finally:
        sb.terminate()


@app.cls()
class Counter:
    start: int = modal.parameter(default=0)

    @modal.enter()
    def setup(self):
        self.loaded = time.time()
        self.calls = 0

    @modal.method()
    def bump(self, k):
        self.calls += 1
        return {"value": self.start + k, "calls": self.calls, "loaded": self.loaded}


def main():
    with modal.enable_output(), app.run():
        print("RESULT square", square.remote(7))
        print("RESULT local", square.local(3))
        print("RESULT map", list(square.map(range(5))))
        print("RESULT starmap", list(add.starmap([(1, 2), (3, 4)])))
        print("RESULT kwargs", add.remote(1, b=2))
        call = square.spawn(9)
        print("RESULT spawn", call.get(timeout=60))
        try:
            fail.remote("boom")
        except ValueError as e:
            print("RESULT raised", type(e).__name__, str(e))
        print("RESULT map_exc", [type(r).__name__ if isinstance(r, Exception) else r
                                 for r in fail.map(["a", "b"], return_exceptions=True)])
        print("RESULT gen", list(countdown.remote_gen(3)))
        try:
            sleepy.remote(30)
        except modal.exception.FunctionTimeoutError:
            print("RESULT timeout ok")
        print("RESULT flaky", flaky.remote(3))
        t = time.time()
        print("RESULT concurrent", sorted(wait_a_bit.map(range(4))), "fast" if time.time() - t < 3 else "slow")
        w = where.remote()
        print("RESULT where", w["remote"], w["input"].startswith("in-"), w["call"].startswith("fc-"), modal.current_input_id())
        print("RESULT fan_out", fan_out.remote(4))
        print("RESULT in_sandbox", in_sandbox.remote("echo from-a-sandbox"))
        n, out = big.remote(b"x" * (8 << 20), 12 << 20)
        print("RESULT big", n, len(out))
        c = Counter(start=100)
        a = c.bump.remote(1)
        b = c.bump.remote(2)
        print("RESULT cls", a["value"], b["value"], b["calls"], a["loaded"] == b["loaded"])
        print("RESULT cls_default", Counter().bump.remote(5)["value"])
        try:
            square.remote(threading.Lock())  # a lock pickles nowhere
            print("RESULT unpicklable sent")
        except (modal.exception.SerializationError, Exception) as e:
            print("RESULT unpicklable", type(e).__name__)
    print("DONE")


if __name__ == "__main__":
    main()
