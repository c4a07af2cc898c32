"""A forked child of a process that used CUDA gets a clear error, not a hang.

CUDA cannot be used in a child forked after the parent initialised it, and the
parent's callback tables and dispatcher thread do not exist in the child. After
a fork, if this process had used CUDA through extstream, every CUDA function of
the backend is replaced by one that raises ``CudaError`` saying so.
"""

from __future__ import annotations

import os
from typing import NoReturn

from . import _callbacks, _device
from ._backend import cuda as _cuda
from ._errors import CudaError

_INITIALIZATION_ERROR = 3  # cudaErrorInitializationError: what CUDA itself returns there


def _refuse(*args: object) -> NoReturn:
    raise CudaError(
        _INITIALIZATION_ERROR,
        None,
        None,
        "CUDA cannot be used in a process forked from one that had used it; "
        "start workers with multiprocessing's 'spawn' or 'forkserver' method",
    )


def _after_fork_in_child() -> None:
    _callbacks.forget_after_fork()
    if not _device.cuda_was_used():
        return
    for name in dir(_cuda):
        calls_cuda = name.startswith("cu") or name in _cuda.DIRECT_CALLS
        if calls_cuda and callable(getattr(_cuda, name)):
            setattr(_cuda, name, _refuse)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
