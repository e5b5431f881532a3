"""Image: the filesystem a sandbox starts from, as in ``modal.Image``.

Images are lazy: ``Image.debian_slim()`` only describes one; it is built (or found in the
server's cache) when a sandbox first needs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from typing import Any, Iterator, Optional

from . import _container, _local_files
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
        """Debian with Python from Debian's packages: ``python_version`` None or "3.11" (bookworm)
        or "3.13" (trixie); the server refuses others with the list of what it offers."""
        spec: dict = {"kind": "debian_slim"}
        if python_version is not None:
            spec["python_version"] = str(python_version)
        image = cls(_spec=spec)
        return image._forced(image, force_build)

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

    # Build steps (Modal's chainable API). Each returns a new Image; nothing is built until the
    # image is used (or hydrated). Steps that run commands become cached layers on the server.

    def _with_step(self, step: dict) -> "Image":
        spec = dict(self._spec) if self._spec is not None else {"kind": "from_id", "image_id": self._image_id}
        spec["steps"] = list(spec.get("steps", [])) + [step]
        return Image(_spec=spec)

    def run_commands(self, *commands, env: Optional[dict] = None, secrets=None, gpu=None,
                     force_build: bool = False) -> "Image":
        """Run shell commands in a build container; the result is a new layer."""
        cmds = _flatten(commands, "run_commands")
        if gpu is not None:
            raise exc.InvalidError("run_commands(gpu=...) is not supported: this gust has no GPUs for builds")
        step_env = {}
        for s in list(secrets or ()):
            step_env.update(_secret_env(s))
        step_env.update({k: v for k, v in (env or {}).items() if v is not None})
        step: dict = {"type": "run_commands", "commands": cmds}
        if step_env:
            step["env"] = step_env
        return self._forced(self._with_step(step), force_build)

    def apt_install(self, *packages, force_build: bool = False, secrets=None, gpu=None) -> "Image":
        """Install Debian packages (needs the build container to reach a Debian mirror)."""
        return self._forced(self._with_step({"type": "apt_install", "packages": _flatten(packages, "apt_install")}), force_build)

    def pip_install(self, *packages, index_url: Optional[str] = None, extra_index_url: Optional[str] = None,
                    find_links: Optional[str] = None, pre: bool = False, extra_options: str = "",
                    force_build: bool = False, secrets=None, gpu=None) -> "Image":
        """Install Python packages with pip in the image."""
        pkgs = _flatten(packages, "pip_install")
        if not pkgs:
            return self
        step: dict = {"type": "pip_install", "packages": pkgs}
        for key, val in (("index_url", index_url), ("extra_index_url", extra_index_url), ("find_links", find_links)):
            if val:
                step[key] = str(val)
        if pre:
            step["pre"] = True
        return self._forced(self._with_step(step), force_build)

    def uv_pip_install(self, *packages, requirements=None, find_links: Optional[str] = None,
                       index_url: Optional[str] = None, extra_index_url: Optional[str] = None, pre: bool = False,
                       extra_options: str = "", force_build: bool = False, uv_version: Optional[str] = None,
                       secrets=None, gpu=None) -> "Image":
        """Install Python packages with uv, as Modal's ``uv_pip_install``. gust's images come
        without uv: where the image has none, pip installs the same packages, and the build log
        says so. ``requirements`` are local files, copied into the image first."""
        if gpu is not None:
            raise exc.InvalidError("uv_pip_install(gpu=...) is not supported: this gust has no GPUs for builds")
        pkgs = _flatten(packages, "uv_pip_install")
        if isinstance(requirements, (str, os.PathLike)):
            requirements = [requirements]
        image, remotes = self, []
        for req in requirements or ():
            path, remote = _build_file(req, "requirements", "uv_pip_install")
            image, remotes = image.add_local_file(path, remote, copy=True), remotes + [remote]
        if not pkgs and not remotes:
            return self
        step: dict = {"type": "uv_pip_install"}
        if pkgs:
            step["packages"] = pkgs
        if remotes:
            step["requirements"] = remotes
        for key, val in (("index_url", index_url), ("extra_index_url", extra_index_url), ("find_links", find_links),
                         ("extra_options", extra_options)):
            if val:
                step[key] = str(val)
        if pre:
            step["pre"] = True
        step_env = {}
        for s in list(secrets or ()):
            step_env.update(_secret_env(s))
        if step_env:
            step["env"] = step_env
        return self._forced(image._with_step(step), force_build)

    def run_function(self, raw_f, *, secrets=(), volumes=None, network_file_systems=None, gpu=None, cpu=None,
                     memory=None, timeout: float = 3600, cloud=None, region=None, force_build: bool = False,
                     args=(), kwargs=None, include_source=None) -> "Image":
        """Run a Python function in the image as a build step and keep its changes to the
        filesystem (Modal's ``run_function``), e.g. to download model weights at build time.

        The function's code is shipped as a function's is (its module and the local modules it
        imports), with ``args``/``kwargs`` pickled; the step is cached by that code, the
        arguments and the image beneath, like other steps. It runs as ``python3`` in the build
        container, from /root, with the secrets' values in its environment."""
        if gpu is not None:
            raise exc.InvalidError("run_function(gpu=...) is not supported: this gust has no GPUs for builds")
        if volumes or network_file_systems:
            raise exc.InvalidError("run_function(volumes=...) is not supported by gust yet: fetch the data in the function")
        raw = getattr(raw_f, "_gust_raw_f", None) or raw_f
        if not callable(raw) or isinstance(raw, type):
            raise exc.InvalidError(f"run_function needs a function, got {raw_f!r}")
        if getattr(raw_f, "_gust_raw_f", None) is not None:
            raise exc.InvalidError("run_function takes a plain function, not one decorated with @app.function()")
        if "<locals>" in (getattr(raw, "__qualname__", "") or "").split("."):
            raise exc.InvalidError(f"run_function: {raw.__qualname__} must be defined at the top level of its module "
                                   "(the build container imports it from there)")
        import pickle
        try:
            payload = pickle.dumps((tuple(args), dict(kwargs or {})), protocol=4)
        except Exception as e:  # noqa: BLE001 - pickle raises many kinds
            raise exc.InvalidError(f"run_function: args and kwargs must be picklable: {e}") from None
        _check_number_arg("timeout", timeout)
        env = {}
        for s in list(secrets or ()):
            env.update(_secret_env(s))
        step = {"type": "_run_function", "fn": raw, "payload": payload, "timeout": int(timeout), "env": env}
        return self._forced(self._with_step(step), force_build)

    def build(self, app=None) -> "Image":
        """Build the image now rather than when a function first needs it (Modal's
        ``Image.build(app)``); inside a container it does nothing."""
        if _container.is_local():
            self.hydrate()
        return self

    def pip_install_from_requirements(self, requirements_txt, find_links: Optional[str] = None,
                                      *, index_url: Optional[str] = None, extra_index_url: Optional[str] = None,
                                      pre: bool = False, force_build: bool = False, secrets=None, gpu=None) -> "Image":
        """pip install -r a local requirements file (copied into the image first)."""
        path, remote = _build_file(requirements_txt, "requirements", "pip_install_from_requirements")
        cmd = "python -m pip install --no-cache-dir --break-system-packages"
        for flag, val in (("--index-url", index_url), ("--extra-index-url", extra_index_url), ("--find-links", find_links)):
            if val:
                cmd += f" {flag} {shlex.quote(str(val))}"
        if pre:
            cmd += " --pre"
        image = self.add_local_file(path, remote, copy=True)
        return self._forced(image._with_step({"type": "run_commands", "commands": [f"{cmd} -r {remote}"]}), force_build)

    def env(self, vars: dict) -> "Image":
        """Set environment variables for every sandbox made from the image."""
        if not isinstance(vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in vars.items()):
            raise exc.InvalidError("Image.env needs a dict of strings")
        return self._with_step({"type": "env", "env": dict(vars)})

    def entrypoint(self, entrypoint_commands) -> "Image":
        """Record the image's entrypoint (metadata: sandboxes run the command they are given)."""
        cmds = _flatten([entrypoint_commands], "entrypoint")
        return self._with_step({"type": "entrypoint", "commands": cmds})

    def workdir(self, path) -> "Image":
        """Set the working directory of every sandbox made from the image."""
        return self._with_step({"type": "workdir", "path": str(path)})

    def add_local_file(self, local_path, remote_path: str, *, copy: bool = False) -> "Image":
        """Put a local file into the image at remote_path. With copy=False (Modal's default) no
        build step may follow; the file is read again each time the image is resolved."""
        remote = str(remote_path)
        if remote.endswith("/"):
            remote += os.path.basename(str(local_path))
        return self._with_step({"type": "add_local", "local": os.path.abspath(str(local_path)),
                                "file": True, "remote": remote, "copy": bool(copy)})

    def add_local_dir(self, local_path, remote_path: str, *, copy: bool = False, ignore=None) -> "Image":
        """Put a local directory's contents into the image at remote_path (see add_local_file).
        ``ignore`` is a list of .dockerignore-style patterns, a ``FilePatternMatcher``, or a
        function of the path relative to local_path (a ``pathlib.Path``), as in Modal."""
        return self._with_step({"type": "add_local", "local": os.path.abspath(str(local_path)),
                                "remote": str(remote_path), "copy": bool(copy), "ignore": ignore})

    def add_local_python_source(self, *modules: str, copy: bool = False, ignore=None) -> "Image":
        """Put local Python modules or packages into /root, where the image's Python finds them."""
        import importlib.util
        image = self
        for name in modules:
            spec = importlib.util.find_spec(name)
            if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
                raise exc.InvalidError(f"add_local_python_source: module {name!r} is not local source")
            if spec.submodule_search_locations:
                pkg_dir = list(spec.submodule_search_locations)[0]
                image = image.add_local_dir(pkg_dir, f"/root/{name.split('.')[-1]}", copy=copy,
                                            ignore=ignore if ignore is not None else ["**/__pycache__", "**/*.pyc"])
            else:
                image = image.add_local_file(spec.origin, f"/root/{os.path.basename(spec.origin)}", copy=copy)
        return image

    @classmethod
    def from_registry(cls, tag: str, secret=None, *, setup_dockerfile_commands=(), force_build: bool = False,
                      add_python: Optional[str] = None, **kwargs) -> "Image":
        """An image pulled from an OCI registry (the gust server must reach it). Registries on
        localhost/127.0.0.1 are spoken to over plain HTTP."""
        if secret is not None:
            raise exc.InvalidError("from_registry(secret=...): registry credentials are not supported yet")
        if add_python:
            raise exc.InvalidError("from_registry(add_python=...) is not supported; pick an image that has Python")
        if setup_dockerfile_commands:
            raise exc.InvalidError("from_registry(setup_dockerfile_commands=...) is not supported; chain .run_commands()")
        if not isinstance(tag, str) or not tag:
            raise exc.InvalidError("from_registry needs an image reference such as '127.0.0.1:5000/team/app:v1'")
        image = cls(_spec={"kind": "registry", "ref": tag})
        return image._forced(image, force_build)

    @classmethod
    def from_oci_archive(cls, path, *, force_build: bool = False) -> "Image":
        """An image from a local archive: an OCI image layout in a tar, or a `docker save` tarball."""
        local = os.path.abspath(str(path))
        if not os.path.isfile(local):
            raise exc.InvalidError(f"from_oci_archive: {path!r} is not a file")
        image = cls(_spec={"kind": "oci_archive", "local": local})
        return image._forced(image, force_build)

    @staticmethod
    def from_dockerfile(path, context_dir=None, *, build_args: Optional[dict] = None,
                        force_build: bool = False, secrets=None, gpu=None, ignore=None) -> "Image":
        """An image from a Dockerfile's common instructions: FROM (a gust image id, debian_slim,
        or python/debian bookworm slim, which map to it), RUN, COPY and ADD of local files, ENV,
        WORKDIR, ARG, USER root, ENTRYPOINT and CMD. Anything else is a clear error."""
        if not _container.is_local():
            # Built already; the Dockerfile and its context are not in the function's container.
            return Image(_spec={"kind": "from_dockerfile"})
        from . import _dockerfile
        return _dockerfile.build(Image, str(path), context_dir, build_args or {}, force_build, ignore)

    def dockerfile_commands(self, *dockerfile_commands: Any, context_files: Optional[dict] = None, secrets=None,
                            gpu=None, context_dir=None, force_build: bool = False, ignore=None,
                            **kwargs: Any) -> "Image":
        """Dockerfile instructions added to this image, as ``from_dockerfile`` reads them (RUN, COPY,
        ADD, ENV, WORKDIR, ARG, USER, ENTRYPOINT, CMD); COPY sources are relative to ``context_dir``
        (default: the current directory)."""
        if context_files:
            raise exc.InvalidError("dockerfile_commands(context_files=...) is not supported by gust; put the files in "
                                   "context_dir and COPY them")
        unknown = sorted(k for k in kwargs if k != "context_mount")
        if unknown:
            raise TypeError(f"Image.dockerfile_commands() got an unexpected keyword argument '{unknown[0]}'")
        if not _container.is_local():
            return self  # built already; its COPY sources are not in the container
        from . import _dockerfile
        return _dockerfile.commands(Image, self, dockerfile_commands, context_dir, force_build, ignore, secrets)

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Import packages that exist only in the image::

            with image.imports():
                import torch

        Inside a function's container an ImportError propagates; on the local machine it is
        swallowed (the rest of the block is skipped), so the module still imports there."""
        try:
            yield
        except ImportError:
            if not _container.is_local():
                raise

    def _forced(self, image: "Image", force_build: bool) -> "Image":
        if force_build or os.environ.get("GUST_FORCE_BUILD") == "1" or os.environ.get("MODAL_FORCE_BUILD") == "1":
            image._spec["force_build"] = True
        return image

    def __repr__(self) -> str:
        if self._image_id:
            return f"Image({self._image_id})"
        return f"Image.{(self._spec or {}).get('kind', 'unknown')}()"


def _refused(name: str, hint: str):
    """A Modal Image constructor or step gust does not offer: a clear error, not AttributeError."""
    def refuse(*args, **kwargs):
        raise exc.InvalidError(f"Image.{name} is not supported by gust: {hint}")
    refuse.__name__ = name
    refuse.__doc__ = f"Not supported by gust: {hint}"
    return staticmethod(refuse)


_CONDA = ("gust images are Debian with Python from Debian's packages, without conda or micromamba; "
          "use Image.debian_slim().pip_install(...) or .apt_install(...), or Image.from_registry() of an image that has them")
_CLOUD_REGISTRY = ("gust pulls from registries without cloud credentials; push the image to a registry the gust "
                   "server reaches and use Image.from_registry(...)")
for _name, _hint in (
        ("micromamba", _CONDA), ("micromamba_install", _CONDA), ("conda", _CONDA), ("conda_install", _CONDA),
        ("conda_update_from_environment", _CONDA),
        ("from_aws_ecr", _CLOUD_REGISTRY), ("from_gcp_artifact_registry", _CLOUD_REGISTRY),
        ("pip_install_private_repos", "clone the repositories with .run_commands(...) and a Secret, then pip install them"),
        ("poetry_install_from_file", "export a requirements file (`poetry export`) and use .pip_install_from_requirements(...)"),
        ("uv_sync", "export a requirements file (`uv export`) and use .uv_pip_install(requirements=[...])"),
        ("pip_install_from_pyproject", "list the dependencies in .pip_install(...) or a requirements file"),
):
    setattr(Image, _name, _refused(_name, _hint))
del _name, _hint


def _check_number_arg(name: str, v) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 1:
        raise exc.InvalidError(f"{name} must be a number of seconds of at least 1, got {v!r}")


def _build_file(local, what: str, where: str) -> "tuple[str, str]":
    """A local file that a build step reads: its absolute path, and where it goes in the image
    (named by its content, so an edit makes a new layer)."""
    import hashlib
    path = os.path.abspath(str(local))
    if not _container.is_local():  # built already; the file is not in the function's container
        return path, f"/.gust-build/{what}.txt"
    if not os.path.isfile(path):
        raise exc.InvalidError(f"{where}: {local!r} is not a file")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return path, f"/.gust-build/{what}-{digest}.txt"


def _flatten(items, what: str) -> list:
    """Modal accepts strings and lists of strings, mixed."""
    out = []
    for it in items:
        if isinstance(it, (list, tuple)):
            out.extend(_flatten(it, what))
        elif isinstance(it, str):
            out.append(it)
        else:
            raise exc.InvalidError(f"{what}: expected strings, got {it!r}")
    return out


def _secret_env(secret) -> dict:
    env = getattr(secret, "env", secret)
    if not isinstance(env, dict):
        raise exc.InvalidError(f"secrets must be Secret objects, got {secret!r}")
    return {k: v for k, v in env.items() if v is not None}


def _upload_local(client: Client, spec: dict) -> dict:
    """Replace add_local steps' local paths with uploaded blobs (read now, so edits are seen)."""
    if spec.get("kind") == "oci_archive" and "local" in spec:
        with open(spec["local"], "rb") as f:
            data = f.read()
        spec = {k: v for k, v in spec.items() if k != "local"}
        spec["blob"] = _local_files.upload(client, data)
    steps = []
    for st in spec.get("steps", []):
        if st.get("type") == "_run_function":
            steps.extend(_run_function_steps(client, st))
            continue
        if st.get("type") == "add_local" and "local" in st:
            remote = st["remote"]
            if st.get("file"):
                data = _local_files.pack(st["local"], single_file_name=os.path.basename(remote))
                remote = os.path.dirname(remote) or "/"
            else:
                data = _local_files.pack(st["local"], ignore=st.get("ignore"))
            st = {"type": "add_local", "blob": _local_files.upload(client, data), "remote": remote, "copy": st["copy"]}
        steps.append(st)
    if steps:
        spec = dict(spec, steps=steps)
    return spec


def _run_function_steps(client: Client, st: dict) -> list:
    """Image.run_function as two steps the server builds: the function's code (with this
    SDK, the pickled arguments and what to call) added under /.gust-build, and a command that
    runs it there with python3 and then removes the directory. Both are cached by content."""
    from . import _code, _compat
    import json
    raw = st["fn"]
    code, module = _code.package_files([(raw.__name__, raw, raw)])
    files = {"code/" + arc: data for arc, data in code.items()}
    sdk = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(sdk)):
        if name.endswith(".py"):
            with open(os.path.join(sdk, name), "rb") as f:
                files["sdk/gust/" + name] = f.read()
    files["args.pkl"] = st["payload"]
    files["run.json"] = json.dumps({"module": module, "name": raw.__name__, "modal_compat": _compat.active()},
                                   sort_keys=True).encode()
    blob = _local_files.upload(client, _code.tar(files))
    d = "/.gust-build/fn-" + blob.split(":")[-1][:16]
    boot = f"import sys; sys.path[:0] = ['{d}/sdk', '{d}/code']; import gust._build_fn as b; sys.exit(b.main('{d}'))"
    cmd = (f"cd /root 2>/dev/null || cd /; GUST_IS_REMOTE=1 timeout {st['timeout']} python3 -u -c {shlex.quote(boot)} "
           f"&& rm -rf {d}")
    run: dict = {"type": "run_commands", "commands": [cmd]}
    if st.get("env"):
        run["env"] = st["env"]
    return [{"type": "add_local", "blob": blob, "remote": d, "copy": True}, run]


def _build(client: Client, spec: dict) -> "tuple[str, dict]":
    """POST /v1/images and follow its log stream; return (image_id, IMAGE)."""
    spec = _upload_local(client, spec)
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


from .functions import add_aio  # noqa: E402

add_aio(Image, ["build", "hydrate"])
