"""extstream: work with CUDA streams your code did not create.

Wrap any stream handle (torch, CuPy, numba, cuda.core, C code) as an
:class:`ExternalStream`, order work with :class:`Event`, run Python when the GPU
gets somewhere, and keep a per-thread, per-task current stream. Importing
extstream never touches the CUDA driver; the first CUDA call does.
"""

from . import _fork  # noqa: F401 - registers the fork handler
from ._config import debug_checks_enabled, set_debug_checks
from ._current import get_current_stream
from ._errors import CudaError
from ._event import Event
from ._interop import as_stream
from ._stream import ExternalStream, Stream
from ._timing import Timed, timed
from ._version import __version__

__all__ = [
    "CudaError",
    "Event",
    "ExternalStream",
    "Stream",
    "Timed",
    "__version__",
    "as_stream",
    "debug_checks_enabled",
    "get_current_stream",
    "set_debug_checks",
    "timed",
]
