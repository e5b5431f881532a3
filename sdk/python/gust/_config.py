"""Client configuration: where the server is and the credentials to present.

Credentials are a token id and secret (``tk-...`` and ``ts-...``), sent as
``Authorization: Bearer <token_id>:<token_secret>``, or a single opaque token (the operator
token ``gust up`` makes), sent as ``Bearer <token>``.

Each field is resolved in this order: the environment, then the selected profile of the config
file, then the file's top-level (legacy) fields.

- Environment: ``GUST_SERVER_URL``; ``GUST_TOKEN_ID`` with ``GUST_TOKEN_SECRET`` (both or
  neither), which win over ``GUST_TOKEN``; ``GUST_PROFILE`` selects a profile; ``GUST_CONFIG``
  names the file; ``GUST_TLS_FINGERPRINT`` or ``GUST_TLS_CA_FILE`` verify an https server.
- The file: the one named by ``GUST_CONFIG``, else ``$XDG_CONFIG_HOME/gust/config.json``, else
  ``~/.config/gust/config.json``. Either the legacy form ``{"server_url": ..., "token": ...}`` or
  ``{"active_profile": "default", "profiles": {"default": {"server_url": ..., "token_id": ...,
  "token_secret": ...}, ...}}`` (a profile may hold ``token`` instead of the pair). ``"modal_compat":
  true`` (top level or in the profile) makes ``gust run`` resolve ``import modal`` to gust.
- The profile: ``GUST_PROFILE``, else ``active_profile``, else ``default``, else the only one.

Credentials are taken whole from the first place that has any: an id and a secret never come
from two different places, and an id without its secret (or the reverse) is an error.

An https server is verified by ``tls_fingerprint`` (the hex SHA-256 of its certificate, which
``gust server`` writes into the profile: the server must present exactly that certificate), else
by the CAs in ``tls_ca_file``, else by the system's CAs. A profile's TLS settings apply only to
the profile's own server: ``GUST_SERVER_URL`` naming another drops them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from .exception import InvalidError

DEFAULT_SERVER_URL = "http://127.0.0.1:7420"
DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Config:
    server_url: str
    token: Optional[str]  # a single opaque token, when no id and secret are given
    config_path: Optional[str]  # the file read, if any
    token_id: Optional[str] = None
    token_secret: Optional[str] = None
    profile: Optional[str] = None  # the profile used, if any
    tls_fingerprint: Optional[str] = None  # pins an https server's certificate (hex SHA-256)
    tls_ca_file: Optional[str] = None  # else: trust the CAs in this PEM file
    modal_compat: bool = False  # `import modal` resolves to gust under `gust run` (see _compat.py)

    @property
    def has_credentials(self) -> bool:
        return bool((self.token_id and self.token_secret) or self.token)

    @property
    def authorization(self) -> Optional[str]:
        """The Authorization header's value, or None without credentials."""
        if self.token_id and self.token_secret:
            return f"Bearer {self.token_id}:{self.token_secret}"
        if self.token:
            return "Bearer " + self.token
        return None

    def missing_credentials_message(self) -> str:
        """What to do when there are no credentials."""
        where = ""
        if self.config_path:
            where = f" (read {self.config_path}" + (f", profile {self.profile!r}" if self.profile else "") + ")"
        return ("no gust credentials" + where + ": set GUST_TOKEN_ID and GUST_TOKEN_SECRET (or GUST_TOKEN) "
                "and GUST_SERVER_URL, or run `gust token set` or `gust up`, which write "
                "~/.config/gust/config.json")


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


