"""``gust serve FILE``: Modal's ``modal serve``. Runs the app as an ephemeral app (its web
endpoints get ``-dev`` URLs, printed), watches the file's directory for changes to Python
files, and on each change runs the app again from the new code; Ctrl-C (or ``--timeout``)
stops it. Each run is a child process, so that the new code is imported afresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from . import _compat, output

USAGE = """usage: gust serve [--modal-compat] [--timeout SECONDS] FILE[::APP]

Runs FILE's app as an ephemeral app and prints its web endpoints' URLs; when a .py file in
FILE's directory changes, runs it again with the new code. Stops at Ctrl-C or after --timeout."""

_CHILD = "import sys, gust._serve as s; sys.exit(s.child(sys.argv[1:]))"


def _snapshot(root: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("__pycache__", "node_modules", "venv", ".venv")]
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                try:
                    out[p] = os.stat(p).st_mtime
                except OSError:
                    pass
        if len(out) > 2000:
            break
    return out


def main(args: List[str]) -> int:
    timeout: Optional[float] = None
    compat = False
    positional: List[str] = []
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(USAGE)
            return 0
        if a == "--modal-compat":
            compat = True
        elif a == "--timeout" or a.startswith("--timeout="):
            v = a.split("=", 1)[1] if "=" in a else (args.pop(0) if args else "")
            try:
                timeout = float(v)
            except ValueError:
                print(f"gust serve: --timeout needs a number of seconds, got {v!r}\n{USAGE}", file=sys.stderr)
                return 2
        elif a.startswith("-"):
            print(f"gust serve: unknown option {a}\n{USAGE}", file=sys.stderr)
            return 2
        else:
            positional.append(a)
    if len(positional) != 1:
        print(f"gust serve: needs one FILE\n{USAGE}", file=sys.stderr)
        return 2
    target = positional[0]
    path = target.partition("::")[0]
    if not os.path.isfile(path):
        print(f"Error: no such file: {path}", file=sys.stderr)
        return 1
    root = os.path.dirname(os.path.abspath(path))
    argv = [sys.executable, "-c", _CHILD, target] + (["--modal-compat"] if compat or _compat.wanted() else [])
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    try:
        while True:
            seen = _snapshot(root)
            proc = subprocess.Popen(argv)
            changed = False
            while not changed:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if proc.poll() is not None and status == 0:
                    status = proc.returncode  # the app failed to start: wait for a fix
                time.sleep(0.3)
                now = _snapshot(root)
                changed = now != seen
            _stop(proc)
            if not changed:
                return status if proc.returncode not in (0, -signal.SIGINT, 130) else 0
            status = 0
            print("gust serve: a file changed; serving the app again with the new code", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        _stop(proc)
        return 0


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # the child stops its app
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child(args: List[str]) -> int:
    """One run of the app: publish, print the URLs, wait for SIGINT, stop."""
    from . import _cli

    target = args[0]
    if "--modal-compat" in args[1:] or _compat.wanted():
        _compat.install()
    path, _, app_var = target.partition("::")
    ok, module = _cli._user_code(lambda: _cli.import_file(path))
    if not ok:
        return module
    app = _cli.find_app(module, app_var or None)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with output.enable_output():
            with app.run():
                urls = {n: f._web_url for n, f in sorted(app._functions.items()) if f._web_url}
                if urls:
                    for n, u in urls.items():
                        print(f"  {n} => {u}", flush=True)
                else:
                    print(f"app {app.name} has no web endpoints; its functions are running", flush=True)
                print("gust serve: serving; edit the code to redeploy, Ctrl-C to stop", flush=True)
                stop.wait()
    except Exception as e:  # noqa: BLE001 - shown as gust shows errors
        _cli._print_error(e)
        return 1
    return 0
