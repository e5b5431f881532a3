"""A program for `gust deploy`: then Function.from_name finds it, from Python and from Go."""
import os

import gust as modal

app = modal.App("fn-deployed")


@app.function(secrets=[modal.Secret.from_name("fn-test-secret")])
def secret_value(key):
    return os.environ.get(key, "missing")


@app.function()
def double(x):
    print("doubling", x)
    return 2 * x


@app.function(schedule=modal.Period(seconds=1))
def heartbeat():
    print("heartbeat tick")
