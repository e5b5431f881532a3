"""Client configuration: where the server is and the token to present.

Each field comes from the environment (``GUST_SERVER_URL``, ``GUST_TOKEN``) or else from a
JSON file ``{"server_url": ..., "token": ...}``: the one named by ``GUST_CONFIG``, else
``$XDG_CONFIG_HOME/gust/config.json``, else ``~/.config/gust/config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

from .exception import InvalidError

DEFAULT_SERVER_URL = "http://127.0.0.1:7420"


@dataclass(frozen=True)
class Config:
    server_url: str
    token: Optional[str]
    config_path: Optional[str]  # the file read, if any


def config_path(env: Mapping[str, str]) -> str:
    """The config file to read (which may not exist)."""
    if env.get("GUST_CONFIG"):
        return os.path.expanduser(env["GUST_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "gust", "config.json")


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.startswith("unix://"):
        return url
    if "://" not in url:
        url = "http://" + url
    return url


def load(env: Optional[Mapping[str, str]] = None) -> Config:
    """Resolve the configuration from ``env`` (default ``os.environ``) and the config file."""
    if env is None:
        env = os.environ
    path = config_path(env)
    data: dict = {}
    read_path = None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        read_path = path
    except FileNotFoundError:
        if env.get("GUST_CONFIG"):
            raise InvalidError(f"GUST_CONFIG names {path}, which does not exist")
    except (OSError, ValueError) as e:
        raise InvalidError(f"cannot read gust config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidError(f"gust config file {path} must hold a JSON object with server_url and token")
    url = env.get("GUST_SERVER_URL") or data.get("server_url") or DEFAULT_SERVER_URL
    token = env.get("GUST_TOKEN") or data.get("token") or None
    if env.get("GUST_TOKEN_ID") and env.get("GUST_TOKEN_SECRET"):
        token = env["GUST_TOKEN_ID"] + ":" + env["GUST_TOKEN_SECRET"]
    return Config(server_url=normalize_url(str(url)), token=token, config_path=read_path)
