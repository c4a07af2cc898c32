"""Everything done to one raw stream or event handle, below the classes that wrap them.

A stream operation here takes ``(ptr, direct, ...)``: *direct* says the handle
was checked and names one stream whatever device is current (any handle above
2, or any handle with one device), and the driver initialised, so the driver
is called (no cuda.bindings wrapping where an entry point exists) and its
status is the answer. A special handle used where the thread has no current
context yet gets the current device's primary context made current first, as
the runtime would. The runtime call runs otherwise, and gives the runtime's
reason where no driver could be loaded. Special handles (0, 1, 2) with several
devices are the caller's to dispatch under :func:`extstream._device.on_device`.
A host function is always enqueued through the driver's entry point.
"""

from __future__ import annotations

import contextlib
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
_INVALID_CONTEXT: Final = _cuda.ERROR_INVALID_CONTEXT
_NOT_TRIED: Final = -1  # no direct call was made: ask the runtime

# The threads running Python for CUDA right now (a held callback, a graph node:
# CUDA's host-function thread), where no CUDA call may be made and every
# blocking wait would wait for itself. Empty almost always, so checking it costs
# next to nothing.
callback_threads: set[int] = set()


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


def _context_made_current(status: int, ptr: int) -> bool:
    """Whether a direct call on *ptr* failed only because no context is current to this
    thread (a special handle in a thread that has made no CUDA call yet), and one now
    is, as the runtime would make it: then the call is worth repeating."""
    if status != _INVALID_CONTEXT or ptr > 2 or not _cuda.direct_driver_calls:
        return False
    _device.make_context_current()
    return True


def _answer(
    status: int, name: str, runtime_query: Callable[..., Any], handle_type: Any, ptr: int
) -> bool:
    """A query's answer when the direct call did not say done: not ready, the driver's
    error, or the runtime's answer where no direct call was made."""
    if status == _NOT_READY_STATUS:
        return False
    if status != _NOT_TRIED:
        raise CudaError(status, name)
    return ready(runtime_query, handle_type(ptr))


def stream_done(ptr: int, direct: bool) -> bool:
    """Whether all work queued on the stream so far has finished."""
    return stream_answer(ptr, _cuda.stream_query(ptr) if direct else _NOT_TRIED)


def stream_answer(ptr: int, status: int) -> bool:
    """:func:`stream_done` given the status of a first direct query (``_NOT_TRIED``:
    none was made)."""
    if status and _context_made_current(status, ptr):
        status = _cuda.stream_query(ptr)
    return status == 0 or _answer(
        status, "cuStreamQuery", _cuda.cudaStreamQuery, _cuda.stream_t, ptr
    )


def _call_direct(function: Callable[..., tuple[Any, ...]], ptr: int, *args: Any) -> None:
    """The driver's *function* on stream *ptr*, once more after making a context
    current where that was all it lacked; ``CudaError`` with the driver's status."""
    status = function(*args)[0]
    if status is not _cuda.CU_SUCCESS and _context_made_current(int(status), ptr):
        status = function(*args)[0]
    if status is not _cuda.CU_SUCCESS:
        raise CudaError(int(status), function.__name__)


def record(ptr: int, direct: bool, event_ptr: int) -> None:
    """Record the event on the stream."""
    if direct:
        _call_direct(_cuda.cuEventRecord, ptr, _cuda.CUevent(event_ptr), _cuda.CUstream(ptr))
    else:
        call(_cuda.cudaEventRecord, _cuda.event_t(event_ptr), _cuda.stream_t(ptr))


def wait_event(ptr: int, direct: bool, event_ptr: int) -> None:
    """Make later work on the stream wait for the event."""
    if direct:
        _call_direct(_cuda.cuStreamWaitEvent, ptr, _cuda.CUstream(ptr), _cuda.CUevent(event_ptr), 0)
    else:
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


def capture_status(ptr: int, direct: bool) -> int:
    """The stream's ``cudaStreamCaptureStatus``: 0 none, 1 active, 2 invalidated (a
    query allowed during capture)."""
    if direct:
        buffer = _capture_status
        status = _cuda.stream_is_capturing(ptr, buffer.address)
        if status and _context_made_current(status, ptr):
            status = _cuda.stream_is_capturing(ptr, buffer.address)
        if not status:
            return buffer.status.value
        raise CudaError(status, "cuStreamIsCapturing")
    return int(call(_cuda.cudaStreamIsCapturing, _cuda.stream_t(ptr)))


def is_capturing(ptr: int, direct: bool) -> bool:
    """Whether the stream is being captured into a graph (also when the capture was
    invalidated and not ended yet)."""
    return capture_status(ptr, direct) != _CAPTURE_STATUS_NONE


