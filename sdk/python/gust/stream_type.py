"""Where an exec's output goes, as in ``modal.stream_type``."""

import enum
import subprocess


class StreamType(enum.Enum):
    """``PIPE``: keep it for ``process.stdout``/``stderr``; ``STDOUT``: print it here as it
    arrives; ``DEVNULL``: discard it."""

    DEVNULL = subprocess.DEVNULL
    PIPE = subprocess.PIPE
    STDOUT = subprocess.STDOUT
