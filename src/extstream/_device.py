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
_CU_SUCCESS: Final = _cuda.CU_SUCCESS
_INVALID_CONTEXT: Final = _cuda.ERROR_INVALID_CONTEXT
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
    """How many CUDA devices this process sees; ``CudaError`` without a driver.

    Asked of the driver once it initialised, else of the runtime, which says why not.
    """
    global _count
    if _count is None:
        driver = _cuda.load_driver_entry_points()
        _count = int(call(_cuda.cuDeviceGetCount if driver else _cuda.cudaGetDeviceCount))
    return _count


# Each device's primary context, retained once (as the runtime does) for the
# process's life.
_primary: dict[int, Any] = {}


def check_visible(device_id: int) -> None:
    """``ValueError`` naming *device_id* and the count where this process has no such
    device (rather than CUDA's cudaErrorInvalidDevice from a call the user never made)."""
    if device_id >= device_count():
        raise ValueError(f"device_id={device_id}, but this process sees {device_count()} device(s)")


def primary_context(device_id: int) -> Any:
    """*device_id*'s primary context (the runtime's), from the driver."""
    context = _primary.get(device_id)
    if context is None:
        check_visible(device_id)
        context = _primary[device_id] = call(_cuda.cuDevicePrimaryCtxRetain, device_id)
    return context


@contextmanager
def _in_primary_context(device_id: int) -> Iterator[None]:
    """*device_id*'s primary context pushed on this thread for the block."""
    call(_cuda.cuCtxPushCurrent, primary_context(device_id))
    try:
        yield
    finally:
        _cuda.cuCtxPopCurrent()


def synchronize(device_id: int) -> None:
    """Wait until all work queued on *device_id* has finished (``cuCtxSynchronize``)."""
    with _in_primary_context(device_id):
        call(_cuda.cuCtxSynchronize)


def make_context_current() -> None:
    """Make the current device's primary context current to this thread, as the
    runtime does at its first call there: a thread that made no CUDA call has no
    current context, and the driver refuses it the special handles (0, 1, 2)."""
    call(_cuda.cuCtxSetCurrent, primary_context(current_device()))


def note_use() -> None:
    """Remember that CUDA is about to be called (a forked child must then refuse it)."""
    global _used
    _used = True


def cuda_was_used() -> bool:
    """Whether this process has called CUDA through extstream."""
    return _used or _count is not None


def _after_fork_in_child() -> None:
    _primary.clear()
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
    if _cuda.direct_driver_calls:  # the current context's device, as the runtime's
        err, device = _cuda.cuCtxGetDevice()
        if err is _CU_SUCCESS:
            return int(device)
        if int(err) == _INVALID_CONTEXT:  # none current yet: the runtime's default
            return 0
        fail(err, _cuda.cuCtxGetDevice)
    err, device = _cuda.cudaGetDevice()  # a hot path: call() inlined
    if err is not _SUCCESS:
        fail(err, _cuda.cudaGetDevice)
    return int(device)


def device_or_current(device_id: object) -> int:
    """*device_id* checked as :func:`device_index` does; None: the current device."""
    return current_device() if device_id is None else device_index(device_id)


def create_on(
    device_id: int | None,
    create: Callable[..., tuple[Any, ...]],
    *args: Any,
    driver_create: Callable[..., tuple[Any, ...]] | None = None,
) -> tuple[int, int]:
    """``(device, handle)`` from a factory called on *device_id* (None: the current
    device): the driver's *driver_create* in the device's primary context once the
    driver initialised, else the runtime's *create*, which says why not."""
    device = device_or_current(device_id)
    if driver_create is not None and _cuda.load_driver_entry_points():
        with _in_primary_context(device):
            handle = call(driver_create, *args)
        return device, int(handle)
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
    check_visible(device_id)
    if not _cuda.direct_driver_calls:
        call(_cuda.cudaSetDevice, device_id)
        try:
            yield
        finally:
            _cuda.cudaSetDevice(previous)
        return
    # What cudaSetDevice does: the device's primary context becomes current.
    context = call(_cuda.cuCtxGetCurrent)
    call(_cuda.cuCtxSetCurrent, primary_context(device_id))
    try:
        yield
    finally:
        _cuda.cuCtxSetCurrent(context)


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
