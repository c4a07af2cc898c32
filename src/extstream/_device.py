"""Device numbers: validation, the device count, and the current device."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._backend import cuda as _cuda
from ._errors import raise_cuda_error

_SUCCESS = _cuda.SUCCESS

# The device count is fixed for the life of a process (CUDA reads
# CUDA_VISIBLE_DEVICES once), so it is asked once, on first need.
_count: int | None = None


def device_index(device_id: object, *, name: str = "device_id") -> int:
    """*device_id* as a non-negative int, or ``TypeError``/``ValueError`` naming it."""
    if isinstance(device_id, bool):
        raise TypeError(f"{name} must be an int, not {device_id!r}")
    try:
        index = operator.index(device_id)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {device_id!r}") from None
    if index < 0:
        raise ValueError(f"{name} must be >= 0, not {device_id!r}")
    return index


def device_count() -> int:
    """How many CUDA devices this process sees; ``CudaError`` without a driver."""
    global _count
    if _count is None:
        err, count = _cuda.cudaGetDeviceCount()
        if err is not _SUCCESS:
            raise_cuda_error(err, "cudaGetDeviceCount")
        _count = count
    return _count


_used = False


def note_use() -> None:
    """Remember that CUDA is about to be called (a forked child must then refuse it)."""
    global _used
    _used = True


def cuda_was_used() -> bool:
    """Whether this process has called CUDA through extstream."""
    return _used or _count is not None


def current_device() -> int:
    """The calling thread's current CUDA device.

    With a single device that is always 0, which saves a CUDA call on every
    ``get_current_stream()``.
    """
    if _count == 1 or (_count is None and device_count() == 1):
        return 0
    err, device = _cuda.cudaGetDevice()
    if err is not _SUCCESS:
        raise_cuda_error(err, "cudaGetDevice")
    return int(device)


def create_on(
    device_id: int | None, create: Callable[..., tuple[Any, Any]], name: str, *args: Any
) -> tuple[int, Any]:
    """``(device, handle)`` from the runtime factory *create* called on *device_id*
    (None: the current device)."""
    device = current_device() if device_id is None else device_index(device_id)
    with on_device(device):
        err, handle = create(*args)
    if err is not _SUCCESS:
        raise_cuda_error(err, name)
    return device, handle


@contextmanager
def on_device(device_id: int) -> Iterator[None]:
    """Make *device_id* current for the block, then restore the previous device."""
    previous = current_device()
    if previous == device_id:
        yield
        return
    err = _cuda.cudaSetDevice(device_id)[0]
    if err is not _SUCCESS:
        raise_cuda_error(err, "cudaSetDevice")
    try:
        yield
    finally:
        _cuda.cudaSetDevice(previous)
