"""ExternalStream (a stream someone else owns) and Stream (one extstream owns)."""

from __future__ import annotations

import contextlib
import html
import sys
import threading
from collections.abc import Callable, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import _callbacks, _config, _current, _device, _event, _interop, _native, _wait
from ._backend import cuda as _cuda
from ._errors import CudaError, raise_cuda_error
from ._interop import MAX_HANDLE

if TYPE_CHECKING:
    from ._event import Event

_S = TypeVar("_S", bound="ExternalStream")
_R = TypeVar("_R")

_SPECIAL_KINDS = {0: "legacy default", 1: "legacy", 2: "per-thread default"}

_SUCCESS = _cuda.SUCCESS
_NOT_READY = _cuda.NOT_READY
_CUDA_SUCCESS = 0
_CU_SUCCESS = _cuda.CU_SUCCESS
_CUDA_NOT_READY = 600  # the same number in CUresult and cudaError_t
_callback_threads = _callbacks.callback_threads
_MAIN_THREAD = _wait.MAIN_THREAD


def _runtime_call(call: Callable[..., Any], name: str, *args: Any) -> None:
    err = call(*args)[0]
    if err is not _SUCCESS:
        raise_cuda_error(err, name)


# The runtime path of each hot call: used before a handle is checked, for
# special handles on several devices, and to repeat a failed direct call.


def _query(ptr: int) -> bool:
    err = _cuda.cudaStreamQuery(_cuda.stream_t(ptr))[0]
    if err is _SUCCESS:
        return True
    if err is _NOT_READY:
        return False
    raise_cuda_error(err, "cudaStreamQuery")


def _synchronize(ptr: int) -> None:
    _runtime_call(_cuda.cudaStreamSynchronize, "cudaStreamSynchronize", _cuda.stream_t(ptr))


def _record(ptr: int, event_ptr: int) -> None:
    _runtime_call(
        _cuda.cudaEventRecord, "cudaEventRecord", _cuda.event_t(event_ptr), _cuda.stream_t(ptr)
    )


def _wait_event(ptr: int, event_ptr: int) -> None:
    _runtime_call(
        _cuda.cudaStreamWaitEvent,
        "cudaStreamWaitEvent",
        _cuda.stream_t(ptr),
        _cuda.event_t(event_ptr),
        0,
    )


def _wait_interruptibly(ptr: int, stream: ExternalStream, timeout: float | None) -> None:
    direct = stream._handle is not None
    _wait.wait_posted(
        lambda semaphore: _callbacks.enqueue_host_function(
            ptr, direct, _native.SEM_POST_ADDRESS, semaphore
        ),
        lambda: not stream.done,
        timeout,
        f"stream {ptr:#x}",
    )


def _ask(call: Callable[..., Any], name: str, *args: Any) -> Any:
    """The one result of a runtime call that returns ``(err, value)``, or raise."""
    err, value = call(*args)
    if err is not _SUCCESS:
        raise_cuda_error(err, name)
    return value