def enqueue_host_function(ptr: int, direct: bool, function: int, user_data: int) -> None:
    """Enqueue the C host function *function* with *user_data* on the stream.

    Always through the driver's ``cuLaunchHostFunc`` (``direct`` only says whether
    the handle names one stream whatever device is current): cuda.bindings'
    ``cudaLaunchHostFunc`` wraps the function in a trampoline that takes the GIL
    on CUDA's thread, which a ``sem_post`` host function must never need, and
    frees itself after one call, which a graph node outlives.
    """
    status = _cuda.launch_host_func(ptr, function, user_data)
    if status and _context_made_current(status, ptr):
        status = _cuda.launch_host_func(ptr, function, user_data)
    if status:
        raise launch_error(ptr, status)


def launch_error(ptr: int, status: int) -> CudaError:
    """The error for a ``cuLaunchHostFunc`` that returned *status*: CUDA's own, or,
    where the driver's entry points could not be had, the runtime's reason."""
    if not _cuda.direct_driver_calls:
        ready(_cuda.cudaStreamQuery, _cuda.stream_t(ptr))  # no driver: raises why
        return CudaError(
            _cuda.ERROR_NOT_SUPPORTED,
            "cuLaunchHostFunc",
            explanation="the driver gave no cuLaunchHostFunc entry point",
        )
    return CudaError(status, "cuLaunchHostFunc")


# -- events ---------------------------------------------------------------------


def event_done(ptr: int) -> bool:
    """Whether the work before the event's last record has finished."""
    # Its first call binds the entry points; where there is no driver it answers -1,
    # which is _NOT_TRIED: the runtime then says why.
    return event_answer(ptr, _cuda.event_query(ptr))


def event_answer(ptr: int, status: int) -> bool:
    """:func:`event_done` given the status of a first direct query."""
    return status == 0 or _answer(status, "cuEventQuery", _cuda.cudaEventQuery, _cuda.event_t, ptr)


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
    """``destroy(ptr)``, or soon after on the reaper thread where it would run on
    CUDA's host-function thread (a collection inside a callback).

    There CUDA forbids every call, and a driver may refuse it (800) or wait for the
    host function that is making it: extstream's own callbacks never try, and a
    refusal from inside anyone else's host function is deferred too.
    """
    if callback_threads and threading.get_ident() in callback_threads:
        on_reaper(destroy, ptr)
        return
    try:
        destroy(ptr)
    except CudaError as exc:
        if exc.status != _NOT_PERMITTED:
            raise
        on_reaper(destroy, ptr)


def on_reaper(function: Callable[[int], None], ptr: int) -> None:
    """Have the reaper thread call ``function(ptr)`` soon (a deferred destroy; at exit,
    where no thread can be started any more, a wait with a time limit)."""
    _deferred.append((function, ptr))  # atomic: no lock in a finalizer
    if _reaper_semaphore:
        _native.post(_reaper_semaphore)


def destroy_stream(ptr: int) -> None:
    """Destroy an owned stream (CUDA frees it once its queued work is done), through
    the driver that made it where it initialised."""
    if _cuda.direct_driver_calls:
        call(_cuda.cuStreamDestroy, _cuda.CUstream(ptr))
    else:
        call(_cuda.cudaStreamDestroy, _cuda.stream_t(ptr))


def destroy_event(ptr: int) -> None:
    """Destroy an owned event (CUDA frees it once complete), as :func:`destroy_stream`."""
    if _cuda.direct_driver_calls:
        call(_cuda.cuEventDestroy, _cuda.CUevent(ptr))
    else:
        call(_cuda.cudaEventDestroy, _cuda.event_t(ptr))


def relax_capture_mode() -> None:
    """Put the calling thread, one of extstream's own, in relaxed capture mode.

    In CUDA's default (global) mode, a "potentially unsafe" call from any thread
    (a query, a destroy) is refused while another thread captures a graph in
    global mode, and the refusal invalidates that capture: extstream's threads
    must never break a capture of the user's. A thread without a usable driver
    has nothing to relax.
    """
    if _cuda.load_driver_entry_points():
        with contextlib.suppress(CudaError):
            exchange_capture_mode(_cuda.CAPTURE_MODE_RELAXED)


def exchange_capture_mode(mode: Any) -> Any:
    """Set this thread's stream capture mode; the previous one."""
    return call(_cuda.cuThreadExchangeStreamCaptureMode, mode)


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
    relax_capture_mode()
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
    callback_threads.clear()
    _reaper_semaphore = 0
    _reaper_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
