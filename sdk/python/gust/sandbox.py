"""Sandbox: an isolated container to run commands in, as in ``modal.Sandbox``.

    app = gust.App.lookup("my-app", create_if_missing=True)
    sb = gust.Sandbox.create(app=app)
    p = sb.exec("python3", "-c", "print(6 * 7)")
    print(p.stdout.read())   # 42
    sb.terminate()
"""

from __future__ import annotations

import builtins
import json
import os
import posixpath
import shutil
import threading
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

from . import exception as exc
from . import output
from ._http import DEFAULT_TIMEOUT, Client, get_client
from .app import DEFAULT_SANDBOX_APP, App, _parse_gpu
from .container_process import ContainerProcess, _OutputPump
from .file_io import FileIO
from .image import Image
from .io_streams import StreamReader, StreamWriter
from .sandbox_fs import SandboxFilesystem, _Files
from .stream_type import StreamType
from .functions import add_aio
from .tunnel import Probe, Tunnel, _check_port, _tunnel

_TERMINAL = ("finished", "terminated", "timeout", "failed")

# Modal options gust does not have yet: accepted when empty or false, refused otherwise.
_UNSUPPORTED = frozenset({
    "network_file_systems",
    "pty", "pty_info", "custom_domain", "proxy", "include_oidc_identity_token",
    "experimental_options", "_experimental_enable_snapshot", "_experimental_scheduler_placement", "mounts",
})
# Accepted and ignored, as functions' region= and cloud= are: a gust runs where it is.
_IGNORED = frozenset({"verbose", "environment_name", "region", "cloud"})

_default_app = App(DEFAULT_SANDBOX_APP)
_default_image = Image.debian_slim()


def _check_args(args: Sequence[Any]) -> None:
    if not all(isinstance(a, str) for a in args):
        raise exc.InvalidError("All entrypoint arguments must be strings")


def _env(secrets: Any, env: Optional[Mapping[str, Optional[str]]]) -> Dict[str, str]:
    """Environment from secrets (objects with an ``env`` dict, or dicts), then ``env`` over them."""
    out: Dict[str, str] = {}
    for s in list(secrets or ()) + ([env] if env else []):
        if s is None:
            continue
        d = s if isinstance(s, Mapping) else getattr(s, "env", None)
        if d is None:
            d = getattr(s, "_env", None)
        if callable(d):
            d = d()
        if not isinstance(d, Mapping):
            raise exc.InvalidError(f"secrets must be Secret objects with an env dict (or dicts), got {s!r}")
        for k, v in d.items():
            if v is not None:
                out[str(k)] = str(v)
    return out


def _limit(v: Any) -> Any:
    """Modal accepts (request, limit) for cpu and memory; gust has one number: the limit."""
    if isinstance(v, (tuple, builtins.list)):
        if len(v) != 2:
            raise exc.InvalidError(f"expected a number or a (request, limit) pair, got {v!r}")
        return v[1]
    return v


