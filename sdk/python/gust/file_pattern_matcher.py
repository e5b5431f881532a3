"""FilePatternMatcher: .dockerignore-style patterns for ``ignore=`` of ``Image.add_local_dir``
and friends, as Modal's ``modal.FilePatternMatcher``.

Patterns are matched against paths relative to the directory being added, with ``/`` as the
separator: ``*`` matches within one path segment, ``**`` any number of segments, ``?`` one
character, ``[...]`` a class; a pattern that matches a directory matches everything under it;
a pattern starting with ``!`` re-includes what earlier patterns matched; the last match wins.
"""

import os
import posixpath
import re
from pathlib import Path, PurePath
from typing import Callable, List, Tuple, Union


def _clean(pattern: str) -> str:
    p = posixpath.normpath(pattern.strip().replace(os.sep, "/"))
    while p.startswith("./"):
        p = p[2:]
    return p.lstrip("/") if p != "/" else p


def _regex(pattern: str) -> "re.Pattern[str]":
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # zero or more whole segments
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


class FilePatternMatcher:
    """``FilePatternMatcher("*.pyc", "**/__pycache__", "!keep.pyc")`` is a callable that says
    whether a relative path is matched; ``~matcher`` matches the opposite."""

    def __init__(self, *pattern: str) -> None:
        self._patterns: List[Tuple[bool, "re.Pattern[str]", str]] = []
        for p in pattern:
            if not isinstance(p, str):
                raise TypeError(f"FilePatternMatcher patterns must be strings, got {p!r}")
            p = p.strip()
            if not p or p.startswith("#"):
                continue
            exclusion = p.startswith("!")
            if exclusion:
                p = p[1:].strip()
            cleaned = _clean(p)
            self._patterns.append((exclusion, _regex(cleaned), cleaned))
        self._inverted = False

    @classmethod
    def from_file(cls, file_path: Union[str, PurePath]) -> "FilePatternMatcher":
        """A matcher from a file of patterns, one per line (``#`` starts a comment line), such as
        a ``.dockerignore``."""
        with open(file_path, encoding="utf-8") as f:
            return cls(*f.read().splitlines())

    def _matches(self, path: str) -> bool:
        path = _clean(path)
        parents = []
        parent = posixpath.dirname(path)
        while parent not in ("", ".", "/"):
            parents.append(parent)
            parent = posixpath.dirname(parent)
        matched = False
        for exclusion, rx, _ in self._patterns:
            if exclusion != matched:
                continue  # an inclusion already matched, or an exclusion with nothing to undo
            if rx.match(path) or any(rx.match(p) for p in parents):
                matched = not exclusion
        return matched

    def can_prune_directories(self) -> bool:
        """Whether a matched directory can be skipped whole: not when a ``!`` pattern may bring
        back something under it, nor when inverted."""
        return not self._inverted and not any(ex for ex, _, _ in self._patterns)

    def __call__(self, file_path: Union[str, PurePath]) -> bool:
        m = self._matches(str(file_path))
        return not m if self._inverted else m

    def __invert__(self) -> "FilePatternMatcher":
        other = FilePatternMatcher()
        other._patterns, other._inverted = self._patterns, not self._inverted
        return other

    def __repr__(self) -> str:
        pats = ", ".join(("!" if ex else "") + p for ex, _, p in self._patterns)
        return f"{'~' if self._inverted else ''}FilePatternMatcher({pats})"


def as_predicate(ignore) -> Tuple[Callable[[Path], bool], bool]:
    """(predicate, whether a matched directory may be skipped whole) for an ``ignore=`` value:
    a list of patterns, a FilePatternMatcher, or a function of the relative ``Path``."""
    if ignore is None:
        return (lambda p: False), True
    if isinstance(ignore, FilePatternMatcher):
        return ignore, ignore.can_prune_directories()
    if callable(ignore):
        return ignore, True
    if isinstance(ignore, str):
        raise TypeError("ignore= takes a list of patterns, a FilePatternMatcher or a function, not a string; "
                        f"write ignore=[{ignore!r}]")
    m = FilePatternMatcher(*ignore)
    return m, m.can_prune_directories()
