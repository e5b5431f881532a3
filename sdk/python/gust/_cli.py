"""``gust run`` and ``gust deploy``: the Go binary hands these to Python, as

    python3 -c "import sys, gust._cli as c; sys.exit(c.main(sys.argv[1:]))" run FILE[::NAME] [--flags]

``run FILE[::NAME] [--detach] [--flag value ...]`` imports FILE as a module (named after its
stem, its directory first on sys.path), publishes its app for the length of the run and calls
NAME: a local entrypoint (called here, its parameters parsed from the flags), a function
(``.remote(**flags)``, the result printed) or ``Class.method``. Without NAME: the app's only
local entrypoint, else its only function.

``deploy FILE[::APP] [--name NAME]`` deploys the app and prints its functions.

Errors of gust print one line on stderr (exit 1); bad flags print the usage (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import os
import sys
import traceback
import types
import typing
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _code, _compat, output
from . import exception as exc
from ._partial import MISSING
from .app import App, LocalEntrypoint
from .cls import Cls
from .functions import Function

USAGE = """usage: gust run [--detach] [--modal-compat] FILE[::NAME] [--flag value ...]
       gust deploy [--modal-compat] FILE[::APP] [--name NAME]

--modal-compat: `import modal` (and modal.exception, modal.queue ...) resolves to gust, here and
in the app's containers; "modal_compat": true in the client config does the same."""


class UsageError(Exception):
    """Bad command line: printed with the usage, exit status 2."""


