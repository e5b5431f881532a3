"""Image.from_dockerfile: the common Dockerfile instructions, turned into gust build steps."""

import json
import os
import re
import shlex
from pathlib import PurePosixPath

from . import exception as exc

_SLIM = re.compile(r"^(docker\.io/)?(library/)?(python:3\.11[\w.-]*|debian:(bookworm|12)[\w.-]*)$")
_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _lines(text):
    """Instructions with continuations joined and comments dropped, with their line numbers."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, (buf + line).strip()))
        buf = ""
    if buf:
        out.append((start, buf.strip()))
    return out


def _subst(s, args):
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)


def _json_or_shell(rest):
    if rest.startswith("["):
        try:
            return shlex.join(json.loads(rest))
        except ValueError:
            pass
    return rest


def _under(ignore, base):
    """ignore= for a directory at base (relative to the context), when ignore's patterns are
    relative to the context, as a .dockerignore's are."""
    from .file_pattern_matcher import FilePatternMatcher
    if base == "." or not isinstance(ignore, FilePatternMatcher):
        return ignore
    return lambda p: ignore(PurePosixPath(base) / p)


def build(Image, path, context_dir, build_args, force_build, ignore):
    if not os.path.isfile(path):
        raise exc.InvalidError(f"from_dockerfile: {path!r} is not a file")
    context = os.path.abspath(context_dir or os.path.dirname(os.path.abspath(path)))
    with open(path) as f:
        text = f.read()
    if ignore is None:
        # As Docker and Modal: <Dockerfile>.dockerignore, else the context's .dockerignore.
        for cand in (path + ".dockerignore", os.path.join(context, ".dockerignore")):
            if os.path.isfile(cand):
                from .file_pattern_matcher import FilePatternMatcher
                ignore = FilePatternMatcher.from_file(cand)
                break
    image = _apply(Image, None, _lines(text), os.path.basename(path), context, ignore, dict(build_args), force_build)
    if image is None:
        raise exc.InvalidError(f"{path}: no FROM instruction")
    return image


def commands(Image, image, cmds, context_dir, force_build, ignore, secrets=None):
    """Image.dockerfile_commands: instructions (no FROM) applied on top of image; COPY and ADD
    sources are relative to context_dir (default: the current directory)."""
    lines = []
    for c in cmds:
        for item in ([c] if isinstance(c, str) else list(c)):
            if not isinstance(item, str):
                raise exc.InvalidError(f"dockerfile_commands takes strings (or lists of them), got {item!r}")
            lines.extend(_lines(item))
    for n, line in lines:
        if line.split(None, 1)[0].upper() == "FROM":
            raise exc.InvalidError("dockerfile_commands: FROM is not allowed here; start from an Image "
                                   "(Image.debian_slim(), Image.from_registry(...)) and add the commands to it")
    context = os.path.abspath(context_dir or os.getcwd())
    return _apply(Image, image, [(i + 1, line) for i, (_n, line) in enumerate(lines)], "dockerfile_commands",
                  context, ignore, {}, force_build, secrets)


def _apply(Image, image, lines, name, context, ignore, args, force_build, secrets=None):
    """Apply Dockerfile instructions to image (None: the first must be FROM)."""
    workdir = "/"
    for n, line in lines:
        parts = line.split(None, 1)
        instr, rest = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
        where = f"{name}:{n}"
        if instr == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name.strip(), _subst(default.strip().strip('"'), args))
            continue
        rest = _subst(rest, args)
        if instr == "FROM":
            ref = rest.split()[0]
            if ref.startswith("im-"):
                image = Image.from_id(ref)
            elif ref in ("debian_slim", "gust/debian_slim") or _SLIM.match(ref):
                image = Image.debian_slim(force_build=force_build)
            elif ref == "scratch":
                image = Image(_spec={"kind": "scratch"})
            else:
                raise exc.InvalidError(f"{where}: FROM {ref}: gust cannot pull registry images yet; "
                                       "use FROM debian_slim (python:3.11-slim and debian:bookworm-slim map to it) or an im-... id")
            continue
        if image is None:
            raise exc.InvalidError(f"{where}: {instr} before FROM")
        if instr == "RUN":
            extra = {"secrets": secrets} if secrets else {}
            image = image.run_commands(_json_or_shell(rest), force_build=force_build, **extra)
        elif instr in ("COPY", "ADD"):
            tokens = [t for t in shlex.split(rest) if not t.startswith("--")]
            if rest.startswith("["):
                tokens = json.loads(rest)
            if len(tokens) < 2:
                raise exc.InvalidError(f"{where}: {instr} needs a source and a destination")
            *srcs, raw_dest = tokens
            dest_is_dir = raw_dest.endswith("/") or raw_dest in (".", "./") or raw_dest.endswith("/.") or len(srcs) > 1
            dest = os.path.normpath(os.path.join(workdir, raw_dest))
            for src in srcs:
                if re.match(r"^\w+://", src):
                    raise exc.InvalidError(f"{where}: {instr} of a URL is not supported; download it in a RUN step")
                local = os.path.normpath(os.path.join(context, src))
                if not (local + os.sep).startswith(context + os.sep) and local != context:
                    raise exc.InvalidError(f"{where}: {instr} source {src!r} is outside the build context")
                if os.path.isdir(local):
                    image = image.add_local_dir(local, dest, copy=True, ignore=_under(ignore, os.path.relpath(local, context)))
                elif os.path.isfile(local):
                    target = os.path.join(dest, os.path.basename(local)) if dest_is_dir else dest
                    image = image.add_local_file(local, target, copy=True)
                else:
                    raise exc.InvalidError(f"{where}: {instr} source {src!r} not found in {context}")
        elif instr == "ENV":
            if "=" in rest.split()[0]:
                pairs = dict(tok.split("=", 1) for tok in shlex.split(rest))
            else:
                key, _, val = rest.partition(" ")
                pairs = {key: val.strip()}
            image = image.env(pairs)
        elif instr == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, rest.strip()))
            image = image.workdir(workdir)
        elif instr == "USER":
            image = image._with_step({"type": "user", "user": rest.strip()})
        elif instr == "ENTRYPOINT":
            cmd = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            image = image.entrypoint(cmd)
        elif instr == "CMD":
            # Sandboxes run the command given to Sandbox.create, as in Modal.
            continue
        else:
            raise exc.InvalidError(f"{where}: the {instr} instruction is not supported; gust supports FROM, RUN, COPY, ADD, ENV, WORKDIR, ARG, USER, ENTRYPOINT and CMD")
    return image
