"""Streams and events: ``ExternalStream`` (a stream someone else owns), ``Stream`` (one
extstream owns), ``Event``, and ``get_current_stream``.

The three classes need each other by their API (``Stream.record()`` makes
Events, ``Event.record(stream)`` takes streams), so they share this module, as
CuPy's ``stream.pyx`` does. What is done to a raw handle lives in ``_handles``,
waiting in ``_wait``, host callbacks in ``_callbacks``, the current-stream
variables in ``_current``.
"""

from __future__ import annotations

import contextlib
import functools
import html
import os
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any, Final, NoReturn, TypeVar

from . import _callbacks, _config, _current, _device, _foreign, _handles, _wait
from ._backend import cuda as _cuda
from ._errors import call
from ._foreign import MAX_HANDLE
from ._public import public
from ._short import short_repr

_S = TypeVar("_S", bound="ExternalStream")
_R = TypeVar("_R")

_SPECIAL_KINDS: Final = {0: "legacy default", 1: "legacy", 2: "per-thread default"}
_CU_SUCCESS: Final = _cuda.CU_SUCCESS
_NOT_READY_STATUS: Final = _cuda.NOT_READY_STATUS
_callback_threads: Final = _handles.callback_threads  # non-empty inside held callbacks
_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {short_repr(value)}")


