"""Schedules for deployed functions, as in ``modal.Period`` and ``modal.Cron``.

``@app.function(schedule=gust.Period(hours=1))`` runs the function every hour once the app is
deployed (``gust deploy`` / ``app.deploy()``); ephemeral runs ignore schedules. The server checks
a cron expression fully; here it is only checked for shape, so typos fail before publishing.
"""

from __future__ import annotations

import re

from . import exception as exc


class Schedule:
    """Base class of schedules."""

    def _to_spec(self) -> dict:
        raise NotImplementedError


class Period(Schedule):
    """Run every fixed interval, counted from the deploy: ``Period(days=1)``, ``Period(minutes=5)``."""

    def __init__(self, *, years: float = 0, months: float = 0, weeks: float = 0, days: float = 0,
                 hours: float = 0, minutes: float = 0, seconds: float = 0):
        if years or months:
            raise exc.InvalidError("Period(years=, months=) is not supported: months have no fixed length; "
                                   "use days=, or a Cron schedule")
        for name, v in (("weeks", weeks), ("days", days), ("hours", hours), ("minutes", minutes), ("seconds", seconds)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise exc.InvalidError(f"Period({name}=...) must be a non-negative number, got {v!r}")
        self.seconds = float(weeks * 604800 + days * 86400 + hours * 3600 + minutes * 60 + seconds)
        if self.seconds <= 0:
            raise exc.InvalidError("Period must be longer than zero, e.g. Period(hours=1)")

    def _to_spec(self) -> dict:
        return {"period": self.seconds}

    def __repr__(self) -> str:
        return f"Period(seconds={self.seconds:g})"


_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
# minute, hour, day of month, month, day of week: allowed numeric ranges.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {3: {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"},
          4: {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}}
_PART = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?$")


def _check_field(i: int, field: str, expr: str) -> None:
    name, lo, hi = _FIELDS[i]
    for part in field.split(","):
        if part == "?" and i in (2, 4):  # "no specific value", as robfig/cron allows
            continue
        m = _PART.match(part)
        if not m:
            raise exc.InvalidError(f"Cron({expr!r}): the {name} field {field!r} is not valid")
        for tok in m.group(1).split("-"):
            if tok == "*":
                continue
            if tok.isdigit():
                if not lo <= int(tok) <= hi:
                    raise exc.InvalidError(f"Cron({expr!r}): {name} {tok} is out of range {lo}-{hi}")
            elif tok.upper() not in _NAMES.get(i, ()):
                raise exc.InvalidError(f"Cron({expr!r}): {tok!r} is not a valid {name}")


class Cron(Schedule):
    """Run on a cron schedule (minute hour day-of-month month day-of-week), in ``timezone``:
    ``Cron("0 9 * * 1")`` is 09:00 every Monday."""

    def __init__(self, cron_string: str, timezone: str = "UTC"):
        if not isinstance(cron_string, str) or not cron_string.strip():
            raise exc.InvalidError("Cron needs a cron expression such as '0 9 * * 1'")
        if not isinstance(timezone, str) or not timezone:
            raise exc.InvalidError("Cron timezone must be a name such as 'UTC' or 'Europe/Paris'")
        expr = cron_string.strip()
        if expr.startswith("@"):
            if expr.lower() not in _MACROS:
                raise exc.InvalidError(
                    f"Cron({expr!r}): unknown macro; use five fields or one of {', '.join(sorted(_MACROS))}")
        else:
            fields = expr.split()
            if len(fields) != 5:
                raise exc.InvalidError(
                    f"Cron({expr!r}) must have 5 fields (minute hour day-of-month month day-of-week), "
                    f"got {len(fields)}")
            for i, f in enumerate(fields):
                _check_field(i, f, expr)
        self.cron_string = expr
        self.timezone = timezone

    def _to_spec(self) -> dict:
        return {"cron": self.cron_string, "timezone": self.timezone}

    def __repr__(self) -> str:
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"
