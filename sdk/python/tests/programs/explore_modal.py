"""Modal programs' habits that gust once missed (found by running programs written from Modal's
docs): methods calling each other as self.method.local() / .remote() in the container, a
function calling itself with .remote() (it once waited forever: the nested input was held on
the caller's own busy container),
Secret.from_local_environ in a module imported again by containers without the variable, and
FunctionCall.get(timeout=) raising Python's own TimeoutError. Run by test_smallgaps.py with
EXPLORE_LOCAL set; prints RESULT lines."""

import time

import modal

app = modal.App("explore-modal")
local_secret = modal.Secret.from_local_environ(["EXPLORE_LOCAL"])


@app.function(secrets=[local_secret])
def with_secret():
    import os
    return os.environ.get("EXPLORE_LOCAL")


@app.function()
def without_secret():  # its container imports this module without EXPLORE_LOCAL
    return "imported"


# Built here; in the container the Dockerfile is absent and these must not fail the import.
df_image = modal.Image.from_dockerfile("explore.Dockerfile").dockerfile_commands("ENV EXPLORE_DFC=dfc")


@app.function(image=df_image)
def from_dockerfile():
    import os
    return open("/explore-df.txt").read().strip() + " " + os.environ.get("EXPLORE_DFC", "")


@app.function()
def slow():
    time.sleep(30)


@app.cls()
class Pair:
    k: int = modal.parameter(default=2)

    @modal.enter()
    def setup(self):
        self.first = self.one.local(1)

    @modal.method()
    def one(self, x):
        return x * self.k

    @modal.method()
    def both(self, x):
        fc = self.one.spawn(x + 1)
        return (self.first, self.one.local(x), self.one(x), fc.object_id[:3], self.one.remote(x + 2))


@app.function()
def countdown(n):
    return 0 if n == 0 else 1 + countdown.remote(n - 1)


@app.local_entrypoint()
def main():
    print("RESULT secret", with_secret.remote(), without_secret.remote())
    print("RESULT pair", Pair(k=3).both.remote(5))
    print("RESULT countdown", countdown.remote(4))
    print("RESULT dockerfile", from_dockerfile.remote())
    fc = slow.spawn()
    try:
        fc.get(timeout=0.5)
        print("RESULT get_timeout none")
    except TimeoutError as e:
        print("RESULT get_timeout", isinstance(e, modal.exception.TimeoutError))
    fc.cancel()
