"""Secrets: environment variables handed to functions and sandboxes (``secrets=[...]``), as in Modal."""

import os
import threading
from typing import Dict, Mapping, Optional, Sequence

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
        """A secret made from variables of this process's environment."""
        missing = [k for k in env_keys if k not in os.environ]
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
