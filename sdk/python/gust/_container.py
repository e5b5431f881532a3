"""Whether this process runs inside a gust function container (the runner sets GUST_IS_REMOTE=1).

Inside one, decorators only describe functions: nothing is published, built or uploaded while
the user's module is imported.
"""

import os


def is_local() -> bool:
    """True on the machine that launched the app, False inside a function's container (``modal.is_local``)."""
    return os.environ.get("GUST_IS_REMOTE") != "1"


def current_input_id():
    """The id of the input this code runs for (``modal.current_input_id``), or None outside a
    function's container."""
    import sys

    runner = sys.modules.get("gust._runner")
    return runner.current_input_id() if runner is not None else None


def current_function_call_id():
    """The id of the function call this code runs for (``modal.current_function_call_id``),
    or None outside a function's container."""
    import sys

    runner = sys.modules.get("gust._runner")
    return runner.current_function_call_id() if runner is not None else None
