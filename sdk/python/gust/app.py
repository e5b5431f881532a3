"""App: the named group that sandboxes belong to, as in ``modal.App``."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Optional

from ._http import Client, get_client

DEFAULT_SANDBOX_APP = "sandboxes"


class App:
    """An app. ``App.lookup(name, create_if_missing=True)`` finds (or makes) it on the server;
    ``App(name)`` does so lazily, the first time its id is needed."""

    def __init__(self, name: Optional[str] = None, *, image: Any = None, secrets: Any = (),
                 volumes: Optional[dict] = None, include_source: Optional[bool] = None,
                 tags: Optional[dict] = None):
        self._name = name
        self._image = image
        self._secrets = list(secrets or ())
        self._tags = dict(tags or {})
        self._app_id: Optional[str] = None
        self._data: Optional[dict] = None
        self._client: Optional[Client] = None  # the client that resolved _app_id
        self._lock = threading.Lock()

    @classmethod
    def lookup(cls, name: str, *, client: Optional[Client] = None, environment_name: Optional[str] = None,
               create_if_missing: bool = False) -> "App":
        """The app called ``name``; create it if missing and ``create_if_missing`` (else NotFoundError)."""
        app = cls(name)
        app._lookup(client or get_client(), create_if_missing)
        return app

    def _lookup(self, client: Client, create: bool) -> str:
        data = client.json("POST", "/v1/apps/lookup", json={"name": self.name, "create_if_missing": create})
        self._data = data
        self._app_id = data["app_id"]
        self._client = client
        self._name = data.get("name") or self._name
        return self._app_id

    def _resolve(self, client: Client) -> str:
        if self._app_id is None or self._client is not client:
            with self._lock:
                if self._app_id is None or self._client is not client:
                    self._lookup(client, True)
        return self._app_id  # type: ignore[return-value]

    def _forget(self) -> None:
        with self._lock:
            self._app_id = None

    @property
    def name(self) -> str:
        return self._name or DEFAULT_SANDBOX_APP

    @property
    def app_id(self) -> str:
        """The app id (``ap-...``), looking the app up (creating it) on first use."""
        return self._resolve(get_client())

    @property
    def image(self) -> Any:
        return self._image

    def hydrate(self, client: Optional[Client] = None) -> "App":
        self._resolve(client or get_client())
        return self

    @contextlib.contextmanager
    def run(self, *, client: Optional[Client] = None, detach: bool = False, interactive: bool = False,
            environment_name: Optional[str] = None) -> Iterator["App"]:
        """Make sure the app exists on the server for the duration of the block."""
        self._resolve(client or get_client())
        yield self

    def __repr__(self) -> str:
        return f"App({self.name!r}" + (f", app_id={self._app_id!r})" if self._app_id else ")")
