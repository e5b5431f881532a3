"""Whether this process runs inside a gust function container (the runner sets GUST_IS_REMOTE=1).

Inside one, decorators only describe functions: nothing is published, built or uploaded while
the user's module is imported.
"""

import os


def is_local() -> bool:
    """True on the machine that launched the app, False inside a function's container (``modal.is_local``)."""
    return os.environ.get("GUST_IS_REMOTE") != "1"
