"""Which CUDA the rest of extstream calls: the real runtime or the CPU simulator.

``EXTSTREAM_BACKEND=cuda`` (default) or ``sim``, read once, at the first import
of this module. Both modules provide the same names with the same call and
return conventions (their ``__all__``), so nothing else in extstream knows
which one it talks to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import _config

__all__ = ["NAME", "cuda"]

NAME: Final = _config.backend()

if TYPE_CHECKING or NAME == "cuda":
    from . import _cuda as cuda
else:
    from . import _sim as cuda
