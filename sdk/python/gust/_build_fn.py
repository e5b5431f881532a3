"""Runs the function of an ``Image.run_function`` build step inside the build container.

The client ships a directory (see image._run_function_steps) holding ``sdk/`` (this SDK),
``code/`` (the function's module and the local modules it imports, as a function's code is
shipped), ``args.pkl`` (the pickled ``(args, kwargs)``) and ``run.json`` (the module and the
function's name). The step's command puts sdk/ and code/ first on ``sys.path`` and calls
``main(dir)``; an exception fails the build with its traceback in the build log.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle


def main(d: str) -> int:
    with open(os.path.join(d, "run.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("modal_compat"):
        from . import _compat
        _compat.install()
    mod = importlib.import_module(cfg["module"])
    fn = getattr(mod, cfg["name"])
    fn = getattr(fn, "_gust_raw_f", None) or fn
    with open(os.path.join(d, "args.pkl"), "rb") as f:
        args, kwargs = pickle.load(f)
    print(f"gust: running {cfg['module']}.{cfg['name']} in the image (run_function)", flush=True)
    res = fn(*args, **kwargs)
    if inspect.isawaitable(res):
        import asyncio

        async def wait():
            return await res

        asyncio.run(wait())
    return 0
