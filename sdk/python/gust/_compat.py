"""Modal compatibility mode: ``import modal`` (and ``modal.exception``, ``modal.queue`` ...)
resolves to gust, so a program written for Modal runs unchanged, without a shim file.

It is opt-in: ``gust run --modal-compat app.py`` (or ``gust deploy --modal-compat``),
``"modal_compat": true`` in the client config (top level or the profile), or
``GUST_MODAL_COMPAT=1``. The published code carries the flag, and the runner in each of the
app's containers installs the same finder before it imports the user's module.

The finder is first on ``sys.meta_path``: it answers for ``modal`` and ``modal.*`` only, with the
gust module of the same name (the same object, so ``modal.Dict is gust.Dict``), and leaves every
other import alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Optional

ENV = "GUST_MODAL_COMPAT"
_ALIAS = "modal"


class _AliasLoader:
    """Loads ``modal.X`` as the module ``gust.X``."""

    def __init__(self, real: str):
        self.real = real
        self._spec: Any = None

    def create_module(self, spec: Any) -> Any:
        mod = importlib.import_module(self.real)
        self._spec = getattr(mod, "__spec__", None)
        return mod

    def exec_module(self, module: Any) -> None:
        # importlib gave the gust module the alias's spec: give it its own back, so that its
        # relative imports and reloads still name gust.
        if self._spec is not None:
            module.__spec__ = self._spec


class ModalFinder:
    """A meta path finder that maps ``modal[.X]`` to ``gust[.X]``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _ALIAS and not name.startswith(_ALIAS + "."):
            return None
        real = "gust" + name[len(_ALIAS):]
        try:
            found = importlib.util.find_spec(real)
        except (ImportError, ValueError):
            found = None
        if found is None:
            return None  # ModuleNotFoundError names modal.X, as the user wrote it
        return importlib.util.spec_from_loader(name, _AliasLoader(real), is_package=found.submodule_search_locations is not None)

    def __repr__(self) -> str:
        return "gust.ModalFinder()"


def installed() -> bool:
    return any(isinstance(f, ModalFinder) for f in sys.meta_path)


def install() -> None:
    """Make ``import modal`` resolve to gust in this process (idempotent). A real ``modal``
    imported before is replaced for later imports."""
    if not installed():
        sys.meta_path.insert(0, ModalFinder())
    for key in [k for k in sys.modules if k == _ALIAS or k.startswith(_ALIAS + ".")]:
        mod = sys.modules[key]
        if not (getattr(mod, "__name__", "") or "").startswith("gust"):
            del sys.modules[key]
    os.environ[ENV] = "1"  # subprocesses (and run_function builds) follow


def wanted(config: Optional[Any] = None) -> bool:
    """Whether compat mode is on: the environment, else the client config's modal_compat."""
    v = os.environ.get(ENV)
    if v is not None and v != "":
        return v not in ("0", "false", "no")
    if config is None:
        from ._config import load
        try:
            config = load()
        except Exception:  # noqa: BLE001 - a bad config is reported when the client is used
            return False
    return bool(getattr(config, "modal_compat", False))


def active() -> bool:
    """Whether this process publishes its code in compat mode."""
    return installed()