@public
@functools.total_ordering
class ExternalStream:
    """A CUDA stream that something else created and owns.

    ``ptr`` is an int handle in ``[0, 2**64)`` (0: legacy default stream, 1:
    ``cudaStreamLegacy``, 2: ``cudaStreamPerThread``), an object with
    ``__cuda_stream__()``, or a torch / CuPy / numba / cuda.core stream.
    ``device_id=-1`` asks CUDA for the stream's device once, when first needed
    (for the special handles 0/1/2: the current device, now). A given device id
    is trusted and costs no CUDA call, unless debug checks are on.

    extstream never creates or destroys the underlying stream. A framework
    stream object given is kept alive by the wrapper (CuPy and cuda.core destroy
    the stream with the object); for a bare int handle, its owner must keep the
    stream alive while the wrapper is used. Streams compare and hash by handle
    (and, for the special handles, device) without calling CUDA.
    """

    __slots__ = ("__weakref__", "_attributes", "_device", "_handle", "_owner", "_ptr", "_var")

    # The lazy fields (_device, _handle, _var, _attributes) need no lock, also
    # without a GIL: threads that race compute the same value and the last write
    # wins (_handle: a CUstream of the same handle; _var: one per device, made by
    # an atomic setdefault).
    _ptr: int
    _device: int  # -1 until asked
    _handle: Any  # a CUstream once checked and usable directly; None before, or when closed
    _owner: object  # the framework object that owns the stream, kept alive; None for a handle
    _var: _current.Variable | None  # its device's current-stream variable
    _attributes: tuple[int, int] | None  # (priority, flags), fixed at creation

    def __init__(self, ptr: object, device_id: int = -1) -> None:
        if type(ptr) is int:
            if not 0 <= ptr <= MAX_HANDLE:
                raise ValueError(f"stream handle {short_repr(ptr)} is out of range [0, 2**64)")
            handle, owner = ptr, None
        else:
            # The framework object owns the stream: CuPy and cuda.core destroy it
            # with the object, so the wrapper keeps the object alive.
            owner = ptr
            if isinstance(ptr, ExternalStream):
                if isinstance(ptr, Stream) and ptr.closed:
                    raise ValueError(f"cannot wrap {ptr!r}: it is closed")
                handle, hint = ptr._ptr, ptr._device
            else:
                handle, hint = _foreign.stream_handle(ptr)
            if device_id == -1:
                device_id = hint
        if type(device_id) is not int or not -1 <= device_id <= _INT_MAX:
            device_id = _device.device_or_unknown(device_id)
        if handle <= 2 and device_id == -1:
            device_id = _device.current_device()
        self._set(handle, device_id, None, owner)
        if device_id >= 0 and _config.checks and handle > 2:
            self._check_device(device_id)

    def _set(self, ptr: int, device: int, handle: Any, owner: object) -> None:
        self._ptr = ptr
        self._device = device
        self._handle = handle
        self._owner = owner
        self._var = None
        self._attributes = None

    # -- identity -------------------------------------------------------------

    @property
    def ptr(self) -> int:
        """The raw handle, an int."""
        return self._ptr

    @property
    def device_id(self) -> int:
        """The device the stream belongs to (asked from CUDA once if not given)."""
        device = self._device
        if device < 0:
            device = self._device = self._call(_handles.stream_device)
        return device

    @property
    def kind(self) -> str:
        """``"legacy default"``, ``"legacy"``, ``"per-thread default"`` or ``"ordinary"``."""
        return _SPECIAL_KINDS.get(self._ptr, "ordinary")

    def __cuda_stream__(self) -> tuple[int, int]:
        """The CUDA stream protocol: ``(0, handle)``."""
        return (0, self._ptr)

    def _check_device(self, device_id: int) -> None:
        # Asking a stream that is being captured for its device breaks the capture
        # (cudaErrorStreamCaptureUnsupported): then the given id is trusted.
        if self._call(_handles.is_capturing):
            return
        actual = self._call(_handles.stream_device)
        if actual != device_id:
            raise ValueError(
                f"stream {self._ptr:#x} belongs to device {actual}, not device_id={device_id}"
            )

    def _prepare(self) -> bool:
        """Check the handle; whether calls may then use it directly (``_handle`` set),
        which also needs the driver's entry points (else the runtime's ``CudaError``).

        Special handles mean "of the current device", so with several devices
        they keep ``_handle`` None and every call is dispatched to their device.
        """
        ptr = self._ptr
        _handles.check_handle(ptr, "stream")
        one_stream = ptr > 2 or _device.device_count() == 1
        if one_stream and _cuda.load_driver_entry_points():  # else the runtime's CudaError
            self._handle = _cuda.CUstream(ptr)
            return True
        return False

    def _call(self, op: Callable[..., _R], *args: Any) -> _R:
        """``op(ptr, direct, *args)``, an operation of ``_handles``, on the right device."""
        if self._handle is not None or self._prepare():
            return op(self._ptr, True, *args)
        with _device.on_device(self._device):
            return op(self._ptr, False, *args)

    # -- state and waiting ----------------------------------------------------

    @property
    def done(self) -> bool:
        """True when all work queued so far has finished (``cudaStreamQuery``)."""
        if self._handle is not None:  # the direct path of _handles.stream_done, inlined
            status = _cuda.stream_query(self._ptr)
            if status == 0:
                return True
            if status == _NOT_READY_STATUS:
                return False
            return _handles.stream_answer(self._ptr, status)
        return self._call(_handles.stream_done)

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait until all work queued so far has finished.

        With *timeout* (seconds), raise ``TimeoutError`` when it passes. The wait
        answers Ctrl-C at once and raises a kernel fault within 50 ms; on an idle
        stream it costs one query.
        """
        if (
            timeout is None
            and self._handle is not None
            and not _callback_threads
            and _cuda.stream_query(self._ptr) == 0  # idle: the one query, inlined
        ):
            return
        _wait.block(self, timeout, "synchronize()")

    def __await__(self) -> Generator[Any, None, None]:
        """``await stream``: wait for the work queued so far without blocking the event loop."""
        return _wait.until_done(self).__await__()

    def _launch_after(self, launch: _wait.Launch) -> None:
        self._call(launch)

    @property
    def priority(self) -> int:
        """The stream's priority (lower numbers run first)."""
        return self._static_attributes()[0]

    @property
    def is_nonblocking(self) -> bool:
        """Whether the stream does not synchronize with the legacy default stream."""
        return bool(self._static_attributes()[1] & _cuda.STREAM_NON_BLOCKING)

    def _static_attributes(self) -> tuple[int, int]:
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = self._call(_handles.stream_attributes)
        return attributes

    @property
    def is_capturing(self) -> bool:
        """Whether the stream is being captured into a CUDA graph."""
        return self._call(_handles.is_capturing)

    @staticmethod
    def priority_range(device_id: int | None = None) -> tuple[int, int]:
        """``(least, greatest)`` stream priority of *device_id* (None: the current device);
        lower numbers run first, as in torch's ``Stream.priority_range()``."""
        device = _device.device_or_current(device_id)
        with _device.on_device(device):
            least, greatest = call(_cuda.cudaDeviceGetStreamPriorityRange)
        return int(least), int(greatest)

    # -- ordering -------------------------------------------------------------

    def record(self, event: object = None) -> Event:
        """Record *event* (a new timing-disabled :class:`Event` when None) here and return it.

        *event*: an :class:`Event`, a torch / CuPy / cuda.core event, or an int
        event handle (returned wrapped in an :class:`Event`).
        """
        if type(event) is Event:
            event_handle, handle = event._handle, self._handle
            if (
                event_handle is not None
                and handle is not None
                and _cuda.cuEventRecord(event_handle, handle)[0] is _CU_SUCCESS
            ):
                return event
        else:
            event = as_event(event, self)
        self._call(_handles.record, event._prepare())
        return event

    def wait_event(self, event: object) -> None:
        """Make later work on this stream wait until *event* has completed.

        *event*: an :class:`Event`, a torch / CuPy / cuda.core event, or an int
        event handle.
        """
        if type(event) is Event:
            event_handle, handle = event._handle, self._handle
            if (
                event_handle is not None
                and handle is not None
                and _cuda.cuStreamWaitEvent(handle, event_handle, 0)[0] is _CU_SUCCESS
            ):
                return
        ptr = event._prepare() if isinstance(event, Event) else _handles.foreign_event(event)[0]
        self._call(_handles.wait_event, ptr)

    def wait(self, other: object) -> None:
        """Make later work here wait for *other*: a stream's work queued so far, or an event.

        Streams are anything :func:`as_stream` takes, plain ints included; pass an
        int event handle to :meth:`wait_event` instead.
        """
        if isinstance(other, Event) or _foreign.is_event(other):
            self.wait_event(other)
            return
        stream = as_stream(other)
        device = stream.device_id
        markers = _markers.by_device
        marker = markers.get(device)
        if marker is None:
            marker = markers[device] = Event(device_id=device)
        # One event per thread and device, recorded anew each time: a wait takes
        # the record that is the event's latest when it is enqueued, so reusing
        # the event cannot change what an earlier wait waits for.
        stream.record(marker)
        self.wait_event(marker)

    # -- arrays that cross with a stream (CUDA Array Interface v3, DLPack) -----

    @property
    def cai_stream(self) -> int:
        """This stream as a CUDA Array Interface ``stream`` entry, or as the
        ``stream`` a consumer passes to ``__dlpack__``: never 0 (the legacy default
        stream is 1, the per-thread one 2, any other stream its handle)."""
        return self._ptr or 1

    dlpack_stream = cai_stream

    def wait_for_array(self, array: object) -> None:
        """Make later work here wait for the work queued on *array*'s producer stream
        (its ``__cuda_array_interface__`` ``stream``; None: nothing to wait for)."""
        producer = self._array_producer(array)
        if producer is not None:
            self.wait(producer)

    @contextlib.contextmanager
    def using_array(self: _S, array: object) -> Iterator[_S]:
        """``with stream.using_array(a):`` work queued here in the block waits for *a*'s
        producer stream, and after the block (also when it raises) the producer's
        stream waits for it, so the producer cannot reuse *a* too early, as the CUDA
        Array Interface asks of a consumer."""
        producer = self._array_producer(array)
        if producer is not None:
            self.wait(producer)
        try:
            yield self
        finally:
            if producer is not None:
                producer.wait(self)

    def _array_producer(self, array: object) -> ExternalStream | None:
        ptr = _foreign.array_stream(array)
        if ptr is None or ptr == self._ptr:
            return None
        return ExternalStream(ptr, self._device if ptr <= 2 else -1)

    def keep_alive(self, *objects: object) -> None:
        """Keep *objects* alive until the GPU has passed this point of the stream, then
        let them go: "free this buffer once the stream used it" (torch's
        ``record_stream``). A notification: CUDA's thread needs no GIL for it."""
        if objects:
            self.launch_host_func(_let_go, objects, hold_stream=False)

    # -- host callbacks -------------------------------------------------------

    def launch_host_func(
        self, callback: Callable[[Any], object], arg: object = None, *, hold_stream: bool = True
    ) -> None:
        """Run ``callback(arg)`` once all work queued before it has finished.

        ``hold_stream=True``: later work on the stream waits until the callback
        returned. ``hold_stream=False``: a notification; the GPU does not wait.
        The callback runs in a copy of the caller's ``contextvars`` context; an
        exception goes to ``sys.unraisablehook``. It must not call CUDA.
        """
        self._call(_callbacks.launch, callback, (arg,), hold_stream)

    def add_callback(
        self,
        callback: Callable[[ExternalStream, int, Any], object],
        arg: object = None,
        *,
        hold_stream: bool = True,
    ) -> None:
        """Like :meth:`launch_host_func`, but calls ``callback(stream, status, arg)``.

        ``status`` is 0: CUDA runs host functions only while the stream has no error.
        """
        self._call(_callbacks.launch, callback, (self, 0, arg), hold_stream)

    # -- current stream -------------------------------------------------------

    def _current_var(self) -> _current.Variable:
        var = self._var
        if var is None:
            var = self._var = _current_var(self.device_id)
        return var

    def use(self: _S) -> _S:
        """Make this the current stream of its device in this context, until changed.

        Inside a ``with`` block, it lasts until that block ends.
        """
        _current.use(self._var or self._current_var(), self)
        return self

    def __enter__(self: _S) -> _S:
        binding: list[Any] = [self, None, None]  # a binding, as _current describes
        binding[1] = (self._var or self._current_var()).set(binding)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        var = self._var or self._current_var()
        binding = var.get()
        if binding[0] is self and binding[1] is not None:  # leaving the innermost block
            try:
                var.reset(binding[1])
                return
            except ValueError:  # entered in another context: _current.leave says so
                pass
        _current.leave(var, self)

    # -- comparisons, hashing, repr, pickling ---------------------------------

    def _key(self) -> tuple[int, int]:
        # A handle > 2 names one stream; 0/1/2 name one per device (known since construction).
        ptr = self._ptr
        return (ptr, self._device if ptr <= 2 else -1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _describe(self) -> str:
        try:
            device = str(self.device_id)
        except Exception:  # repr must not raise, whatever the handle
            device = "?"
        return f"{self._ptr:#x} on device {device}, {self.kind}"

    def __repr__(self) -> str:
        return f"<extstream.{type(self).__name__} {self._describe()}>"

    def _repr_html_(self) -> str:
        """Jupyter: handle, device, kind and what the stream is doing now."""
        try:
            state = "capturing" if self.is_capturing else ("idle" if self.done else "busy")
        except Exception as exc:  # a display must not raise
            state = f"unusable ({type(exc).__name__}: {exc})"
        return (
            f"<b>extstream.{type(self).__name__}</b> "
            f"<code>{html.escape(self._describe())}</code>: {html.escape(state)}"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"cannot pickle {self!r}: a stream handle means nothing in another process")

    def __copy__(self: _S) -> _S:
        return self

    def __deepcopy__(self: _S, memo: object) -> _S:
        return self


@public
class Stream(ExternalStream):
    """A CUDA stream that extstream creates and owns.

    Made with ``cudaStreamCreateWithPriority`` on *device_id* (None: the current
    device); destroyed once, by :meth:`close`, ``with closing(...)`` or garbage
    collection. Use after close raises ``ValueError``.
    """

    __slots__ = ("_alive",)

    _alive: list[int]  # the handle until destroyed

    def __init__(
        self, device_id: int | None = None, *, nonblocking: bool = True, priority: int = 0
    ) -> None:
        self._alive = []  # until created, so __del__ has nothing to destroy
        _check_flag("nonblocking", nonblocking)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {short_repr(priority)}")
        if not _INT_MIN <= priority <= _INT_MAX:
            raise ValueError(f"priority must be in [-2**31, 2**31), not {short_repr(priority)}")
        flags = _cuda.STREAM_NON_BLOCKING if nonblocking else 0
        device, ptr = _device.create_on(
            device_id,
            _cuda.cudaStreamCreateWithPriority,
            flags,
            priority,
            driver_create=_cuda.cuStreamCreateWithPriority,
        )
        self._set(ptr, device, _cuda.CUstream(ptr), None)
        self._alive = [ptr]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` destroyed the stream."""
        return not self._alive

    def close(self) -> None:
        """Destroy the stream (work already queued still runs). Later calls do nothing."""
        self._handle = None
        _handles.destroy_once(self)

    def _destroy(self, ptr: int) -> None:
        _handles.destroy_stream(ptr)

    def _prepare(self) -> bool:
        if not self._alive:
            raise ValueError(f"operation on closed stream {self._ptr:#x}")
        direct = super()._prepare()
        if not self._alive:  # closed meanwhile: the handle set just now is stale
            self._handle = None
            raise ValueError(f"operation on closed stream {self._ptr:#x}")
        return direct

    def _describe(self) -> str:
        if not self._alive:
            return f"{self._ptr:#x} on device {self._device}, closed"
        return super()._describe()

    def __del__(self, _finalize: Callable[[Any], None] = _handles.finalize) -> None:
        _finalize(self)


@public
class Event:
    """A CUDA event.

    ``Event(timing=False, blocking=False, interprocess=False, device_id=None)``
    creates one on *device_id* (None: the current device) that this object owns
    and destroys on :meth:`close`, at the end of a ``with closing(event):`` block, or
    at garbage collection (``with event:`` also closes it: deprecated, it warns).
    :meth:`from_handle` wraps a foreign event without owning it.
    """

    __slots__ = (
        "__weakref__",
        "_alive",
        "_device",
        "_flags",
        "_handle",
        "_owned",
        "_owner",
        "_ptr",
    )

    _ptr: int
    _device: int
    _handle: Any  # a CUevent once checked; None before, or when closed
    _owner: object  # the framework object that owns the event, kept alive; None for a handle
    _owned: bool
    _flags: int | None  # cudaEventCreateWithFlags' flags; None: unknown (a foreign event)
    _alive: list[int]  # the handle until closed

    def __init__(
        self,
        *,
        timing: bool = False,
        blocking: bool = False,
        interprocess: bool = False,
        device_id: int | None = None,
    ) -> None:
        self._alive = []  # until created, so __del__ has nothing to destroy
        _check_flag("timing", timing)
        _check_flag("blocking", blocking)
        _check_flag("interprocess", interprocess)
        if timing and interprocess:
            raise ValueError("an interprocess event cannot record timing (CUDA requires both off)")
        flags = (
            (0 if timing else _cuda.EVENT_DISABLE_TIMING)
            | (_cuda.EVENT_BLOCKING_SYNC if blocking else 0)
            | (_cuda.EVENT_INTERPROCESS if interprocess else 0)
        )
        device, ptr = _device.create_on(
            device_id, _cuda.cudaEventCreateWithFlags, flags, driver_create=_cuda.cuEventCreate
        )
        self._set(ptr, device, _cuda.CUevent(ptr), owned=True, flags=flags)

    def _set(self, ptr: int, device: int, handle: Any, *, owned: bool, flags: int | None) -> None:
        self._ptr = ptr
        self._device = device
        self._handle = handle
        self._owned = owned
        self._owner = None
        self._flags = flags
        self._alive = [ptr]

    @classmethod
    def from_handle(cls, ptr: int, device_id: int = -1) -> Event:
        """Wrap the foreign event handle *ptr* without owning it.

        CUDA cannot tell an event's device; *device_id* -1 means unknown, and
        :meth:`record` without a stream then uses the current device.
        """
        if isinstance(ptr, bool) or not isinstance(ptr, int):
            raise TypeError(f"event handle must be an int, not {short_repr(ptr)}")
        if not 0 < ptr <= MAX_HANDLE:
            raise ValueError(f"event handle {short_repr(ptr)} is out of range (0, 2**64)")
        event = cls.__new__(cls)
        event._set(ptr, _device.device_or_unknown(device_id), None, owned=False, flags=None)
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
        return not self._alive

    def _flag(self, flag: int) -> bool | None:
        return None if self._flags is None else bool(self._flags & flag)

    @property
    def timing(self) -> bool | None:
        """Whether the event records timing; None for a foreign event (CUDA cannot tell)."""
        timing_off = self._flag(_cuda.EVENT_DISABLE_TIMING)
        return None if timing_off is None else not timing_off

    @property
    def blocking(self) -> bool | None:
        """Whether a wait on the event blocks the thread instead of spinning (in CUDA);
        None for a foreign event."""
        return self._flag(_cuda.EVENT_BLOCKING_SYNC)

    @property
    def interprocess(self) -> bool | None:
        """Whether the event may be shared with other processes; None for a foreign event."""
        return self._flag(_cuda.EVENT_INTERPROCESS)

    def _prepare(self) -> int:
        """The handle, checked once, as an int."""
        if self._handle is not None:
            return self._ptr
        if not self._alive:
            raise ValueError(f"operation on closed event {self._ptr:#x}")
        _handles.check_handle(self._ptr, "event")
        self._handle = _cuda.CUevent(self._ptr)
        return self._ptr

    def _stream_or_current(self, stream: object) -> ExternalStream:
        if stream is None:
            return get_current_stream(None if self._device < 0 else self._device)
        return as_stream(stream)

    def record(self, stream: object = None) -> None:
        """Record the event on *stream* (None: the current stream of its device)."""
        self._stream_or_current(stream).record(self)

    def wait(self, stream: object = None) -> None:
        """Make later work on *stream* (None: the current stream of its device) wait for
        the event, as torch's and numba's ``Event.wait`` do."""
        self._stream_or_current(stream).wait_event(self)

    @property
    def done(self) -> bool:
        """True when the work before the event's last record has finished."""
        if self._handle is not None:  # the direct path of _handles.event_done, inlined
            status = _cuda.event_query(self._ptr)
            if status == 0:
                return True
            if status == _NOT_READY_STATUS:
                return False
            return _handles.event_answer(self._ptr, status)
        return _handles.event_done(self._prepare())

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait for the event; with *timeout* (s), ``TimeoutError`` when it passes.

        The wait answers Ctrl-C at once and raises a kernel fault within 50 ms.
        """
        _wait.block(self, timeout, "Event.synchronize()")

    def __await__(self) -> Generator[Any, None, None]:
        """``await event``: wait for it without blocking the event loop."""
        return _wait.until_done(self).__await__()

    def _launch_after(self, launch: _wait.Launch) -> _wait.Waiter:
        waiter = _wait.borrow_waiter(self._device)
        try:
            _handles.wait_event(waiter[1], True, self._prepare())
        except BaseException:
            _wait.give_back(waiter)  # it waits for nothing: others may use it
            raise
        try:
            launch(waiter[1], True)
        except BaseException:
            _wait.abandon(waiter)  # the wait for the event may be queued on it
            raise
        return waiter

    def elapsed_time(self, end: Event) -> float:
        """Milliseconds from this event to *end*; waits for *end* to complete.

        Both events need ``timing=True``.
        """
        if not isinstance(end, Event):
            raise TypeError(f"end must be an extstream.Event, not {short_repr(end)}")
        for event in (self, end):
            if event.timing is False:
                raise ValueError(
                    f"elapsed_time needs events created with timing=True; {event!r} has timing off"
                )
        end.synchronize()
        return _handles.elapsed_ms(self._prepare(), end._prepare())

    def close(self) -> None:
        """Destroy an owned event (a foreign one is only let go). Later calls do nothing."""
        self._handle = None
        _handles.destroy_once(self)

    def _destroy(self, ptr: int) -> None:
        if self._owned:
            _handles.destroy_event(ptr)

    def __enter__(self) -> Event:
        warnings.warn(
            "closing an Event at the end of a 'with' block is deprecated ('with' on a stream "
            "makes it current, not closed): use contextlib.closing(event) or event.close()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self, _finalize: Callable[[Any], None] = _handles.finalize) -> None:
        _finalize(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._ptr == other._ptr

    def __hash__(self) -> int:
        return hash(self._ptr)

    def __repr__(self) -> str:
        device = "unknown device" if self._device < 0 else f"device {self._device}"
        timing = {True: "timing", False: "no timing", None: "foreign"}[self.timing]
        state = ", closed" if not self._alive else ""
        return f"<extstream.Event {self._ptr:#x} on {device}, {timing}{state}>"

    def _repr_html_(self) -> str:
        """Jupyter: the event, and whether the work before its last record has finished."""
        try:
            state = "complete" if self.done else "pending"
        except Exception as exc:  # a display must not raise
            state = f"unusable ({type(exc).__name__}: {exc})"
        return f"<code>{html.escape(repr(self))}</code>: {html.escape(state)}"

    def ipc_handle(self) -> bytes:
        """The 64 bytes another process opens this event with (:meth:`from_ipc_handle`).

        The event must be made with ``Event(interprocess=True)`` (CUDA refuses timing
        events); the exporting process must keep it alive while others use it.
        """
        if self.interprocess is False:
            raise ValueError(
                f"{self!r} is not interprocess: make it with Event(interprocess=True) to share it"
            )
        handle = call(_cuda.cudaIpcGetEventHandle, _cuda.event_t(self._prepare()))
        return _cuda.ipc_handle_bytes(handle)

    @classmethod
    def from_ipc_handle(cls, data: bytes, device_id: int | None = None) -> Event:
        """Open an event another process shared (its :meth:`ipc_handle`), on *device_id*
        (None: the current device). This process owns the opened handle."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"an IPC event handle is 64 bytes, not {short_repr(data)}")
        if len(data) != _cuda.IPC_HANDLE_BYTES:
            raise ValueError(
                f"an IPC event handle is 64 bytes, not {len(data)}: {short_repr(bytes(data))}"
            )
        handle = _cuda.ipc_handle_from_bytes(bytes(data))
        device, ptr = _device.create_on(device_id, _cuda.cudaIpcOpenEventHandle, handle)
        event = cls.__new__(cls)
        flags = _cuda.EVENT_INTERPROCESS | _cuda.EVENT_DISABLE_TIMING
        event._set(ptr, device, _cuda.CUevent(ptr), owned=True, flags=flags)
        return event

    def __reduce__(self) -> tuple[Any, ...]:
        """An interprocess event pickles as its IPC handle (torch.multiprocessing,
        ``spawn`` children); any other event refuses, with the reason."""
        if not self.interprocess:
            raise TypeError(
                f"cannot pickle {self!r}: an event handle means nothing in another process "
                "(an Event(interprocess=True) pickles as its IPC handle)"
            )
        return (_open_shared_event, (self.ipc_handle(), self._device))


def _open_shared_event(data: bytes, device_id: int) -> Event:
    return Event.from_ipc_handle(data, device_id)


def _let_go(objects: object) -> None:
    """Nothing: the callback's entry held *objects*, and running it lets them go."""


def as_event(obj: object, stream: ExternalStream | None = None) -> Event:
    """*obj* as an :class:`Event`; None makes a new one on *stream*'s device."""
    if isinstance(obj, Event):
        return obj
    if obj is None:
        if stream is None:
            raise TypeError("an event is required, not None")
        return Event(device_id=stream.device_id)
    event = Event.from_handle(*_handles.foreign_event(obj))
    event._handle = _cuda.CUevent(event._ptr)  # checked by foreign_event
    event._owner = obj  # frameworks destroy their event with the object: keep it alive
    return event


@public
def as_stream(obj: object, device_id: int = -1) -> ExternalStream:
    """An :class:`ExternalStream` for *obj*: an ExternalStream (returned as is), an
    int handle, a ``__cuda_stream__`` object, or a torch / CuPy / numba / cuda.core
    stream. Anything else raises ``TypeError`` listing what is accepted.
    """
    if isinstance(obj, ExternalStream) and device_id in (-1, obj._device):
        return obj
    return ExternalStream(obj, device_id)


class _Markers(threading.local):
    """Each thread's marker events of :meth:`ExternalStream.wait`, by device."""

    def __init__(self) -> None:
        self.by_device: dict[int, Event] = {}


_markers = _Markers()


def _after_fork_in_child() -> None:
    global _markers  # the parent's events mean nothing in the child
    _markers = _Markers()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the current stream ---------------------------------------------------------

_vars: Final = _current.variables
_current_device = _device.current_device
# Device 0's variable once the process is known to have one device, so that
# get_current_stream() needs neither a CUDA call nor a dict look-up.
_only_device_var: _current.Variable | None = None
_several_devices = False


def _current_var(device_id: int) -> _current.Variable:
    """The current-stream variable of *device_id*, made on first use."""
    var = _vars.get(device_id)
    if var is None:
        count = _device.device_count()  # once per device: the count is kept
        if device_id >= count:
            raise ValueError(f"device_id={device_id}, but this process sees {count} device(s)")
        var = _current.make_variable(device_id, ExternalStream(_current.DEFAULT_HANDLE, device_id))
    return var


@public
def get_current_stream(device_id: int | None = None) -> ExternalStream:
    """The stream current in this thread or task for *device_id* (None: the current device).

    Where nothing was made current: the legacy default stream (handle 0), or the
    per-thread default stream (handle 2) with ``EXTSTREAM_PER_THREAD_DEFAULT_STREAM=1``.
    Costs no CUDA call when the device is given or only one device exists (after
    the first call per device, which checks that the device exists).
    """
    global _only_device_var, _several_devices
    if device_id is None:
        var = _only_device_var
        if var is not None:
            stream: ExternalStream = var.get()[0]
            return stream
        device_id = _current_device()  # one cudaGetDevice with several devices
        if not _several_devices:  # learnt on the first call: the count never changes
            if _device.device_count() == 1:
                _only_device_var = _current_var(0)
            else:
                _several_devices = True
    elif type(device_id) is not int:
        device_id = _device.device_index(device_id)
    try:
        stream = _vars[device_id].get()[0]
    except KeyError:
        stream = _current_var(_device.device_index(device_id)).get()[0]
    return stream
