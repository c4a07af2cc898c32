"""Everything done to one raw stream or event handle, below the classes that wrap them.

A stream operation here takes ``(ptr, direct, ...)``: *direct* says the handle
was checked and belongs to the current device, so the driver's entry point is
tried first (no cuda.bindings wrapping); the runtime call runs otherwise, and
repeats a direct call that failed, because the runtime sets up the primary
context and reports the runtime's error. Operations without an entry point
always take the runtime path. Special handles (0, 1, 2) on another device are
the caller's to dispatch under :func:`extstream._device.on_device`.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from . import _device, _foreign
from ._backend import cuda as _cuda
from ._errors import call, ready, refuse_unreadable

_NOT_READY_STATUS: Final = _cuda.NOT_READY_STATUS
_CAPTURE_STATUS_NONE: Final = _cuda.CAPTURE_STATUS_NONE
_NOT_TRIED: Final = -1  # no direct call was made: ask the runtime


def check_handle(ptr: int, what: str) -> None:
    """Refuse (``CudaError``) a handle CUDA would crash on, before its first use.

    CUDA dereferences a handle without checking it, so an address that is not
    mapped in this process would kill it with SIGSEGV. Events have no special
    handles.
    """
    _device.note_use()
    if not _cuda.handle_is_valid(ptr) or (ptr <= 2 and what == "event"):
        refuse_unreadable(ptr, what)


def foreign_event(event: object) -> tuple[int, int]:
    """``(checked handle, device or -1)`` of an int event handle or a framework's event.

    A framework's handle came from CUDA and the object keeps it alive, so only
    ints are probed (on every use: nothing says an int still names an event).
    """
    ptr, device = _foreign.event_handle(event)
    if isinstance(event, int):
        check_handle(ptr, "event")
    else:
        _device.note_use()
    return ptr, device


# -- streams --------------------------------------------------------------------


def _answer(status: int, runtime_query: Callable[..., Any], handle_type: Any, ptr: int) -> bool:
    """A query's answer when the direct call did not say done: not ready, or the
    runtime's answer when the direct call failed."""
    if status == _NOT_READY_STATUS:
        return False
    return ready(runtime_query, handle_type(ptr))


def stream_done(ptr: int, direct: bool) -> bool:
    """Whether all work queued on the stream so far has finished."""
    status = _cuda.stream_query(ptr) if direct else _NOT_TRIED
    return status == 0 or _answer(status, _cuda.cudaStreamQuery, _cuda.stream_t, ptr)


def stream_synchronize(ptr: int, direct: bool) -> None:
    """Block (GIL released) until the stream's work so far has finished."""
    if not direct or _cuda.stream_synchronize(ptr):
        call(_cuda.cudaStreamSynchronize, _cuda.stream_t(ptr))


def record(ptr: int, direct: bool, event_ptr: int) -> None:
    """Record the event on the stream."""
    if not direct or _cuda.cuEventRecord(_cuda.CUevent(event_ptr), _cuda.CUstream(ptr))[0] is not (
        _cuda.CU_SUCCESS
    ):
        call(_cuda.cudaEventRecord, _cuda.event_t(event_ptr), _cuda.stream_t(ptr))


def wait_event(ptr: int, direct: bool, event_ptr: int) -> None:
    """Make later work on the stream wait for the event."""
    if (
        not direct
        or _cuda.cuStreamWaitEvent(_cuda.CUstream(ptr), _cuda.CUevent(event_ptr), 0)[0]
        is not _cuda.CU_SUCCESS
    ):
        call(_cuda.cudaStreamWaitEvent, _cuda.stream_t(ptr), _cuda.event_t(event_ptr), 0)


def stream_device(ptr: int, direct: bool) -> int:
    """The stream's device (runtime only; refused while the stream is captured)."""
    return int(call(_cuda.cudaStreamGetDevice, _cuda.stream_t(ptr)))


def stream_attributes(ptr: int, direct: bool) -> tuple[int, int]:
    """``(priority, flags)``: fixed at the stream's creation, so asked once (runtime only)."""
    priority = call(_cuda.cudaStreamGetPriority, _cuda.stream_t(ptr))
    flags = call(_cuda.cudaStreamGetFlags, _cuda.stream_t(ptr))
    return int(priority), int(flags)


class _CaptureStatus(threading.local):
    """Each thread's buffer for the direct capture query: no lock, no allocation per query."""

    def __init__(self) -> None:
        self.status = ctypes.c_int()
        self.address = ctypes.addressof(self.status)


_capture_status = _CaptureStatus()


def is_capturing(ptr: int, direct: bool) -> bool:
    """Whether the stream is being captured into a graph (a query allowed during capture)."""
    if direct:
        buffer = _capture_status
        if not _cuda.stream_is_capturing(ptr, buffer.address):
            return buffer.status.value != _CAPTURE_STATUS_NONE
    status = call(_cuda.cudaStreamIsCapturing, _cuda.stream_t(ptr))
    return int(status) != _CAPTURE_STATUS_NONE


def enqueue_host_function(ptr: int, direct: bool, function: int, user_data: int) -> None:
    """Enqueue the C host function *function* with *user_data* on the stream.

    cuda.bindings' ``cudaLaunchHostFunc`` frees its own wrapper after one call,
    so it serves only host functions that run once (never graph nodes).
    """
    if not direct or _cuda.launch_host_func(ptr, function, user_data):
        call(_cuda.cudaLaunchHostFunc, _cuda.stream_t(ptr), _cuda.host_fn_t(function), user_data)


# -- events ---------------------------------------------------------------------


def event_done(ptr: int) -> bool:
    """Whether the work before the event's last record has finished."""
    status = _cuda.event_query(ptr)
    return status == 0 or _answer(status, _cuda.cudaEventQuery, _cuda.event_t, ptr)


def event_synchronize(ptr: int) -> None:
    """Block (GIL released) until the event has completed."""
    if _cuda.event_synchronize(ptr):
        call(_cuda.cudaEventSynchronize, _cuda.event_t(ptr))


def elapsed_ms(start_ptr: int, end_ptr: int) -> float:
    """Milliseconds between two completed timing events."""
    return float(call(_cuda.cudaEventElapsedTime, _cuda.event_t(start_ptr), _cuda.event_t(end_ptr)))


# -- destroying owned handles -----------------------------------------------------


class Owner(Protocol):
    """An object that owns a handle: ``_alive`` holds it until destroyed."""

    _alive: list[int]

    def _destroy(self, ptr: int) -> None: ...


def destroy_once(owner: Owner) -> None:
    """Destroy the handle *owner* holds, unless that was done.

    ``list.pop`` is atomic, so of two threads closing at once only one destroys,
    and no lock is held that a finalizer running meanwhile could wait for.
    """
    try:
        ptr = owner._alive.pop()
    except IndexError:
        return
    owner._destroy(ptr)


def finalize(owner: Owner, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
    """``__del__``: destroy the handle if still held; never raise, never print.

    At interpreter exit the process's CUDA context goes with it, and threads
    frozen by the exit may hold what a destroy would wait for, so nothing is
    destroyed then. An object whose ``__init__`` never ran holds nothing.
    """
    try:
        if getattr(owner, "_alive", None) and not _finalizing():
            destroy_once(owner)
    except Exception:  # noqa: S110 - at GC or shutdown no one can be told
        pass
