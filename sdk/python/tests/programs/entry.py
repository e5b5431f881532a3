"""A program for `gust run`: a local entrypoint with parameters."""
import gust as modal

app = modal.App("fn-entry")


@app.function()
def greet(name, times):
    return " ".join([f"hello {name}"] * times)


@app.local_entrypoint()
def main(name: str = "world", times: int = 1, shout: bool = False):
    msg = greet.remote(name, times)
    print("RESULT", msg.upper() if shout else msg)
