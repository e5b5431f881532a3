"""Secrets: environment variables handed to sandboxes (``secrets=[...]``), as in Modal."""

import os
from typing import Dict, Mapping, Optional, Sequence

from . import exception as exc


class Secret:
    """A set of environment variables. Values are sent with the sandbox request and are never
    listed back by the API."""

    def __init__(self, env: Dict[str, str]):
        self.env = env

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
    def from_name(name: str, **kwargs) -> "Secret":
        """Named secrets stored on the server are not available yet in gust."""
        raise exc.NotFoundError(
            f"Secret {name!r}: named secrets are not stored by this gust server yet; "
            "use Secret.from_dict({...}) or Secret.from_local_environ([...])")

    def __repr__(self) -> str:
        return f"Secret(keys={sorted(self.env)})"
