"""Packing local files for Image.add_local_* : a deterministic tar (same files, same bytes, so
the server's layer cache hits), uploaded once by its SHA-256."""

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from . import exception as exc
from ._lazy import LazyModule

tarfile = LazyModule("tarfile")

# ignore=: a list of .dockerignore-style patterns, a FilePatternMatcher, or a function of the
# path relative to the directory (a pathlib.Path), as in Modal.
Ignore = Any


def _add(tar: "tarfile.TarFile", path: str, arcname: str) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(arcname)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = st.st_mode & 0o7777
    if os.path.islink(path):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        tar.addfile(info)
    elif os.path.isdir(path):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif os.path.isfile(path):
        info.size = st.st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)


def pack(local: str, *, single_file_name: Optional[str] = None, ignore: Ignore = None) -> bytes:
    """A tar of a directory's contents (or of one file, named single_file_name)."""
    from .file_pattern_matcher import as_predicate
    ignored, prune = as_predicate(ignore)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if single_file_name is not None:
            if not os.path.isfile(local):
                raise exc.InvalidError(f"add_local_file: {local!r} is not a file")
            _add(tar, local, single_file_name)
        else:
            if not os.path.isdir(local):
                raise exc.InvalidError(f"add_local_dir: {local!r} is not a directory")
            for root, dirs, files in os.walk(local):
                dirs.sort()
                rel_root = os.path.relpath(root, local)
                for name in sorted(dirs + files):
                    rel = os.path.normpath(os.path.join(rel_root, name))
                    if ignored(Path(rel)):
                        if name in dirs and prune:
                            dirs.remove(name)
                        continue
                    _add(tar, os.path.join(root, name), rel)
    return buf.getvalue()


def upload(client, data: bytes) -> str:
    """Store a tar on the server unless it is there already; return its SHA-256."""
    sum_ = hashlib.sha256(data).hexdigest()
    try:
        client.request("GET", f"/v1/blobs/{sum_}")
        return sum_
    except exc.NotFoundError:
        pass
    out = client.json("POST", "/v1/blobs", body=data, content_type="application/x-tar", timeout=600)
    if out.get("blob") != sum_:
        raise exc.ImageBuildError("the server stored the uploaded files under another checksum; try again")
    return sum_
