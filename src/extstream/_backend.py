"""Which CUDA the rest of extstream calls: the real runtime or the CPU simulator.

``EXTSTREAM_BACKEND=cuda`` (default) or ``sim``, read once at import. Both
modules provide the same names with the same call and return conventions, so
nothing else in extstream knows which one it talks to.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__all__ = ["NAME", "cuda"]

NAME = os.environ.get("EXTSTREAM_BACKEND", "").strip().lower() or "cuda"
_MODULES = {"cuda": "._cuda", "sim": "._sim"}

if NAME not in _MODULES:
    raise ValueError(
        f"environment variable EXTSTREAM_BACKEND={os.environ['EXTSTREAM_BACKEND']!r} "
        "must be 'cuda' or 'sim'"
    )

if TYPE_CHECKING:
    from . import _cuda as cuda
else:
    cuda = importlib.import_module(_MODULES[NAME], __package__)
