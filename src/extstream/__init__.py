"""extstream: work with CUDA streams your code did not create.

Wrap any stream handle (torch, CuPy, numba, cuda.core, C code) as an
:class:`ExternalStream`, order work with :class:`Event`, run Python when the GPU
gets somewhere, and keep a per-thread, per-task current stream. Importing
extstream never touches the CUDA driver; the first CUDA call does.

The names that need CUDA are imported on first use: ``import extstream`` alone
chooses no backend and imports no ``cuda.bindings`` (so a pytest plugin or a
library can import it at no cost), while ``from extstream import Stream`` or
``extstream.Stream`` loads the backend as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from ._config import debug_checks_enabled, set_debug_checks
from ._version import __version__

if TYPE_CHECKING:
    from ._capture import relaxed_capture
    from ._errors import CudaError
    from ._interop import activate, current_stream_of, dlpack_exchange, resolve_stream
    from ._stream import Event, ExternalStream, Stream, as_stream, get_current_stream
    from ._timing import Timed, timed

__all__ = [
    "CudaError",
    "Event",
    "ExternalStream",
    "Stream",
    "Timed",
    "__version__",
    "activate",
    "as_stream",
    "current_stream_of",
    "debug_checks_enabled",
    "dlpack_exchange",
    "get_current_stream",
    "relaxed_capture",
    "resolve_stream",
    "set_debug_checks",
    "timed",
]

_LAZY: Final = {
    "CudaError": "._errors",
    "Event": "._stream",
    "ExternalStream": "._stream",
    "Stream": "._stream",
    "as_stream": "._stream",
    "get_current_stream": "._stream",
    "Timed": "._timing",
    "timed": "._timing",
    "activate": "._interop",
    "current_stream_of": "._interop",
    "dlpack_exchange": "._interop",
    "resolve_stream": "._interop",
    "relaxed_capture": "._capture",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'extstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups are plain module attributes
    return value


_SUBMODULES: Final = ("sim", "testing")  # public, listed once imported


def __dir__() -> list[str]:
    """The public API only (what Jupyter completes), not the imports of this module."""
    return sorted({*__all__, *(name for name in _SUBMODULES if name in globals())})