def select_profile(data: Mapping[str, Any], env: Mapping[str, str], path: str) -> Tuple[Optional[str], dict]:
    """The profile to use from a config file's ``data``: its name and fields (None, {} if none)."""
    profiles = data.get("profiles")
    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise InvalidError(f"gust config file {path}: \"profiles\" must map profile names to objects")
    name = env.get("GUST_PROFILE")
    source = "GUST_PROFILE"
    if not name:
        name = data.get("active_profile")
        source = "active_profile"
        if name is not None and not isinstance(name, str):
            raise InvalidError(f"gust config file {path}: \"active_profile\" must be a string")
    if name:
        if name not in profiles:
            have = ", ".join(sorted(profiles)) or "none"
            raise InvalidError(f"{source} names the gust profile {name!r}, which {path} does not have "
                               f"(profiles: {have}); add it with `gust token set --profile {name}`")
        return name, profiles[name]
    if DEFAULT_PROFILE in profiles:
        return DEFAULT_PROFILE, profiles[DEFAULT_PROFILE]
    if len(profiles) == 1:
        name = next(iter(profiles))
        return name, profiles[name]
    return None, {}


def _str(d: Mapping[str, Any], key: str, where: str) -> Optional[str]:
    v = d.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise InvalidError(f"{where}: {key!r} must be a string")
    return v


def _credentials(d: Mapping[str, Any], names: Tuple[str, str, str], where: str,
                 get=None) -> Optional[Tuple[Optional[str], Optional[str], Optional[str]]]:
    """(token_id, token_secret, token) from one place, or None if it holds none."""
    get = get or (lambda k: _str(d, k, where))
    tid, secret, token = get(names[0]), get(names[1]), get(names[2])
    if tid and not secret:
        raise InvalidError(f"{where} has {names[0]} but not {names[1]}: give both, the token's id and its secret")
    if secret and not tid:
        raise InvalidError(f"{where} has {names[1]} but not {names[0]}: give both, the token's id and its secret")
    if tid:
        return tid, secret, None
    if token:
        return None, None, token
    return None


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
        raise InvalidError(f"gust config file {path} must hold a JSON object: "
                           "{\"active_profile\": ..., \"profiles\": {NAME: {\"server_url\", \"token_id\", \"token_secret\"}}}")
    profile, prof = select_profile(data, env, path)
    where_prof = f"profile {profile!r} of {path}"

    url = (env.get("GUST_SERVER_URL") or _str(prof, "server_url", where_prof)
           or _str(data, "server_url", path) or DEFAULT_SERVER_URL)
    cred = (_credentials(env, ("GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_TOKEN"), "the environment",
                         get=lambda k: env.get(k) or None)
            or _credentials(prof, ("token_id", "token_secret", "token"), where_prof)
            or _credentials(data, ("token_id", "token_secret", "token"), path)
            or (None, None, None))
    tid, secret, token = cred
    fingerprint, ca_file = env.get("GUST_TLS_FINGERPRINT") or None, env.get("GUST_TLS_CA_FILE") or None
    if not fingerprint and not ca_file:
        prof_url = _str(prof, "server_url", where_prof)
        if not env.get("GUST_SERVER_URL") or (prof_url and normalize_url(env["GUST_SERVER_URL"]) == normalize_url(prof_url)):
            fingerprint = _str(prof, "tls_fingerprint", where_prof)
            ca_file = _str(prof, "tls_ca_file", where_prof)
    if fingerprint:
        fingerprint = parse_fingerprint(fingerprint)
    compat = prof.get("modal_compat", data.get("modal_compat", False))
    if not isinstance(compat, bool):
        raise InvalidError(f"modal_compat in {path} must be true or false, got {compat!r}")
    return Config(server_url=normalize_url(url), token=token, config_path=read_path,
                  token_id=tid, token_secret=secret, profile=profile,
                  tls_fingerprint=fingerprint, tls_ca_file=ca_file, modal_compat=compat)


def parse_fingerprint(s: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and ``sha256:`` allowed)."""
    f = s.strip().lower()
    if f.startswith("sha256:"):
        f = f[len("sha256:"):]
    f = f.replace(":", "")
    try:
        ok = len(bytes.fromhex(f)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise InvalidError(f"gust TLS fingerprint {s!r} is not a SHA-256 fingerprint: want 64 hex digits "
                           "(GUST_TLS_FINGERPRINT or tls_fingerprint in the config file)")
    return f
