"""Modal's older GPU objects (``gpu=modal.gpu.A100(size="80GB", count=2)``), deprecated there in
favour of strings (``gpu="A100-80GB:2"``). Each is the string it stands for, so it goes wherever
a GPU string does; making one warns, as Modal does."""

import warnings
from typing import Optional

from . import exception as exc


class _GPUConfig(str):
    _type = ""

    def __new__(cls, *, count: int = 1, size: Optional[str] = None) -> "_GPUConfig":
        name = cls._type
        if size is not None:
            if cls._type != "A100" or str(size).upper() not in ("40GB", "80GB"):
                raise exc.InvalidError(f"gpu.{cls.__name__}(size={size!r}): only A100 has sizes, '40GB' or '80GB'")
            name = f"A100-{str(size).upper()}"
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 8:
            raise exc.InvalidError(f"gpu.{cls.__name__}(count={count!r}): count must be 1 to 8")
        spec = name if count == 1 else f"{name}:{count}"
        warnings.warn(f'gpu=modal.gpu.{cls.__name__}(...) is deprecated; use gpu="{spec}"', DeprecationWarning,
                      stacklevel=2)
        return super().__new__(cls, spec)

    def __repr__(self) -> str:
        return f"gpu.{type(self).__name__}({str(self)!r})"


def _kind(name: str, type_: str) -> type:
    return type(name, (_GPUConfig,), {"_type": type_, "__doc__": f"gpu={type_!r}", "__module__": __name__})


T4 = _kind("T4", "T4")
L4 = _kind("L4", "L4")
A10G = _kind("A10G", "A10G")
A100 = _kind("A100", "A100")
L40S = _kind("L40S", "L40S")
H100 = _kind("H100", "H100")
H200 = _kind("H200", "H200")
B200 = _kind("B200", "B200")
Any = _kind("Any", "ANY")

__all__ = ["A10G", "A100", "Any", "B200", "H100", "H200", "L4", "L40S", "T4"]
