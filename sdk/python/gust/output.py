"""``enable_output``: print image build logs and sandbox progress while it is active."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Print image build logs and sandbox creation progress to stderr inside this block.

    Usage::

        with gust.enable_output():
            sb = gust.Sandbox.create(app=app)
    """
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def is_enabled() -> bool:
    return _depth > 0


def log(msg: str) -> None:
    """Print msg to stderr if output is enabled."""
    if _depth > 0:
        print(msg, file=sys.stderr, flush=True)
