"""A Modal program written with `import modal`: run by `gust run --modal-compat`."""
import sys

import modal
import modal.exception
from modal.exception import NotFoundError
from modal.queue import Queue

app = modal.App("smallgaps-compat")


@app.function()
def where():
    import modal
    import modal.dict
    return f"{modal.__name__} {modal.exception.__name__} {modal.dict.Dict.__module__} {modal.is_local()}"


@app.local_entrypoint()
def main():
    print("RESULT local", modal.__name__, NotFoundError.__module__, Queue.__module__, modal.App.__module__)
    print("RESULT remote", where.remote())