class Sandbox:
    """A running (or finished) sandbox. Make one with ``Sandbox.create``."""

    def __init__(self, data: dict, client: Client):
        self._client = client
        self._id: str = data["sandbox_id"]
        self._data = data
        self._lock = threading.Lock()
        self._main: Optional[_OutputPump] = None
        self._stdout: StreamReader[str] = StreamReader(1, text=True, by_line=True, starter=self._start_main)
        self._stderr: StreamReader[str] = StreamReader(2, text=True, by_line=True, starter=self._start_main)
        self._stdin = StreamWriter(lambda data, eof: self._write_stdin("main", data, eof))
        self._files = _Files(self)
        self._filesystem: Optional[SandboxFilesystem] = None
        self._tunnels: Dict[int, Tunnel] = {}

    def __repr__(self) -> str:
        return f"Sandbox({self._id})"

    # Plumbing.

    def _call(self, method: str, sub: str, *, query: Optional[Mapping[str, Any]] = None, json: Any = None,
              body: Optional[bytes] = None, content_type: Optional[str] = None,
              timeout: Optional[float] = DEFAULT_TIMEOUT, raw: bool = False) -> Any:
        """A request about this sandbox; a conflict because it has ended raises SandboxTerminatedError."""
        try:
            _, payload = self._client.request(method, f"/v1/sandboxes/{self._id}{sub}", query=query, json=json,
                                              body=body, content_type=content_type, timeout=timeout)
        except exc.ConflictError as e:
            self._raise_if_ended(e)
            raise
        if raw:
            return payload
        return _loads(payload)

    def _raise_if_ended(self, e: exc.Error) -> None:
        try:
            self._refresh()
        except exc.Error:
            return
        if self._data.get("status") in _TERMINAL:
            err = exc.SandboxTerminatedError(str(e))
            err._kind, err._http_status = e._kind, e._http_status
            raise err from None

    def _refresh(self, wait: Optional[float] = None) -> dict:
        q = {"wait": wait} if wait else None
        t = DEFAULT_TIMEOUT if not wait else wait + 30
        self._data = self._client.json("GET", f"/v1/sandboxes/{self._id}", query=q, timeout=t)
        return self._data

    def _write_stdin(self, exec_id: str, data: bytes, eof: bool) -> None:
        self._call("POST", f"/execs/{exec_id}/stdin", query={"eof": "1" if eof else None}, body=data,
                   content_type="application/octet-stream")

    def _start_main(self) -> None:
        with self._lock:
            if self._main is None:
                self._main = _OutputPump(self, "main", self._stdout, self._stderr)
                self._main.start()

    def _abs(self, path: str) -> str:
        path = os.fspath(path)
        if not path.startswith("/"):
            path = posixpath.join(self._data.get("workdir") or "/", path)
        return posixpath.normpath(path)

    # Creating and finding sandboxes.

    @staticmethod
    def create(*args: str, app: Optional[Union[App, str]] = None, name: Optional[str] = None,
               tags: Optional[Dict[str, str]] = None, image: Optional[Image] = None,
               env: Optional[Dict[str, Optional[str]]] = None, secrets: Any = None, timeout: int = 300,
               idle_timeout: Optional[int] = None, workdir: Optional[str] = None, gpu: Any = None,
               cpu: Any = None, memory: Any = None, block_network: bool = False, isolation: Optional[str] = None,
               outbound_cidr_allowlist: Optional[Sequence[str]] = None,
               outbound_domain_allowlist: Optional[Sequence[str]] = None,
               cidr_allowlist: Optional[Sequence[str]] = None,
               encrypted_ports: Sequence[int] = (), unencrypted_ports: Sequence[int] = (),
               h2_ports: Sequence[int] = (), inbound_cidr_allowlist: Optional[Sequence[str]] = None,
               readiness_probe: Optional[Probe] = None,
               client: Optional[Client] = None, **kwargs: Any) -> "Sandbox":
        """Create a sandbox and return once its command has started.

        ``args`` is the command (none: the sandbox stays up until terminated or timed out).
        ``isolation`` ("runc" or "gvisor") and ``tags`` are gust's own; the rest are Modal's.
        """
        volumes = kwargs.pop("volumes", None)
        for k, v in kwargs.items():
            if k in _UNSUPPORTED:
                if v:
                    raise exc.InvalidError(f"gust sandboxes do not support {k}= yet")
            elif k not in _IGNORED:
                raise TypeError(f"Sandbox.create() got an unexpected keyword argument '{k}'")
        gpu = _parse_gpu(gpu)  # an unknown GPU type is refused here, before anything is sent
        mounts = []
        if volumes:
            from .volume import volume_mounts
            mounts = volume_mounts(volumes, "Sandbox.create()")
        _check_args(args)
        if workdir is not None and not workdir.startswith("/"):
            raise exc.InvalidError(f"workdir must be an absolute path, got: {workdir}")
        if image is not None and not isinstance(image, Image):
            raise exc.InvalidError(f"image must be a gust.Image, e.g. Image.debian_slim(), got {image!r}")
        if isinstance(app, str):
            app = App(app)
        elif app is not None and not isinstance(app, App):
            raise exc.InvalidError(f"app must be a gust.App, got {app!r}")
        client = client or get_client()
        app = app or _default_app
        image = image or _default_image

        body: Dict[str, Any] = {"command": builtins.list(args), "timeout": timeout}
        optional = {"idle_timeout": idle_timeout, "cpu": _limit(cpu), "memory": _limit(memory),
                    "workdir": workdir, "name": name, "isolation": isolation, "gpu": gpu}
        body.update({k: v for k, v in optional.items() if v is not None})
        envd = _env(secrets, env)
        if envd:
            body["env"] = envd
        body.update(_network_body(block_network, outbound_cidr_allowlist, cidr_allowlist, outbound_domain_allowlist))
        if mounts:
            body["volumes"] = [v.hydrate(client)._to_mount(p) for p, v in mounts]
        for field, ports in (("encrypted_ports", encrypted_ports), ("unencrypted_ports", unencrypted_ports),
                             ("h2_ports", h2_ports)):
            if ports:
                body[field] = [_check_port(p, field) for p in ports]
        if inbound_cidr_allowlist:
            body["inbound_cidr_allowlist"] = [str(c) for c in inbound_cidr_allowlist]
        if readiness_probe is not None:
            if not isinstance(readiness_probe, Probe):
                raise exc.InvalidError(f"readiness_probe must be a gust.Probe, e.g. Probe.with_tcp(8000), got {readiness_probe!r}")
            body["readiness_probe"] = readiness_probe._to_json()
        if tags:
            body["tags"] = {str(k): str(v) for k, v in tags.items()}

        start = time.monotonic()
        for attempt in (0, 1):
            body["app_id"] = app._resolve(client)
            body["image_id"] = image._resolve(client)
            output.log(f"Creating sandbox in app {app.name} from image {body['image_id']}...")
            try:
                data = client.json("POST", "/v1/sandboxes", json=body, timeout=180)
                break
            except exc.NotFoundError:
                # A cached app or image id may be stale (e.g. the server was reset): resolve again once.
                if attempt == 1:
                    raise
                app._forget()
                image._forget()
            except exc.ConflictError as e:
                if name is not None:
                    err = exc.AlreadyExistsError(str(e))
                    err._kind, err._http_status = e._kind, e._http_status
                    raise err from None
                raise
        sb = Sandbox(data, client)
        output.log(f"Created sandbox {sb.object_id} in {time.monotonic() - start:.2f} s")
        return sb

    @staticmethod
    def from_id(sandbox_id: str, client: Optional[Client] = None) -> "Sandbox":
        """The sandbox with this id (``sb-...``)."""
        client = client or get_client()
        return Sandbox(client.json("GET", f"/v1/sandboxes/{sandbox_id}"), client)

    @staticmethod
    def from_name(app_name: str, name: str, *, environment_name: Optional[str] = None,
                  client: Optional[Client] = None) -> "Sandbox":
        """The running sandbox called ``name`` in the app called ``app_name``."""
        client = client or get_client()
        app = App.lookup(app_name, client=client)
        found = client.json("GET", "/v1/sandboxes", query={"app_id": app._app_id, "name": name})["sandboxes"]
        if not found:
            raise exc.NotFoundError(f"no running sandbox named {name!r} in app {app_name!r}")
        return Sandbox(found[0], client)

    # Lifecycle.

    @property
    def object_id(self) -> str:
        return self._id

    def hydrate(self, client: Optional[Client] = None) -> "Sandbox":
        self._refresh()
        return self

    def detach(self) -> None:
        """Nothing to release: connections are shared and pooled."""

    @property
    def returncode(self) -> Optional[int]:
        """The exit code once the sandbox has finished (124 after a timeout, 137 after terminate), else None."""
        st = self._data.get("status")
        if st not in _TERMINAL:
            return None
        code = self._data.get("exit_code")
        if code is not None:
            return int(code)
        return {"timeout": 124, "terminated": 137}.get(st, 1)

    def poll(self) -> Optional[int]:
        """None while the sandbox runs, else its exit code."""
        if self.returncode is None:
            self._refresh()
        return self.returncode

    def wait(self, raise_on_termination: bool = True) -> Optional[int]:
        """Wait for the sandbox to finish and return its exit code.

        Like Modal, raises SandboxTimeoutError if it timed out, and SandboxTerminatedError if it
        was terminated (unless ``raise_on_termination=False``).
        """
        while self._data.get("status") not in _TERMINAL:
            self._refresh(wait=60)
        st = self._data.get("status")
        reason = self._data.get("error")
        if st == "timeout":
            raise exc.SandboxTimeoutError(reason or f"sandbox {self._id} ran past its timeout and was stopped")
        if st == "terminated" and raise_on_termination:
            raise exc.SandboxTerminatedError(reason or f"sandbox {self._id} was terminated")
        return self.returncode

    def tunnels(self, timeout: int = 50) -> Dict[int, Tunnel]:
        """The sandbox's tunnels by container port (its encrypted_ports, unencrypted_ports and
        h2_ports), waiting up to ``timeout`` seconds while it starts."""
        if self._tunnels:
            return self._tunnels
        d = self._call("GET", "/tunnels", query={"timeout": timeout}, timeout=timeout + 30)
        self._tunnels = {int(t["container_port"]): _tunnel(t) for t in d.get("tunnels") or []}
        return self._tunnels

    def wait_until_ready(self, *, timeout: int = 300) -> None:
        """Wait until the sandbox's readiness_probe passes (without one: until it runs). Raises
        TimeoutError after ``timeout`` seconds, SandboxTerminatedError if it ends first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            step = max(0.0, min(left, 50.0))
            d = self._call("GET", "/ready", query={"timeout": f"{step:.3f}"}, timeout=step + 30)
            if d.get("ready"):
                return
            if time.monotonic() >= deadline:
                raise exc.TimeoutError(f"sandbox {self._id} was not ready within {timeout} s")

    def reload_volumes(self) -> None:
        """Show the newest committed version of every volume mounted in the sandbox (what the
        sandbox wrote there is committed first). Refused while files under a mount are open."""
        try:
            self._client.request("POST", f"/v1/sandboxes/{self._id}/volumes/reload", timeout=600)
        except exc.ConflictError as e:
            raise RuntimeError(str(e)) from None

    def terminate(self, *, wait: bool = False) -> Optional[int]:
        """Stop the sandbox (no-op if it has already finished). With ``wait=True``, return its exit code."""
        self._data = self._client.json("POST", f"/v1/sandboxes/{self._id}/terminate", timeout=90)
        if wait:
            while self._data.get("status") not in _TERMINAL:
                self._refresh(wait=60)
            return self.returncode
        return None

    def set_tags(self, tags: Dict[str, str], *, client: Optional[Client] = None) -> None:
        """Replace the sandbox's tags (used to filter ``Sandbox.list``)."""
        if not isinstance(tags, Mapping):
            raise exc.InvalidError("tags must be a dict of str to str")
        body = {"tags": {str(k): str(v) for k, v in tags.items()}}
        self._data = self._client.json("PUT", f"/v1/sandboxes/{self._id}/tags", json=body)

    def set_network_access(self, *, block_network: bool = False,
                           outbound_cidr_allowlist: Optional[Sequence[str]] = None,
                           outbound_domain_allowlist: Optional[Sequence[str]] = None,
                           cidr_allowlist: Optional[Sequence[str]] = None) -> None:
        """Replace the running sandbox's outbound network policy, whole and at once: the options
        are Sandbox.create's (no option opens the network again). Connections already open
        follow the new policy. A sandbox created with block_network=True has no interface to
        open (ConflictError): create it without, and block it with this method instead."""
        body = _network_body(block_network, outbound_cidr_allowlist, cidr_allowlist, outbound_domain_allowlist)
        self._data = self._client.json("PUT", f"/v1/sandboxes/{self._id}/network", json=body)

    def get_tags(self) -> Dict[str, str]:
        """The sandbox's tags, as the server has them now."""
        return dict(self._refresh().get("tags") or {})

    def snapshot_filesystem(self, timeout: int = 55) -> Image:
        """Snapshot the sandbox's filesystem as an Image to start new sandboxes from."""
        im = self._call("POST", "/snapshot", timeout=max(float(timeout), 600.0))
        return Image(_image_id=im["image_id"], _data=im)

    # Processes.

    def exec(self, *args: str, stdout: Optional[StreamType] = StreamType.PIPE,
             stderr: Optional[StreamType] = StreamType.PIPE, timeout: Optional[int] = None,
             workdir: Optional[str] = None, env: Optional[Dict[str, Optional[str]]] = None, secrets: Any = None,
             text: bool = True, bufsize: int = -1, pty: bool = False, pty_info: Any = None,
             _pty_info: Any = None) -> ContainerProcess:
        """Run a command in the sandbox; return its ContainerProcess at once.

        ``bufsize=1`` makes iterating over its output yield whole lines; else chunks as written.
        """
        _check_args(args)
        if not args:
            raise exc.InvalidError("exec needs a command, e.g. sb.exec('ls', '-l')")
        if workdir is not None and not workdir.startswith("/"):
            raise exc.InvalidError(f"workdir must be an absolute path, got: {workdir}")
        if bufsize == 1 and not text:
            raise ValueError("line-buffering is only supported when text=True")
        body: Dict[str, Any] = {"command": builtins.list(args), "stream": True}
        envd = _env(secrets, env)
        if envd:
            body["env"] = envd
        if workdir:
            body["workdir"] = workdir
        if timeout is not None:
            body["timeout"] = timeout
        if pty or pty_info or _pty_info:
            size = shutil.get_terminal_size((80, 24))
            body.update({"pty": True, "rows": size.lines, "cols": size.columns})
        try:
            stream = self._client.stream("POST", f"/v1/sandboxes/{self._id}/execs", json=body)
        except exc.ConflictError as e:
            self._raise_if_ended(e)
            raise
        try:
            first = next(stream)
        except StopIteration:
            stream.close()
            raise exc.RemoteError("the exec stream ended before naming the process") from None
        except BaseException:
            stream.close()
            raise
        if "exec_id" not in first:
            stream.close()
            err = first.get("error") or {}
            raise exc.from_api(err.get("kind"), err.get("message") or f"unexpected exec answer: {first}")
        return ContainerProcess(self, first["exec_id"], stream, text=text, by_line=bufsize == 1,
                                stdout=stdout or StreamType.PIPE, stderr=stderr or StreamType.PIPE)

    @property
    def stdout(self) -> StreamReader[str]:
        """Output of the sandbox's command (by line)."""
        return self._stdout

    @property
    def stderr(self) -> StreamReader[str]:
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        """Input of the sandbox's command."""
        return self._stdin

    # Files.

    @property
    def filesystem(self) -> SandboxFilesystem:
        """File operations: read_text, write_text, list_files, make_directory, remove, stat, ..."""
        if self._filesystem is None:
            self._filesystem = SandboxFilesystem(self)
        return self._filesystem

    def open(self, path: str, mode: str = "r") -> FileIO:
        """Open a file in the sandbox ("r", "w", "a", "x", with "b" and/or "+")."""
        return FileIO(self._files, self._abs(path), mode)

    def ls(self, path: str) -> builtins.list:
        """Names of the entries of a directory."""
        return [e["name"] for e in self._files.list(self._abs(path))]

    def mkdir(self, path: str, parents: bool = False) -> None:
        """Create a directory."""
        self._files.mkdir(self._abs(path), parents)

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file or directory."""
        self._files.remove(self._abs(path), recursive)

    @staticmethod
    def list(*, app_id: Optional[Union[str, App]] = None, tags: Optional[Dict[str, str]] = None,
             client: Optional[Client] = None) -> Iterator["Sandbox"]:
        """Running sandboxes, newest first: all, or those of one app and/or with all these tags."""
        client = client or get_client()
        if isinstance(app_id, App):
            app_id = app_id._resolve(client)
        q: Dict[str, Any] = {"app_id": app_id}
        if tags:
            q["tag"] = [f"{k}={v}" for k, v in tags.items()]
        for data in client.json("GET", "/v1/sandboxes", query=q)["sandboxes"]:
            yield Sandbox(data, client)


def _loads(payload: bytes) -> Any:
    return json.loads(payload) if payload else None


def _network_body(block_network: bool, outbound_cidr_allowlist: Any, cidr_allowlist: Any,
                  outbound_domain_allowlist: Any) -> Dict[str, Any]:
    """The network part of a create or a policy replacement. The server checks it and answers
    Modal's errors for the combinations Modal refuses."""
    body: Dict[str, Any] = {}
    if block_network:
        body["block_network"] = True
    for k, v in (("outbound_cidr_allowlist", outbound_cidr_allowlist), ("cidr_allowlist", cidr_allowlist),
                 ("outbound_domain_allowlist", outbound_domain_allowlist)):
        if v is None:
            continue
        if isinstance(v, str) or not all(isinstance(x, str) for x in v):
            raise exc.InvalidError(f"{k} must be a list of strings, got {v!r}")
        body[k] = builtins.list(v)
    return body


add_aio(Sandbox, ["create", "from_id", "from_name", "hydrate", "poll", "wait", "tunnels", "wait_until_ready",
                  "terminate", "set_tags", "set_network_access", "get_tags", "snapshot_filesystem", "exec", "open",
                  "ls", "mkdir", "rm", "reload_volumes", "detach"], gen=["list"])
