"""Where an exec's output goes, as in ``modal.stream_type``."""

import enum

# subprocess's values (DEVNULL -3, PIPE -1, STDOUT -2), written out so that importing gust does
# not import subprocess.


class StreamType(enum.Enum):
    """``PIPE``: keep it for ``process.stdout``/``stderr``; ``STDOUT``: print it here as it
    arrives; ``DEVNULL``: discard it."""

    DEVNULL = -3
    PIPE = -1
    STDOUT = -2
