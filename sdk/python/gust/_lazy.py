"""Modules imported on first use.

Every function container's cold start imports the whole SDK (the user's module does ``import
gust``), so the SDK keeps heavy standard-library modules (asyncio, http.client with ssl and
email, tarfile) out of its import path until something needs them.
"""

import importlib
from typing import Any


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._mod = None

    def __getattr__(self, attr: str) -> Any:
        mod = self.__dict__.get("_mod")
        if mod is None:
            mod = importlib.import_module(self.__dict__["_name"])
            self.__dict__["_mod"] = mod
        return getattr(mod, attr)
