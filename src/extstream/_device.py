"""Device numbers: validation, the device count, the current device, and what a device is."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from . import _fork
from ._backend import cuda as _cuda
from ._errors import call, fail
from ._short import short_repr

_SUCCESS: Final = _cuda.SUCCESS
_MAX_DEVICE: Final = 2**31 - 1  # CUDA's device numbers are C ints

# The device count is fixed for the life of a process (CUDA reads
# CUDA_VISIBLE_DEVICES once), so it is asked once, on first need.
_count: int | None = None
_used = False


def device_index(device_id: object, *, name: str = "device_id") -> int:
    """*device_id* as an int in ``[0, 2**31)``, or ``TypeError``/``ValueError`` naming it."""
    if isinstance(device_id, bool):
        raise TypeError(f"{name} must be an int, not {short_repr(device_id)}")
    try:
        index = operator.index(device_id)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {short_repr(device_id)}") from None
    if not 0 <= index <= _MAX_DEVICE:
        raise ValueError(f"{name} must be in [0, 2**31), not {short_repr(device_id)}")
    return index


def device_or_unknown(device_id: object) -> int:
    """*device_id* as a device number, or -1 ("unknown: ask CUDA when needed")."""
    if device_id == -1 and type(device_id) is int:
        return -1
    try:
        return device_index(device_id)
    except ValueError:
        raise ValueError(
            f"device_id must be in [0, 2**31), or -1 to ask CUDA, not {short_repr(device_id)}"
        ) from None


def device_count() -> int:
    """How many CUDA devices this process sees; ``CudaError`` without a driver."""
    global _count
    if _count is None:
        _count = int(call(_cuda.cudaGetDeviceCount))
    return _count


def note_use() -> None:
    """Remember that CUDA is about to be called (a forked child must then refuse it)."""
    global _used
    _used = True


def cuda_was_used() -> bool:
    """Whether this process has called CUDA through extstream."""
    return _used or _count is not None


def _after_fork_in_child() -> None:
    if cuda_was_used():
        _fork.refuse_cuda()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_device() -> int:
    """The calling thread's current CUDA device.

    With a single device that is always 0, which saves a CUDA call on every
    ``get_current_stream()``.
    """
    if _count == 1 or (_count is None and device_count() == 1):
        return 0
    err, device = _cuda.cudaGetDevice()  # a hot path: call() inlined
    if err is not _SUCCESS:
        fail(err, _cuda.cudaGetDevice)
    return int(device)


def device_or_current(device_id: object) -> int:
    """*device_id* checked as :func:`device_index` does; None: the current device."""
    return current_device() if device_id is None else device_index(device_id)


def create_on(
    device_id: int | None, create: Callable[..., tuple[Any, ...]], *args: Any
) -> tuple[int, int]:
    """``(device, handle)`` from the runtime factory *create* called on *device_id*
    (None: the current device)."""
    device = device_or_current(device_id)
    with on_device(device):
        handle = call(create, *args)
    return device, int(handle)


@contextmanager
def on_device(device_id: int) -> Iterator[None]:
    """Make *device_id* current for the block, then restore the previous device."""
    previous = current_device()
    if previous == device_id:
        yield
        return
    if device_id >= device_count():  # say so, not cudaErrorInvalidDevice (in cudaSetDevice)
        raise ValueError(f"device_id={device_id}, but this process sees {device_count()} device(s)")
    call(_cuda.cudaSetDevice, device_id)
    try:
        yield
    finally:
        _cuda.cudaSetDevice(previous)


def device_name(device_id: int) -> str:
    """The device's name as CUDA reports it (``"?"`` if it cannot)."""
    err, properties = _cuda.cudaGetDeviceProperties(device_id)
    if err is not _SUCCESS:
        return "?"
    return str(properties.name.decode(errors="replace").rstrip("\0"))


def cuda_version(code: int) -> str:
    """CUDA's version code as text: 13000 -> ``"13.0"``."""
    return f"{code // 1000}.{code % 1000 // 10}"


def versions() -> tuple[str, str]:
    """``(driver, runtime)`` CUDA versions as text."""
    driver = call(_cuda.cudaDriverGetVersion)
    runtime = call(_cuda.cudaRuntimeGetVersion)
    return cuda_version(int(driver)), cuda_version(int(runtime))