def _ask_stream(ptr: int, call: Callable[..., Any], name: str) -> Any:
    return _ask(call, name, _cuda.stream_t(ptr))


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
    stream alive while the wrapper is used.
    """

    __slots__ = ("__weakref__", "_device", "_handle", "_owner", "_ptr", "_var")

    _ptr: int
    _device: int
    _handle: Any  # a CUstream once checked and usable directly; None before, or when closed
    _owner: object  # the framework object that owns the stream, kept alive; None for a handle
    _var: ContextVar[list[Any]] | None  # its device's current-stream variable

    def __init__(self, ptr: object, device_id: int = -1) -> None:
        if type(ptr) is int:
            if not 0 <= ptr <= MAX_HANDLE:
                raise ValueError(f"stream handle {ptr!r} is out of range [0, 2**64)")
            self._owner = None
        else:
            # The framework object owns the stream: CuPy and cuda.core destroy it
            # with the object, so the wrapper keeps the object alive.
            self._owner = ptr
            ptr, hint = _interop.stream_handle(ptr)
            if device_id == -1:
                device_id = hint
        if type(device_id) is not int:
            device_id = _device.device_index(device_id)
        elif device_id < -1:
            raise ValueError(f"device_id must be >= 0, or -1 to ask CUDA, not {device_id!r}")
        self._ptr = ptr
        self._handle = None
        self._var = None
        if ptr <= 2 and device_id == -1:
            device_id = _device.current_device()
        elif device_id >= 0 and _config.checks and ptr > 2:
            self._check_device(device_id)
        self._device = device_id

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
            device = self._device = self._ask_device()
        return device

    @property
    def kind(self) -> str:
        """``"legacy default"``, ``"legacy"``, ``"per-thread default"`` or ``"ordinary"``."""
        return _SPECIAL_KINDS.get(self._ptr, "ordinary")

    def __cuda_stream__(self) -> tuple[int, int]:
        """The CUDA stream protocol: ``(0, handle)``."""
        return (0, self._ptr)

    def _ask_device(self) -> int:
        return int(self._call(_ask_stream, _cuda.cudaStreamGetDevice, "cudaStreamGetDevice"))

    def _check_device(self, device_id: int) -> None:
        # Asking a stream that is being captured for its device breaks the capture
        # (cudaErrorStreamCaptureUnsupported): then the given id is trusted.
        if _callbacks.is_capturing(self._prepare(), self._handle is not None):
            return
        actual = self._ask_device()
        if actual != device_id:
            raise ValueError(
                f"stream {self._ptr:#x} belongs to device {actual}, not device_id={device_id}"
            )

    def _prepare(self) -> int:
        """Check the handle once; afterwards calls use ``_handle`` directly.

        Special handles mean "of the current device", so with several devices
        they keep ``_handle`` None and every call goes through :meth:`_call`.
        """
        ptr = self._ptr
        _device.note_use()
        if not _cuda.handle_is_valid(ptr):
            raise CudaError(
                _cuda.ERROR_INVALID_RESOURCE_HANDLE,
                None,
                None,
                f"{ptr:#x} is not a readable address in this process, so it is not a "
                "CUDA stream handle",
            )
        if ptr > 2 or _device.device_count() == 1:
            self._handle = _cuda.CUstream(ptr)
        return ptr

    def _call(self, op: Callable[..., _R], *args: Any) -> _R:
        """``op(ptr, *args)`` for a handle not (yet) usable directly."""
        ptr = self._prepare()
        if self._handle is not None:
            return op(ptr, *args)
        with _device.on_device(self._device):
            return op(ptr, *args)

    # -- state and waiting ----------------------------------------------------

    @property
    def done(self) -> bool:
        """True when all work queued so far has finished (``cudaStreamQuery``)."""
        if self._handle is not None:  # the fast path, inlined
            status = _cuda.stream_query(self._ptr)
            if status == _CUDA_SUCCESS:
                return True
            if status == _CUDA_NOT_READY:
                return False
        return self._call(_query)

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait until all work queued so far has finished.

        With *timeout* (seconds), raise ``TimeoutError`` when it passes. In the
        main thread, and with a timeout, the wait answers Ctrl-C at once; on an
        idle stream it costs one query. Elsewhere it is one cudaStreamSynchronize.
        """
        if _callback_threads:
            _callbacks.raise_if_holding_stream("synchronize()")
        if timeout is not None:
            _wait.check_timeout(timeout)
        if timeout is None and threading.get_ident() != _MAIN_THREAD:
            if self._handle is None or _cuda.stream_synchronize(self._ptr):
                self._call(_synchronize)
        elif not self.done and not _wait.spin_until(lambda: self.done, timeout):
            self._call(_wait_interruptibly, self, timeout)

    def __await__(self) -> Generator[Any, None, None]:
        """``await stream``: wait for the work queued so far without blocking the event loop."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> None:
        if not self.done:
            await _wait.wait_notified(self._notify)

    def _notify(self, callback: Callable[[Any], None], arg: object) -> None:
        self.launch_host_func(callback, arg, hold_stream=False)

    @property
    def priority(self) -> int:
        """The stream's priority (lower numbers run first)."""
        return int(self._call(_ask_stream, _cuda.cudaStreamGetPriority, "cudaStreamGetPriority"))

    @property
    def is_nonblocking(self) -> bool:
        """Whether the stream does not synchronize with the legacy default stream."""
        flags = self._call(_ask_stream, _cuda.cudaStreamGetFlags, "cudaStreamGetFlags")
        return bool(int(flags) & _cuda.STREAM_NON_BLOCKING)

    @property
    def is_capturing(self) -> bool:
        """Whether the stream is being captured into a CUDA graph."""
        status = self._call(_ask_stream, _cuda.cudaStreamIsCapturing, "cudaStreamIsCapturing")
        return status is not _cuda.CAPTURE_NONE

    # -- ordering -------------------------------------------------------------

    def record(self, event: object = None) -> Event:
        """Record *event* (a new timing-disabled :class:`Event` when None) here and return it."""
        if type(event) is _event.Event:
            event_handle, handle = event._handle, self._handle
            if (
                event_handle is not None
                and handle is not None
                and _cuda.cuEventRecord(event_handle, handle)[0] is _CU_SUCCESS
            ):
                return event
        else:
            event = _event.as_event(event, self)
        self._call(_record, event._ready_ptr())
        return event

    def wait_event(self, event: object) -> None:
        """Make later work on this stream wait until *event* has completed.

        *event*: an :class:`Event`, a torch / CuPy / cuda.core event, or an int
        event handle.
        """
        if type(event) is _event.Event:
            event_handle, handle = event._handle, self._handle
            if (
                event_handle is not None
                and handle is not None
                and _cuda.cuStreamWaitEvent(handle, event_handle, 0)[0] is _CU_SUCCESS
            ):
                return
        else:
            event = _event.as_event(event)
        self._call(_wait_event, event._ready_ptr())

    def wait(self, other: object) -> None:
        """Make later work here wait for *other*: a stream's work queued so far, or an event.

        Streams are anything :func:`as_stream` takes, plain ints included; pass an
        int event handle to :meth:`wait_event` instead.
        """
        if isinstance(other, _event.Event) or _interop.is_event(other):
            self.wait_event(other)
            return
        stream = _interop.as_stream(other)
        with _event.Event(device_id=stream.device_id) as marker:
            stream.record(marker)
            self.wait_event(marker)

    # -- host callbacks -------------------------------------------------------

    def launch_host_func(
        self, callback: Callable[[Any], object], arg: object, *, hold_stream: bool = True
    ) -> None:
        """Run ``callback(arg)`` once all work queued before it has finished.

        ``hold_stream=True``: later work on the stream waits until the callback
        returned. ``hold_stream=False``: a notification; the GPU does not wait.
        The callback runs in a copy of the caller's ``contextvars`` context; an
        exception goes to ``sys.unraisablehook``. It must not call CUDA.
        """
        if self._handle is None:
            self._call(_callbacks.launch, False, callback, (arg,), hold_stream)
        else:
            _callbacks.launch(self._ptr, True, callback, (arg,), hold_stream)

    def add_callback(
        self,
        callback: Callable[[ExternalStream, int, Any], object],
        arg: object,
        *,
        hold_stream: bool = True,
    ) -> None:
        """Like :meth:`launch_host_func`, but calls ``callback(stream, status, arg)``.

        ``status`` is 0: CUDA runs host functions only while the stream has no error.
        """
        if self._handle is None:
            self._call(_callbacks.launch, False, callback, (self, 0, arg), hold_stream)
        else:
            _callbacks.launch(self._ptr, True, callback, (self, 0, arg), hold_stream)

    # -- current stream -------------------------------------------------------

    def _current_var(self) -> ContextVar[list[Any]]:
        var = self._var
        if var is None:
            var = self._var = _current.current_var(self.device_id)
        return var

    def use(self: _S) -> _S:
        """Make this the current stream of its device in this context, until changed.

        Inside a ``with`` block, it lasts until that block ends.
        """
        var = self._var or self._current_var()
        binding = var.get()
        var.set([self, None, binding if binding[1] is not None else binding[2]])
        return self

    def __enter__(self: _S) -> _S:
        binding: list[Any] = [self, None, None]
        binding[1] = (self._var or self._current_var()).set(binding)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        var = self._var or self._current_var()
        binding = var.get()
        if binding[1] is None:  # made current by use() inside the block
            binding = binding[2]
        if binding is None or binding[0] is not self:
            self._raise_out_of_order(binding)
        try:
            var.reset(binding[1])
        except ValueError:  # entered in another context (thread, task, generator)
            self._raise_out_of_order(None)

    def _raise_out_of_order(self, binding: list[Any] | None) -> NoReturn:
        innermost = "none" if binding is None else repr(binding[0])
        raise RuntimeError(
            f"leaving 'with {self!r}' out of order: the innermost open 'with' block "
            f"of its device in this context is {innermost}; the current stream was left unchanged"
        )

    # -- comparisons, hashing, repr, pickling ---------------------------------

    def _key(self) -> tuple[int, int]:
        return (self.device_id, self._ptr)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() != other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, ExternalStream):
            return NotImplemented
        return self._key() >= other._key()

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


