"""A forked child of a process that used CUDA gets a clear error, not a hang.

CUDA cannot be used in a child forked after the parent initialised it. After a
fork, if this process had used CUDA through extstream (``_device`` knows, and
calls :func:`refuse_cuda` from its fork handler), every CUDA function of the
backend is replaced by one that raises ``CudaError`` saying so. Each module that
owns other state, locks and threads resets its own in the child.
"""

from __future__ import annotations

from typing import Final, NoReturn

from ._backend import cuda as _cuda
from ._errors import CudaError

_INITIALIZATION_ERROR: Final = 3  # cudaErrorInitializationError: what CUDA itself returns there


def _refuse(*args: object) -> NoReturn:
    raise CudaError(
        _INITIALIZATION_ERROR,
        explanation="CUDA cannot be used in a process forked from one that had used it; "
        "start workers with multiprocessing's 'spawn' or 'forkserver' method",
    )


def refuse_cuda() -> None:
    """Make every CUDA function of the backend raise (in a forked child)."""
    for name in _cuda.__all__:
        value = getattr(_cuda, name)
        calls_cuda = name.startswith("cu") or name in _cuda.DIRECT_CALLS
        if calls_cuda and callable(value) and not isinstance(value, type):
            setattr(_cuda, name, _refuse)
