"""Secrets: environment variables handed to functions and sandboxes (``secrets=[...]``), as in Modal."""

import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import exception as exc


class Secret:
    """A set of environment variables: given inline (``from_dict``, ``from_local_environ``) or
    stored on the server under a name (``from_name``, made with ``gust secret create``).
    Values are never listed back by the API."""

    def __init__(self, env: Optional[Dict[str, str]] = None, *, _name: Optional[str] = None):
        self._env = env
        self._name = _name
        self._required_keys: Sequence[str] = ()
        self._data: Optional[dict] = None
        self._lock = threading.Lock()

    @property
    def env(self) -> Dict[str, str]:
        """The variables of an inline secret. A named secret's values stay on the server."""
        if self._env is None:
            raise exc.InvalidError(
                f"Secret.from_name({self._name!r}): a stored secret's values stay on the server, for functions "
                "only; for sandboxes and image builds use Secret.from_dict({...}) or Secret.from_local_environ([...])")
        return self._env

    @staticmethod
    def from_dict(env_dict: Mapping[str, Optional[str]] = {}) -> "Secret":
        """A secret made from a dict; ``None`` values are left out, as Modal does."""
        if not isinstance(env_dict, Mapping):
            raise exc.InvalidError(f"Secret.from_dict needs a dict of strings, got {type(env_dict).__name__}")
        env = {}
        for k, v in env_dict.items():
            if v is None:
                continue
            if not isinstance(k, str) or not isinstance(v, str):
                raise exc.InvalidError(f"Secret.from_dict: keys and values must be strings, got {k!r}: {v!r}")
            env[k] = v
        return Secret(env)

    @staticmethod
    def from_local_environ(env_keys: Sequence[str]) -> "Secret":
        """A secret made from variables of this process's environment. Inside a function's
        container the variables are not there (the secret's values came with the container), so
        there it is an empty placeholder, as Modal's lazy secret is, not an error."""
        from ._container import is_local

        missing = [k for k in env_keys if k not in os.environ]
        if missing and not is_local():
            return Secret({k: os.environ[k] for k in env_keys if k in os.environ})
        if missing:
            raise exc.InvalidError(f"Secret.from_local_environ: not set in the local environment: {', '.join(missing)}")
        return Secret({k: os.environ[k] for k in env_keys})

    @staticmethod
    def from_name(name: str, *, environment_name: Optional[str] = None, required_keys: Sequence[str] = (),
                  client=None) -> "Secret":
        """A reference to the secret stored on the server as ``name``. Lazy: the server checks it
        when a function using it is published (or on ``.hydrate()``)."""
        if not isinstance(name, str) or not name:
            raise exc.InvalidError("Secret.from_name needs the secret's name")
        s = Secret(_name=name)
        s._required_keys = tuple(required_keys)
        return s

    @staticmethod
    def from_dotenv(path: Any = None, *, filename: str = ".env", client=None) -> "Secret":
        """A secret made from a ``.env`` file, looked for in ``path`` (a directory, or a file
        such as ``__file__`` whose directory is meant; default the current directory) and then
        in its parents, as Modal does. No file found gives an empty secret."""
        start = os.path.abspath(str(path) if path is not None else os.getcwd())
        if os.path.isfile(start):
            start = os.path.dirname(start)
        d = start
        while True:
            cand = os.path.join(d, filename)
            if os.path.isfile(cand):
                with open(cand, encoding="utf-8") as f:
                    return Secret(parse_dotenv(f.read(), cand))
            parent = os.path.dirname(d)
            if parent == d:
                return Secret({})
            d = parent

    @property
    def name(self) -> Optional[str]:
        return self._name

    def hydrate(self, client=None) -> "Secret":
        """Check that a named secret exists (POST /v1/secrets/lookup); a no-op for inline secrets."""
        if self._name is not None and self._data is None:
            from ._http import get_client
            with self._lock:
                if self._data is None:
                    data = (client or get_client()).json("POST", "/v1/secrets/lookup", json={"name": self._name})
                    missing = [k for k in self._required_keys if k not in (data.get("keys") or ())]
                    if missing:
                        raise exc.NotFoundError(f"secret {self._name!r} lacks the required keys {', '.join(missing)}")
                    self._data = data
        return self

    @property
    def object_id(self) -> Optional[str]:
        """The stored secret's id (``st-...``); None for an inline secret."""
        if self._name is None:
            return None
        return self.hydrate()._data.get("secret_id")  # type: ignore[union-attr]

    def _to_spec(self) -> dict:
        """The entry of a FunctionSpec's ``secrets``."""
        if self._name is not None:
            return {"name": self._name}
        return {"env": dict(self._env or {})}

    def __repr__(self) -> str:
        if self._name is not None:
            return f"Secret.from_name({self._name!r})"
        return f"Secret(keys={sorted(self._env or {})})"


def parse_dotenv(text: str, where: str = ".env") -> Dict[str, str]:
    """KEY=VALUE lines of a .env file: ``export`` prefixes, '#' comments, single quotes taken
    literally, double quotes with \\n-style escapes, as python-dotenv reads them."""
    env: Dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").replace(".", "a").isalnum():
            raise exc.InvalidError(f"{where}:{n}: expected KEY=VALUE, got {raw.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        env[key] = value
    return env


class _SecretManager:
    """``Secret.objects``: create, list and delete stored secrets, as Modal's."""

    def create(self, name: str, env_dict: Mapping[str, str], *, allow_existing: bool = False,
               environment_name: Optional[str] = None, client=None) -> None:
        """Store a secret; an existing name raises ``AlreadyExistsError`` unless ``allow_existing``
        (then the stored values are left as they are)."""
        from ._http import get_client
        env = Secret.from_dict(env_dict).env
        try:
            (client or get_client()).json("POST", "/v1/secrets", json={"name": name, "env": env})
        except exc.ConflictError as e:
            if not allow_existing:
                raise exc.AlreadyExistsError(str(e)) from None

    def list(self, *, max_objects: Optional[int] = None, created_before: Any = None,
             environment_name: str = "", client=None) -> List[Secret]:
        """The stored secrets (names and keys; values stay on the server), newest first."""
        from ._http import get_client
        import datetime as _dt
        if max_objects is not None and max_objects < 0:
            raise exc.InvalidError("max_objects cannot be negative")
        out = []
        for d in (client or get_client()).json("GET", "/v1/secrets").get("secrets") or []:
            if created_before is not None:
                cb = _dt.datetime.fromisoformat(created_before) if isinstance(created_before, str) else created_before
                if cb.tzinfo is None:
                    cb = cb.astimezone()
                if _dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) >= cb:
                    continue
            s = Secret(_name=d["name"])
            s._data = d
            out.append(s)
        out.sort(key=lambda s: s._data.get("created_at", ""), reverse=True)  # type: ignore[union-attr]
        return out if max_objects is None else out[:max_objects]

    def delete(self, name: str, *, allow_missing: bool = False, environment_name: Optional[str] = None,
               client=None) -> None:
        """Delete a stored secret; a missing one raises ``NotFoundError`` unless ``allow_missing``."""
        from ._http import get_client
        import urllib.parse
        try:
            (client or get_client()).request("DELETE", "/v1/secrets/" + urllib.parse.quote(name, safe=""))
        except exc.NotFoundError:
            if not allow_missing:
                raise


Secret.objects = _SecretManager()  # type: ignore[attr-defined]


from .functions import add_aio  # noqa: E402

add_aio(Secret, ["hydrate"])
add_aio(_SecretManager, ["create", "list", "delete"])