class Stream(ExternalStream):
    """A CUDA stream that extstream creates and owns.

    Made with ``cudaStreamCreateWithPriority`` on *device_id* (None: the current
    device); destroyed once, by :meth:`close`, ``with closing(...)`` or garbage
    collection. Use after close raises ``ValueError``.
    """

    __slots__ = ("_closed",)

    _close_lock = threading.Lock()

    def __init__(
        self, device_id: int | None = None, *, nonblocking: bool = True, priority: int = 0
    ) -> None:
        self._closed = True  # until created, so __del__ has nothing to destroy
        if not isinstance(nonblocking, bool):
            raise TypeError(f"nonblocking must be a bool, not {nonblocking!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {priority!r}")
        flags = _cuda.STREAM_NON_BLOCKING if nonblocking else 0
        device, handle = _device.create_on(
            device_id,
            _cuda.cudaStreamCreateWithPriority,
            "cudaStreamCreateWithPriority",
            flags,
            priority,
        )
        self._ptr = int(handle)
        self._handle = _cuda.CUstream(self._ptr)
        self._device = device
        self._owner = None
        self._var = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` destroyed the stream."""
        return self._closed

    def close(self) -> None:
        """Destroy the stream (work already queued still runs). Later calls do nothing."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._handle = None
        _runtime_call(_cuda.cudaStreamDestroy, "cudaStreamDestroy", _cuda.stream_t(self._ptr))

    def _prepare(self) -> Any:
        with self._close_lock:  # so that close() cannot slip in before _handle is set again
            if self._closed:
                raise ValueError(f"operation on closed stream {self._ptr:#x}")
            return super()._prepare()

    def _describe(self) -> str:
        if self._closed:
            return f"{self._ptr:#x} on device {self._device}, closed"
        return super()._describe()

    def __del__(self) -> None:
        # At interpreter exit the process's CUDA context goes with it, and
        # threads frozen by the exit may hold what a destroy would wait for.
        if not sys.is_finalizing() and not self._closed:
            with contextlib.suppress(Exception):  # at GC or shutdown no one can be told
                self.close()
