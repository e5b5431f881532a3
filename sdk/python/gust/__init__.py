"""gust: self-hosted serverless functions and sandboxes with Modal's Python API.

    import gust as modal

    app = modal.App("my-app")

    @app.function(gpu="H100", timeout=600)
    def square(x):
        return x * x

    @app.local_entrypoint()
    def main():
        print(square.remote(3), list(square.map(range(10))))

Run it with ``gust run my_app.py`` (or ``with app.run():`` in a script), deploy it with
``gust deploy my_app.py``. Sandboxes::

    sb = modal.Sandbox.create(app=modal.App.lookup("my-app", create_if_missing=True))
    print(sb.exec("echo", "hi").stdout.read())

Standard library only. The server is found through GUST_SERVER_URL and GUST_TOKEN_ID with
GUST_TOKEN_SECRET (or GUST_TOKEN), or the config file that ``gust up`` and ``gust token set``
write (~/.config/gust/config.json; GUST_PROFILE picks a profile).
"""

from . import exception, functions
from ._container import current_function_call_id, current_input_id, is_local
from ._partial import batched, concurrent, enter, exit, method, parameter
from ._web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app
from ._version import __version__
from .app import App, LocalEntrypoint
from .cls import Cls
from .container_process import ContainerProcess
from .exception import Error
from .file_io import FileIO
from .functions import Function, FunctionCall
from .image import Image
from .io_streams import StreamReader, StreamWriter
from .output import enable_output
from .retries import Retries
from .sandbox import Sandbox
from .sandbox_fs import FileInfo, FileType, SandboxFilesystem
from .schedule import Cron, Period
from .secret import Secret
from .stream_type import StreamType

version = __version__

# Imported on first use, not with the package: every function container imports gust as it
# starts, and these (asyncio, decimal, ...) would add to each cold start.
_LAZY = {"Dict": ("dict", "Dict"), "Volume": ("volume", "Volume"), "Queue": ("queue", "Queue"), "billing": ("billing", None),
         "Workspace": ("billing", "Workspace"), "Probe": ("tunnel", "Probe"), "Tunnel": ("tunnel", "Tunnel"),
         "forward": ("tunnel", "forward"), "FilePatternMatcher": ("file_pattern_matcher", "FilePatternMatcher"),
         "file_pattern_matcher": ("file_pattern_matcher", None), "gpu": ("gpu", None),
         "CloudBucketMount": ("_unavailable", "CloudBucketMount"), "NetworkFileSystem": ("_unavailable", "NetworkFileSystem"),
         "Proxy": ("_unavailable", "Proxy"), "SchedulerPlacement": ("_unavailable", "SchedulerPlacement"),
         "interact": ("_unavailable", "interact")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gust' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    mod = importlib.import_module("." + module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value

__all__ = [
    "App", "CloudBucketMount", "Cls", "ContainerProcess", "Cron", "Dict", "Error", "FileIO", "FileInfo", "FilePatternMatcher", "FileType", "Function", "FunctionCall",
    "Image", "LocalEntrypoint", "NetworkFileSystem", "Period", "Probe", "Proxy", "Queue", "Retries", "Sandbox", "SandboxFilesystem", "SchedulerPlacement", "Secret", "StreamReader",
    "StreamType", "StreamWriter", "Tunnel", "Volume", "Workspace", "batched", "billing", "concurrent", "current_function_call_id", "current_input_id", "enable_output", "enter", "exception", "exit", "forward", "functions",
    "gpu", "interact", "is_local", "method", "parameter", "version", "__version__",
    "asgi_app", "fastapi_endpoint", "web_endpoint", "web_server", "wsgi_app",
]