def main(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, args = argv[0], list(argv[1:])
    try:
        if cmd == "run":
            return _run(args)
        if cmd == "deploy":
            return _deploy(args)
        if cmd == "serve":
            from . import _serve
            return _serve.main(args)
        raise UsageError(f"unknown command {cmd!r}")
    except UsageError as e:
        print(f"gust {cmd}: {e}\n{USAGE}", file=sys.stderr)
        return 2
    except exc.Error as e:
        _print_error(e)
        return 1
    except KeyboardInterrupt:
        print("gust: interrupted", file=sys.stderr)
        return 130


def _print_error(e: BaseException) -> None:
    print(f"Error: {e}", file=sys.stderr)
    for note in getattr(e, "__notes__", ()):  # a remote traceback
        print(note, file=sys.stderr)


def _user_code(f: Callable[[], Any]) -> Tuple[bool, Any]:
    """Run user code: (True, result), or (False, exit status) after printing its traceback.
    gust's own errors pass through (one line, no traceback)."""
    try:
        return True, f()
    except exc.Error:
        raise
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return False, e.code or 0
        print(e.code, file=sys.stderr)
        return False, 1
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - the user's exception, shown as Python shows it
        traceback.print_exc()
        if sys.version_info < (3, 11):  # older tracebacks leave out the notes (the remote traceback)
            for note in getattr(e, "__notes__", ()):
                print(note, file=sys.stderr)
        return False, 1


# Finding the code.

def import_file(path: str) -> ModuleType:
    """Import a .py file as a module named after its stem, its directory first on sys.path."""
    if not os.path.isfile(path):
        raise exc.InvalidError(f"no such file: {path}")
    path = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if not stem or "." in stem or stem.startswith("__"):
        raise exc.InvalidError(f"{path}: the file name must be a module name, e.g. my_app.py")
    existing = sys.modules.get(stem)
    if existing is not None and os.path.realpath(getattr(existing, "__file__", "") or "") != os.path.realpath(path):
        raise exc.InvalidError(f"{path}: the file name shadows the module {stem!r} that gust needs; rename the file")
    d = os.path.dirname(path)
    if d not in sys.path:
        sys.path.insert(0, d)
    spec = importlib.util.spec_from_file_location(stem, path)
    if spec is None or spec.loader is None:
        raise exc.InvalidError(f"{path}: cannot import it as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module
    _code.set_entrypoint(stem, path)
    spec.loader.exec_module(module)
    return module


def _apps(module: ModuleType) -> Dict[str, App]:
    out: Dict[str, App] = {}
    seen = set()
    for k, v in vars(module).items():
        if isinstance(v, App) and id(v) not in seen:
            seen.add(id(v))
            out[k] = v
    return out


def find_app(module: ModuleType, app_var: Optional[str] = None) -> App:
    apps = _apps(module)
    if app_var:
        v = getattr(module, app_var, None)
        if not isinstance(v, App):
            raise exc.InvalidError(f"{module.__name__} has no app named {app_var!r}")
        return v
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise exc.InvalidError(f"{module.__file__} defines no gust.App")
    raise exc.InvalidError(
        f"{module.__file__} defines several apps ({', '.join(apps)}): name one, as FILE::{next(iter(apps))}")


def find_target(module: ModuleType, name: str) -> Tuple[App, Any, Optional[str]]:
    """(app, what to run, method name): a LocalEntrypoint, a Function, or a Cls with a method."""
    apps = _apps(module)
    if name:
        head, _, tail = name.partition(".")
        if isinstance(getattr(module, head, None), App):
            if not tail:
                return _default_target(getattr(module, head))
            return _lookup_in(getattr(module, head), tail, name)
        for app in apps.values():
            try:
                return _lookup_in(app, name, name)
            except exc.NotFoundError:
                continue
        raise exc.NotFoundError(f"{module.__file__} has no local entrypoint, function or class {name!r}")
    return _default_target(find_app(module))


def _lookup_in(app: App, name: str, full: str) -> Tuple[App, Any, Optional[str]]:
    head, _, method = name.partition(".")
    if not method:
        if name in app._local_entrypoints:
            return app, app._local_entrypoints[name], None
        if name in app._functions:
            return app, app._functions[name], None
    elif head in app._classes:
        cls = app._classes[head]
        if method not in cls._methods():
            raise exc.NotFoundError(f"class {head} has no @gust.method() {method!r}")
        return app, cls, method
    raise exc.NotFoundError(f"app {app.name!r} has no local entrypoint, function or class {full!r}")


def _default_target(app: App) -> Tuple[App, Any, Optional[str]]:
    eps = app._local_entrypoints
    if len(eps) == 1:
        return app, next(iter(eps.values())), None
    if len(eps) > 1:
        raise exc.InvalidError(f"app {app.name!r} has several local entrypoints ({', '.join(sorted(eps))}): "
                               "name one, as FILE::NAME")
    fns = app._functions
    if len(fns) == 1:
        return app, next(iter(fns.values())), None
    if not fns:
        raise exc.InvalidError(f"app {app.name!r} has no local entrypoint or function to run")
    raise exc.InvalidError(f"app {app.name!r} has several functions ({', '.join(sorted(fns))}) and no local "
                           "entrypoint: name one, as FILE::NAME")


# Flags.

_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _flag_type(name: str, ann: Any, default: Any) -> type:
    if ann is inspect.Parameter.empty or ann is None or ann is Any:
        if default is not inspect.Parameter.empty and type(default) in (str, int, float, bool):
            return type(default)
        return str
    if isinstance(ann, str):  # an annotation that did not resolve
        s = ann.replace(" ", "")
        for opt in ("Optional[", "typing.Optional["):
            if s.startswith(opt) and s.endswith("]"):
                s = s[len(opt):-1]
        s = s.replace("|None", "").replace("None|", "")
        if s in _TYPES:
            return _TYPES[s]
    elif typing.get_origin(ann) in (typing.Union, getattr(types, "UnionType", typing.Union)):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _flag_type(name, args[0], default)
    elif ann in (str, int, float, bool):
        return ann
    raise UsageError(f"parameter {name!r} has type {ann!r}, which cannot come from the command line "
                     "(use str, int, float or bool)")


def _hints(f: Callable) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(f)
    except Exception:  # noqa: BLE001 - fall back to the raw annotations
        return {}


def _add_params(parser: argparse.ArgumentParser, params: List[inspect.Parameter], hints: Dict[str, Any]) -> None:
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        t = _flag_type(p.name, hints.get(p.name, p.annotation), p.default)
        flags = ["--" + p.name.replace("_", "-")]
        if "_" in p.name:
            flags.append("--" + p.name)
        required = p.default is p.empty
        default = None if required else p.default
        if t is bool:
            parser.add_argument(*flags, dest=p.name, action=argparse.BooleanOptionalAction, required=required,
                                default=default)
        else:
            parser.add_argument(*flags, dest=p.name, type=t, required=required, default=default,
                                metavar=t.__name__.upper())


def parse_flags(prog: str, f: Callable, argv: List[str], *, skip_first: bool = False,
                extra: Optional[List[inspect.Parameter]] = None) -> Dict[str, Any]:
    """Parse --flags for f's parameters (plus ``extra``); argparse exits 2 on bad flags."""
    params = list(inspect.signature(f).parameters.values())
    if skip_first:
        params = params[1:]
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    hints = _hints(f)
    _add_params(parser, params, hints)
    if extra:
        _add_params(parser, extra, {})
    return vars(parser.parse_args(argv))


def _class_params(cls: Cls) -> List[inspect.Parameter]:
    out = []
    hints = {}
    try:
        hints = typing.get_type_hints(cls._raw_cls)
    except Exception:  # noqa: BLE001
        pass
    for name, p in (cls._parameters or {}).items():
        default = inspect.Parameter.empty if p.default is MISSING else p.default
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                     annotation=hints.get(name, inspect.Parameter.empty)))
    return out


