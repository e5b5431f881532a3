"""Retry policy for function inputs, as in ``modal.Retries``."""

from __future__ import annotations

from typing import Any

from . import exception as exc


class Retries:
    """Try a failed input again up to ``max_retries`` times, waiting
    ``initial_delay * backoff_coefficient ** (n - 1)`` seconds (at most ``max_delay``) before
    retry ``n``. ``retries=3`` on a function means ``Retries(max_retries=3,
    backoff_coefficient=1.0, initial_delay=1.0)``."""

    def __init__(self, *, max_retries: int, backoff_coefficient: float = 2.0, initial_delay: float = 1.0,
                 max_delay: float = 60.0):
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 10:
            raise exc.InvalidError(f"Retries: max_retries must be an integer from 0 to 10, got {max_retries!r}")
        for name, v, lo, hi in (("backoff_coefficient", backoff_coefficient, 1.0, 10.0),
                                ("initial_delay", initial_delay, 0.0, 60.0),
                                ("max_delay", max_delay, 1.0, 60.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
                raise exc.InvalidError(f"Retries: {name} must be between {lo:g} and {hi:g}, got {v!r}")
        self.max_retries = max_retries
        self.backoff_coefficient = float(backoff_coefficient)
        self.initial_delay = float(initial_delay)
        self.max_delay = float(max_delay)

    @staticmethod
    def _from(v: Any) -> "Retries | None":
        """The policy for ``retries=`` (None, an int, or Retries)."""
        if v is None:
            return None
        if isinstance(v, Retries):
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return Retries(max_retries=v, backoff_coefficient=1.0, initial_delay=1.0)
        raise exc.InvalidError(f"retries must be an int or gust.Retries(...), got {v!r}")

    def _to_spec(self) -> dict:
        return {"max_retries": self.max_retries, "backoff_coefficient": self.backoff_coefficient,
                "initial_delay": self.initial_delay, "max_delay": self.max_delay}

    def __repr__(self) -> str:
        return (f"Retries(max_retries={self.max_retries}, backoff_coefficient={self.backoff_coefficient:g}, "
                f"initial_delay={self.initial_delay:g}, max_delay={self.max_delay:g})")
