"""Image: the filesystem a sandbox starts from, as in ``modal.Image``.

Images are lazy: ``Image.debian_slim()`` only describes one; it is built (or found in the
server's cache) when a sandbox first needs it.
"""

from __future__ import annotations

import threading
from typing import Optional

from . import exception as exc
from . import output
from ._http import Client, get_client


class Image:
    """A container image. Make one with ``Image.debian_slim()`` or ``Image.from_id(...)``."""

    def __init__(self, *, _spec: Optional[dict] = None, _image_id: Optional[str] = None, _data: Optional[dict] = None):
        self._spec = _spec  # the body of POST /v1/images, for images still to resolve
        self._image_id = _image_id
        self._data = _data
        self._client: Optional[Client] = None  # the client that built _image_id (for _spec images)
        self._lock = threading.Lock()

    @classmethod
    def debian_slim(cls, python_version: Optional[str] = None, force_build: bool = False) -> "Image":
        """Debian (bookworm) with Python. ``python_version`` may be None or the host's version."""
        spec: dict = {"kind": "debian_slim"}
        if python_version is not None:
            spec["python_version"] = str(python_version)
        return cls(_spec=spec)

    @classmethod
    def from_id(cls, image_id: str, client: Optional[Client] = None) -> "Image":
        """An image already known to the server, e.g. from ``Sandbox.snapshot_filesystem()``."""
        if not isinstance(image_id, str) or not image_id:
            raise exc.InvalidError("Image.from_id needs an image id such as 'im-...'")
        return cls(_image_id=image_id)

    @property
    def object_id(self) -> str:
        """The image id (``im-...``); resolves (builds) the image if it has not been yet."""
        return self._resolve(get_client())

    def hydrate(self, client: Optional[Client] = None) -> "Image":
        """Resolve the image now (build it if needed) and return it."""
        self._resolve(client or get_client())
        return self

    def _resolve(self, client: Client) -> str:
        if self._image_id is not None and (self._spec is None or self._client is client):
            return self._image_id
        with self._lock:
            if self._image_id is None or self._client is not client:
                self._image_id, self._data = _build(client, self._spec or {"kind": "debian_slim"})
                self._client = client
        return self._image_id

    def _forget(self) -> bool:
        """Drop a resolved id so the next use resolves again; False for fixed ids."""
        if self._spec is None:
            return False
        with self._lock:
            self._image_id = None
        return True

    def _not_yet(name):  # noqa: N805 - builds the methods below
        def method(self, *args, **kwargs):
            raise exc.InvalidError(
                f"Image.{name}() is not available in this gust yet: the image builder (layers built "
                "from steps) is being written; for now sandboxes run Image.debian_slim() (Debian "
                "bookworm, Python 3.11) or a snapshot from sb.snapshot_filesystem()")
        method.__name__ = name
        method.__doc__ = f"Modal's Image.{name}; raises InvalidError until gust's image builder lands."
        return method

    apt_install = _not_yet("apt_install")
    pip_install = _not_yet("pip_install")
    pip_install_from_requirements = _not_yet("pip_install_from_requirements")
    run_commands = _not_yet("run_commands")
    env = _not_yet("env")
    workdir = _not_yet("workdir")
    add_local_file = _not_yet("add_local_file")
    add_local_dir = _not_yet("add_local_dir")
    add_local_python_source = _not_yet("add_local_python_source")
    from_registry = staticmethod(_not_yet("from_registry"))
    from_dockerfile = staticmethod(_not_yet("from_dockerfile"))
    del _not_yet

    def __repr__(self) -> str:
        if self._image_id:
            return f"Image({self._image_id})"
        return f"Image.{(self._spec or {}).get('kind', 'unknown')}()"


def _build(client: Client, spec: dict) -> "tuple[str, dict]":
    """POST /v1/images and follow its log stream; return (image_id, IMAGE)."""
    stream = client.stream("POST", "/v1/images", json=spec)
    image = None
    try:
        for line in stream:
            if "log" in line:
                output.log(str(line["log"]))
            elif "image" in line:
                image = line["image"]
            elif "error" in line:
                err = line["error"] or {}
                raise exc.ImageBuildError(err.get("message") or "image build failed")
    finally:
        stream.close()
    if not image or not image.get("image_id"):
        raise exc.ImageBuildError("the image build stream ended without an image; see the gust server's log")
    return image["image_id"], image