# Commands.

def _run(args: List[str]) -> int:
    detach = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-d", "--detach"):
            detach = True
        elif opt in ("-h", "--help"):
            print(USAGE)
            return 0
        elif opt in ("-q", "--quiet"):
            pass
        elif opt == "--modal-compat":
            _compat.install()
        else:
            raise UsageError(f"unknown option {opt}")
    if not args:
        raise UsageError("run needs a FILE")
    target, flags = args[0], args[1:]
    path, _, name = target.partition("::")
    if _compat.wanted():
        _compat.install()
    ok, module = _user_code(lambda: import_file(path))
    if not ok:
        return module
    app, obj, method = find_target(module, name)
    raw = obj._raw_cls if isinstance(obj, Cls) else obj._raw_f
    params = inspect.signature(getattr(raw, method) if method else raw).parameters
    if "--detach" in flags and "detach" not in params:
        flags.remove("--detach")
        detach = True
    prog = f"gust run {target}"
    try:
        if isinstance(obj, Cls):
            kw = parse_flags(prog, getattr(raw, method), flags, skip_first=True, extra=_class_params(obj))
        else:
            kw = parse_flags(prog, raw, flags)
    except SystemExit as e:  # argparse: --help (0) or bad flags (2, usage printed)
        return e.code if isinstance(e.code, int) else 2

    with output.enable_output():
        with app.run(detach=detach):
            if isinstance(obj, LocalEntrypoint):
                def call() -> Any:
                    r = obj(**kw)
                    return asyncio.run(r) if inspect.iscoroutine(r) else r
                ok, status = _user_code(call)
                return 0 if ok else status
            if isinstance(obj, Cls):
                cparams = {k: kw.pop(k) for k in list(kw) if k in (obj._parameters or {})}
                fn: Function = getattr(obj(**cparams), method)  # type: ignore[arg-type]
            else:
                fn = obj
            ok, status = _user_code(lambda: _call_and_print(fn, kw))
            return 0 if ok else status


def _call_and_print(fn: Function, kw: Dict[str, Any]) -> None:
    if fn.is_generator:
        for item in fn.remote_gen(**kw):
            print(item)
        return
    result = fn.remote(**kw)
    if result is not None:
        print(result)


def _deploy(args: List[str]) -> int:
    name: Optional[str] = None
    positional: List[str] = []
    while args:
        a = args.pop(0)
        if a == "--name":
            if not args:
                raise UsageError("--name needs a value")
            name = args.pop(0)
        elif a.startswith("--name="):
            name = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            print(USAGE)
            return 0
        elif a == "--modal-compat":
            _compat.install()
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            positional.append(a)
    if len(positional) != 1:
        raise UsageError("deploy needs one FILE")
    path, _, app_var = positional[0].partition("::")
    if _compat.wanted():
        _compat.install()
    ok, module = _user_code(lambda: import_file(path))
    if not ok:
        return module
    app = find_app(module, app_var or None)
    deploy_name = name or app._name or os.path.splitext(os.path.basename(path))[0]
    with output.enable_output():
        app.deploy(name=deploy_name)
    names = sorted(app._functions) + sorted(app._classes)
    print(f"Deployed app {deploy_name}: {', '.join(names)}")
    return 0
