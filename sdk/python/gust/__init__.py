"""gust: self-hosted sandboxes (and, next, functions) with Modal's Python API.

    import gust as modal

    app = modal.App.lookup("my-app", create_if_missing=True)
    sb = modal.Sandbox.create(app=app)
    print(sb.exec("echo", "hi").stdout.read())

Standard library only. The server is found through GUST_SERVER_URL and GUST_TOKEN, or the
config file that ``gust up`` writes (~/.config/gust/config.json).
"""

from . import exception
from ._version import __version__
from .app import App
from .container_process import ContainerProcess
from .exception import Error
from .file_io import FileIO
from .image import Image
from .io_streams import StreamReader, StreamWriter
from .output import enable_output
from .sandbox import Sandbox
from .secret import Secret
from .sandbox_fs import FileInfo, FileType, SandboxFilesystem
from .stream_type import StreamType

version = __version__

__all__ = [
    "App", "ContainerProcess", "Error", "FileIO", "FileInfo", "FileType", "Image", "Sandbox", "SandboxFilesystem", "Secret",
    "StreamReader", "StreamType", "StreamWriter", "enable_output", "exception", "version", "__version__",
]
