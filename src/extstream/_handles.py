"""Everything done to one raw stream or event handle, below the classes that wrap them.

A stream operation here takes ``(ptr, direct, ...)``: *direct* says the handle
was checked and names one stream whatever device is current (any handle above
2, or any handle with one device), so the driver's entry point is tried first
(no cuda.bindings wrapping); the runtime call runs otherwise, and repeats a
direct call that failed, because the runtime sets up the primary context and
reports the runtime's error. Operations without an entry point always take the
runtime path. Special handles (0, 1, 2) with several devices are the caller's
to dispatch under :func:`extstream._device.on_device`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from . import _device, _foreign, _native
from ._backend import cuda as _cuda
from ._errors import CudaError, call, ready, refuse_unreadable, report_unraisable

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


def record(ptr: int, direct: bool, event_ptr: int) -> None:
    """Record the event on the stream."""
    if (
        not direct
        or _cuda.cuEventRecord(_cuda.CUevent(event_ptr), _cuda.CUstream(ptr))[0]
        is not _cuda.CU_SUCCESS
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
    """The stream's device, from its context.

    ``cuStreamGetCtx`` and ``cuCtxGetDevice`` under that context work during a
    capture and on every 12.x driver (as cuda.core and CCCL ask);
    ``cudaStreamGetDevice`` (CUDA 12.8+) invalidates a capture, so it is only the
    fallback, where the driver cannot answer.
    """
    if direct and _cuda.load_driver_entry_points():  # the driver is initialised
        err, context = _cuda.cuStreamGetCtx(_cuda.CUstream(ptr))
        if err is _cuda.CU_SUCCESS and _cuda.cuCtxPushCurrent(context)[0] is _cuda.CU_SUCCESS:
            try:
                err, device = _cuda.cuCtxGetDevice()
            finally:
                _cuda.cuCtxPopCurrent()
            if err is _cuda.CU_SUCCESS:
                return int(device)
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


def elapsed_ms(start_ptr: int, end_ptr: int) -> float:
    """Milliseconds between two completed timing events."""
    return float(call(_cuda.cudaEventElapsedTime, _cuda.event_t(start_ptr), _cuda.event_t(end_ptr)))


# -- destroying owned handles -----------------------------------------------------

_NOT_PERMITTED: Final = 800  # cudaErrorNotPermitted: what CUDA answers a call from a host function
# Destroys that CUDA refused where they ran (a collection on CUDA's host-function
# thread), done soon after by the reaper thread.
_deferred: list[tuple[Callable[[int], None], int]] = []
_reaper_semaphore = 0  # the reaper's wake-up; 0 until it runs
_reaper_lock = threading.Lock()


class Owner(Protocol):
    """An object that owns a handle: ``_alive`` holds it until destroyed."""

    _alive: list[int]

    def _destroy(self, ptr: int) -> None: ...


def destroy_once(owner: Owner) -> None:
    """Destroy the handle *owner* holds, unless that was done.

    ``list.pop`` is atomic, so of two threads closing at once only one destroys,
    and no lock is held that a finalizer running meanwhile could wait for. A
    destroy CUDA refuses because it ran inside a host function is deferred to
    the reaper thread instead of leaking the handle.
    """
    try:
        ptr = owner._alive.pop()
    except IndexError:
        return
    destroy_or_defer(owner._destroy, ptr)


def destroy_or_defer(destroy: Callable[[int], None], ptr: int) -> None:
    """``destroy(ptr)``, or soon after on the reaper thread where CUDA refused it
    because it ran inside a host function (a collection on CUDA's thread)."""
    try:
        destroy(ptr)
    except CudaError as exc:
        if exc.status != _NOT_PERMITTED:
            raise
        _deferred.append((destroy, ptr))  # atomic: no lock in a finalizer
        if _reaper_semaphore:
            _native.post(_reaper_semaphore)


def destroy_stream(ptr: int) -> None:
    """Destroy an owned stream (CUDA frees it once its queued work is done)."""
    call(_cuda.cudaStreamDestroy, _cuda.stream_t(ptr))


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


def start_reaper() -> None:
    """Start the thread that does the deferred destroys (once).

    Called by ``_callbacks`` before Python can first run on CUDA's thread, from
    a thread that may start threads: a finalizer on CUDA's thread must not.
    """
    global _reaper_semaphore
    if _reaper_semaphore:
        return
    with _reaper_lock:
        if not _reaper_semaphore:
            semaphore = _native.new_semaphore()
            threading.Thread(
                target=_reap_forever, args=(semaphore,), name="extstream-reaper", daemon=True
            ).start()
            _reaper_semaphore = semaphore


def _reap_forever(semaphore: int) -> None:
    while True:
        _native.take(semaphore)
        _reap()


def _reap() -> None:
    """Do the destroys deferred so far (from a thread that may call CUDA)."""
    while _deferred:
        destroy, ptr = _deferred.pop()
        try:
            destroy(ptr)
        except Exception as exc:  # the owner is gone: no one else can be told
            report_unraisable(exc, f"Exception ignored destroying CUDA handle {ptr:#x}")


def _after_fork_in_child() -> None:
    # The parent's handles and reaper are not this process's.
    global _reaper_semaphore, _reaper_lock
    _deferred.clear()
    _reaper_semaphore = 0
    _reaper_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
