"""Event: a CUDA event extstream owns, or a foreign one it wraps."""

from __future__ import annotations

import collections
import contextlib
import html
import sys
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NoReturn

from . import _current, _device, _interop, _stream, _wait
from ._backend import cuda as _cuda
from ._errors import CudaError, raise_cuda_error
from ._interop import MAX_HANDLE

if TYPE_CHECKING:
    from ._stream import ExternalStream

_SUCCESS = _cuda.SUCCESS
_NOT_READY = _cuda.NOT_READY
_NOT_READY_STATUS = 600  # the same number in CUresult and cudaError_t


class Event:
    """A CUDA event.

    ``Event(timing=False, blocking=False, interprocess=False, device_id=None)``
    creates one on *device_id* (None: the current device) that this object owns
    and destroys on :meth:`close`, at the end of a ``with`` block, or at garbage
    collection. :meth:`from_handle` wraps a foreign event without owning it.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_device",
        "_handle",
        "_owned",
        "_owner",
        "_ptr",
        "_timing",
    )

    _ptr: int
    _device: int
    _handle: Any  # a CUevent once checked; None before, or when closed
    _owner: object  # the framework object that owns the event, kept alive; None for a handle
    _owned: bool
    _timing: bool | None  # None: unknown (a foreign event)
    _closed: bool

    _close_lock = threading.Lock()

    def __init__(
        self,
        *,
        timing: bool = False,
        blocking: bool = False,
        interprocess: bool = False,
        device_id: int | None = None,
    ) -> None:
        self._closed = True  # until created, so __del__ has nothing to destroy
        self._owned = True
        self._owner = None
        options = {"timing": timing, "blocking": blocking, "interprocess": interprocess}
        for name, value in options.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        if timing and interprocess:
            raise ValueError("an interprocess event cannot record timing (CUDA requires both off)")
        flags = (
            (0 if timing else _cuda.EVENT_DISABLE_TIMING)
            | (_cuda.EVENT_BLOCKING_SYNC if blocking else 0)
            | (_cuda.EVENT_INTERPROCESS if interprocess else 0)
        )
        device, handle = _device.create_on(
            device_id, _cuda.cudaEventCreateWithFlags, "cudaEventCreateWithFlags", flags
        )
        self._ptr = int(handle)
        self._handle = _cuda.CUevent(self._ptr)
        self._device = device
        self._timing = timing
        self._closed = False

    @classmethod
    def from_handle(cls, ptr: int, device_id: int = -1) -> Event:
        """Wrap the foreign event handle *ptr* without owning it.

        CUDA cannot tell an event's device; *device_id* -1 means unknown, and
        :meth:`record` without a stream then uses the current device.
        """
        if isinstance(ptr, bool) or not isinstance(ptr, int):
            raise TypeError(f"event handle must be an int, not {ptr!r}")
        if not 0 < ptr <= MAX_HANDLE:
            raise ValueError(f"event handle {ptr!r} is out of range (0, 2**64)")
        if device_id != -1 or type(device_id) is not int:
            device_id = _device.device_index(device_id)
        event = cls.__new__(cls)
        event._ptr = ptr
        event._device = device_id
        event._handle = None
        event._owned = False
        event._owner = None
        event._timing = None
        event._closed = False
        return event

    @property
    def ptr(self) -> int:
        """The raw ``cudaEvent_t`` handle, an int."""
        return self._ptr

    @property
    def device_id(self) -> int:
        """The event's device; -1 for a foreign event whose device was not given."""
        return self._device

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _ready_ptr(self) -> int:
        """The handle, checked once, as an int."""
        if self._handle is not None:
            return self._ptr
        if self._closed:
            raise ValueError(f"operation on closed event {self._ptr:#x}")
        _device.note_use()
        if self._ptr <= 2 or not _cuda.handle_is_valid(self._ptr):
            raise CudaError(
                _cuda.ERROR_INVALID_RESOURCE_HANDLE,
                None,
                None,
                f"{self._ptr:#x} is not a readable address in this process, so it is not a "
                "CUDA event handle",
            )
        self._handle = _cuda.CUevent(self._ptr)
        return self._ptr

    def record(self, stream: object = None) -> None:
        """Record the event on *stream* (None: the current stream of its device)."""
        if stream is None:
            target = _current.get_current_stream(None if self._device < 0 else self._device)
        else:
            target = _interop.as_stream(stream)
        target.record(self)

    @property
    def done(self) -> bool:
        """True when the work before the event's last record has finished."""
        ptr = self._ready_ptr()
        status = _cuda.event_query(ptr)
        if status == 0:
            return True
        if status == _NOT_READY_STATUS:
            return False
        err = _cuda.cudaEventQuery(_cuda.event_t(ptr))[0]
        if err is _SUCCESS:
            return True
        if err is _NOT_READY:
            return False
        raise_cuda_error(err, "cudaEventQuery")

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait for the event; with *timeout* (s), ``TimeoutError`` when it passes.

        In the main thread, and with a timeout, the wait answers Ctrl-C at once.
        """
        _wait.raise_if_holding_stream("Event.synchronize()")
        if timeout is not None:
            _wait.check_timeout(timeout)
        if timeout is None and threading.get_ident() != _wait.MAIN_THREAD:
            ptr = self._ready_ptr()
            if _cuda.event_synchronize(ptr):
                err = _cuda.cudaEventSynchronize(_cuda.event_t(ptr))[0]
                if err is not _SUCCESS:
                    raise_cuda_error(err, "cudaEventSynchronize")
        elif not self.done and not _wait.spin_until(lambda: self.done, timeout):
            waiter = _borrow_waiter(self._device)
            waiter.wait_event(self)
            waiter.synchronize(timeout)
            _idle_waiters[waiter.device_id].append(waiter)

    def __await__(self) -> Generator[Any, None, None]:
        """``await event``: wait for it without blocking the event loop."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> None:
        if not self.done:
            waiter = _borrow_waiter(self._device)
            waiter.wait_event(self)
            await waiter
            _idle_waiters[waiter.device_id].append(waiter)

    def elapsed_time(self, end: Event) -> float:
        """Milliseconds from this event to *end*; waits for *end* to complete.

        Both events need ``timing=True``.
        """
        if not isinstance(end, Event):
            raise TypeError(f"end must be an extstream.Event, not {end!r}")
        for event in (self, end):
            if event._timing is False:
                raise ValueError(
                    f"elapsed_time needs events created with timing=True; {event!r} has timing off"
                )
        end.synchronize()
        err, ms = _cuda.cudaEventElapsedTime(
            _cuda.event_t(self._ready_ptr()), _cuda.event_t(end._ready_ptr())
        )
        if err is not _SUCCESS:
            raise_cuda_error(err, "cudaEventElapsedTime")
        return float(ms)

    def close(self) -> None:
        """Destroy an owned event (a foreign one is only let go). Later calls do nothing."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._handle = None
        if self._owned:
            err = _cuda.cudaEventDestroy(_cuda.event_t(self._ptr))[0]
            if err is not _SUCCESS:
                raise_cuda_error(err, "cudaEventDestroy")

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit the process's CUDA context goes with it, and
        # threads frozen by the exit may hold what a destroy would wait for.
        if not sys.is_finalizing() and self._owned and not self._closed:
            with contextlib.suppress(Exception):  # at GC or shutdown no one can be told
                self.close()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._ptr == other._ptr

    def __hash__(self) -> int:
        return hash(self._ptr)

    def __repr__(self) -> str:
        device = "unknown device" if self._device < 0 else f"device {self._device}"
        timing = {True: "timing", False: "no timing", None: "foreign"}[self._timing]
        state = ", closed" if self._closed else ""
        return f"<extstream.Event {self._ptr:#x} on {device}, {timing}{state}>"

    def _repr_html_(self) -> str:
        """Jupyter: the event, and whether the work before its last record has finished."""
        try:
            state = "complete" if self.done else "pending"
        except Exception as exc:  # a display must not raise
            state = f"unusable ({type(exc).__name__}: {exc})"
        return f"<code>{html.escape(repr(self))}</code>: {html.escape(state)}"

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"cannot pickle {self!r}: an event handle means nothing in another process")


# Streams that only wait for events, so that a wait on an event has a stream to
# put its host function on. Each wait borrows one of its own: waits on a shared
# stream would queue behind each other.
_idle_waiters: collections.defaultdict[int, list[ExternalStream]] = collections.defaultdict(list)


def _borrow_waiter(device_id: int) -> ExternalStream:
    device = _device.current_device() if device_id < 0 else device_id
    try:
        return _idle_waiters[device].pop()
    except IndexError:
        return _stream.Stream(device)


def as_event(obj: object, stream: ExternalStream | None = None) -> Event:
    """*obj* as an :class:`Event`; None makes a new one on *stream*'s device."""
    if isinstance(obj, Event):
        return obj
    if obj is None:
        if stream is None:
            raise TypeError("an event is required, not None")
        return Event(device_id=stream.device_id)
    ptr, device_id = _interop.event_handle(obj)
    event = Event.from_handle(ptr, device_id)
    event._owner = obj  # frameworks destroy their event with the object: keep it alive
    return event
