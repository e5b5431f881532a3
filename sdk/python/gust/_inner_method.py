"""``self.method`` inside a class's own container.

There the user's class is instantiated plainly, so ``self.other`` would be a bare bound method;
Modal's docs have methods call each other as ``self.other.local(...)`` (and ``.remote(...)``
reaches another container). The runner sets each ``@method`` on the instance as an
``InnerMethod``: calling it, or ``.local()``, runs the bound method here; any other attribute
(``remote``, ``spawn``, ``map``, ...) is the method of the class's handle with the same parameters.
"""

from typing import Any, Callable


class InnerMethod:
    """A bound ``@method`` with Modal's handle interface (see the module doc)."""

    def __init__(self, bound: Callable, name: str, handle: Callable[[], Any]):
        self._bound = bound
        self._name = name
        self._handle = handle  # makes the class handle's instance, for .remote() and friends

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._bound(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method in this container, on this instance."""
        return self._bound(*args, **kwargs)

    def get_raw_f(self) -> Callable:
        return self._bound.__func__ if hasattr(self._bound, "__func__") else self._bound

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(getattr(self._handle(), self._name), attr)

    def __repr__(self) -> str:
        return f"<method {self._name} of {self._bound.__self__!r}>" if hasattr(self._bound, "__self__") \
            else f"<method {self._name}>"


def install(obj: Any, names: Any, handle: Callable[[], Any]) -> None:
    """Wrap the ``@method``s ``names`` of the instance ``obj`` (best effort: a class that refuses
    instance attributes keeps its plain methods)."""
    for name in names:
        try:
            bound = getattr(obj, name)
            if callable(bound) and not isinstance(bound, InnerMethod):
                setattr(obj, name, InnerMethod(bound, name, handle))
        except Exception:  # noqa: BLE001 - __slots__, a property, a custom __setattr__
            continue


def unwrap(f: Any) -> Any:
    """The plain bound method behind ``f`` (what the runner calls and inspects)."""
    return f._bound if isinstance(f, InnerMethod) else f
