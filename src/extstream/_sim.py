"""The CPU simulator backend (``EXTSTREAM_BACKEND=sim``): CUDA streams without a GPU.

It provides every name of ``_cuda`` with the same call and return conventions,
so the rest of extstream runs unchanged, and models what extstream relies on,
asynchronously (work runs later, on one worker thread per stream):

- ``EXTSTREAM_SIM_DEVICES`` devices (default 1), of which the process sees those
  ``CUDA_VISIBLE_DEVICES`` lists, as on a GPU, and a current device per thread;
- streams with flags and priority, each a FIFO; the legacy default stream
  (handles 0 and 1) waits for all earlier work of the device's blocking streams
  and they wait for it; the per-thread default stream (2) is a blocking stream
  of its thread, one per thread lifetime (a new thread gets a new one, whatever
  id the OS gives it);
- events: record, query, synchronize, waits across streams and devices,
  timing from the host clock, ``cudaErrorInvalidResourceHandle`` for timing
  without ``timing=True``;
- host functions, called through their C address with ctypes, blocking their
  stream until they return (so libc ``sem_post`` and ctypes thunks run as on a
  GPU), one at a time per device, as CUDA runs a context's on one thread;
- stream capture into graphs that replay and destroy their user objects
  (:mod:`extstream.sim` starts and ends captures), with CUDA's capture modes: a
  "potentially unsafe" call (a query, a destroy, a creation, work queued outside
  the capture) from a thread not in relaxed mode is refused (900) while that
  thread, or another one in global mode, captures in a mode other than relaxed,
  and the refusal invalidates the capture, as tests/driver/'s model does;
- CUDA's error codes: invalid handles (which the simulator, unlike the GPU,
  always detects), not ready, invalid value and device, capture errors, and
  injected errors, sticky for the device as on a GPU.

README.md, "The simulator", says what differs from a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from . import _config, _native

#: What only the simulator has: the tools behind :mod:`extstream.sim`.
TOOLS: Final = frozenset(
    [
        "DEVICE_COUNT",
        "PRIORITY_RANGE",
        "QUEUE_DEPTH",
        "begin_capture",
        "busy",
        "cudaError_t",
        "end_capture",
        "history",
        "inject_error",
        "reset_device",
    ]
)
# The backend interface of _cuda, and the tools.
__all__ = [
    "BINDINGS_VERSION",
    "CAPTURE_MODE_RELAXED",
    "CAPTURE_STATUS_NONE",
    "CU_SUCCESS",
    "DEVICE_COUNT",
    "DIRECT_CALLS",
    "ERROR_INVALID_CONTEXT",
    "ERROR_INVALID_RESOURCE_HANDLE",
    "ERROR_NOT_SUPPORTED",
    "EVENT_BLOCKING_SYNC",
    "EVENT_DISABLE_TIMING",
    "EVENT_INTERPROCESS",
    "GRAPH_USER_OBJECT_MOVE",
    "IPC_HANDLE_BYTES",
    "NOT_READY",
    "NOT_READY_STATUS",
    "PRIORITY_RANGE",
    "QUEUE_DEPTH",
    "STREAM_NON_BLOCKING",
    "SUCCESS",
    "TOOLS",
    "USER_OBJECT_NO_DESTRUCTOR_SYNC",
    "CUevent",
    "CUstream",
    "begin_capture",
    "busy",
    "cuCtxGetCurrent",
    "cuCtxGetDevice",
    "cuCtxPopCurrent",
    "cuCtxPushCurrent",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuDeviceGetCount",
    "cuDevicePrimaryCtxRetain",
    "cuEventCreate",
    "cuEventDestroy",
    "cuEventRecord",
    "cuStreamCreateWithPriority",
    "cuStreamDestroy",
    "cuStreamGetCtx",
    "cuStreamWaitEvent",
    "cuThreadExchangeStreamCaptureMode",
    "cudaDeviceGetStreamPriorityRange",
    "cudaDriverGetVersion",
    "cudaError_t",
    "cudaEventCreateWithFlags",
    "cudaEventDestroy",
    "cudaEventElapsedTime",
    "cudaEventQuery",
    "cudaEventRecord",
    "cudaGetDevice",
    "cudaGetDeviceCount",
    "cudaGetDeviceProperties",
    "cudaGraphRetainUserObject",
    "cudaIpcGetEventHandle",
    "cudaIpcOpenEventHandle",
    "cudaRuntimeGetVersion",
    "cudaSetDevice",
    "cudaStreamCreateWithPriority",
    "cudaStreamDestroy",
    "cudaStreamGetCaptureInfo",
    "cudaStreamGetDevice",
    "cudaStreamGetFlags",
    "cudaStreamGetPriority",
    "cudaStreamIsCapturing",
    "cudaStreamQuery",
    "cudaStreamWaitEvent",
    "cudaUserObjectCreate",
    "cudaUserObjectRelease",
    "direct_driver_calls",
    "driver_module",
    "end_capture",
    "error_name",
    "error_string",
    "event_query",
    "event_t",
    "handle_is_valid",
    "history",
    "host_fn_t",
    "inject_error",
    "ipc_handle_bytes",
    "ipc_handle_from_bytes",
    "launch_host_func",
    "load_driver_entry_points",
    "reset_device",
    "runtime_module",
    "stream_is_capturing",
    "stream_query",
    "stream_t",
]

BINDINGS_VERSION: Final = "simulator"


class cudaError_t(enum.IntEnum):
    """The CUDA status codes the simulator returns."""

    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInitializationError = 3
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorLaunchTimeout = 702
    cudaErrorAssert = 710
    cudaErrorIllegalInstruction = 715
    cudaErrorMisalignedAddress = 716
    cudaErrorLaunchFailure = 719
    cudaErrorNotPermitted = 800
    cudaErrorNotSupported = 801
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorUnknown = 999


_EXPLANATIONS: Final = {
    0: "no error",
    1: "invalid argument",
    3: "initialization error",
    100: "no CUDA-capable device is detected",
    101: "invalid device ordinal",
    400: "invalid resource handle",
    401: "the operation cannot be performed in the present state",
    600: "device not ready",
    700: "an illegal memory access was encountered",
    702: "the launch timed out and was terminated",
    710: "device-side assert triggered",
    715: "an illegal instruction was encountered",
    716: "misaligned address",
    719: "unspecified launch failure",
    800: "operation not permitted",
    801: "operation not supported",
    900: "operation not permitted when stream is capturing",
    901: "operation failed due to a previous error during capture",
    999: "unknown error",
}
# Errors that break the device's context for good, as on a GPU.
_STICKY: Final = frozenset({700, 702, 710, 715, 716, 719})


class _Capture(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    INVALIDATED = 2


class _Mode(enum.IntEnum):
    """cudaStreamCaptureMode."""

    GLOBAL = 0
    THREAD_LOCAL = 1
    RELAXED = 2


_HISTORY: Final = 100_000  # what ran on a stream, kept as far back as this
_E = cudaError_t
SUCCESS: Final[Any] = _E.cudaSuccess
NOT_READY: Final[Any] = _E.cudaErrorNotReady
NOT_READY_STATUS: Final = int(NOT_READY)
CU_SUCCESS: Final[Any] = SUCCESS
CAPTURE_STATUS_NONE: Final = int(_Capture.NONE)
CAPTURE_MODE_RELAXED: Final = int(_Mode.RELAXED)
ERROR_INVALID_CONTEXT: Final = 201
ERROR_INVALID_RESOURCE_HANDLE: Final = int(_E.cudaErrorInvalidResourceHandle)
ERROR_NOT_SUPPORTED: Final = int(_E.cudaErrorNotSupported)
STREAM_NON_BLOCKING: Final = 1
EVENT_BLOCKING_SYNC: Final = 1
EVENT_DISABLE_TIMING: Final = 2
EVENT_INTERPROCESS: Final = 4
USER_OBJECT_NO_DESTRUCTOR_SYNC: Final = 1
GRAPH_USER_OBJECT_MOVE: Final = 1
PRIORITY_RANGE: Final = (-5, 0)  # (greatest, least), as on an H100
DEVICE_COUNT: Final = _config.sim_device_count()  # the simulated machine's devices
# The work a stream holds before a launch waits for room. A GPU's launch queue
# pushes back too (its depth depends on the work and is not documented): so a
# producer that outpaces the stream is held back instead of growing memory.
QUEUE_DEPTH: Final = 4096
# Seconds a stream's worker thread waits for work before it ends: streams that
# are never destroyed (a thread's per-thread default stream) keep no thread.
_IDLE_WORKER: Final = 1.0


def _visible_devices() -> list[int]:
    """The devices this process sees, as CUDA reads ``CUDA_VISIBLE_DEVICES``: the
    listed indices in order, up to the first that does not exist (unset: all)."""
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        return list(range(DEVICE_COUNT))
    visible: list[int] = []
    for item in setting.split(","):
        text = item.strip()
        if not text.isdigit() or int(text) >= DEVICE_COUNT or int(text) in visible:
            break
        visible.append(int(text))
    return visible


#: The physical (simulated machine's) index of each device this process sees.
_PHYSICAL: Final = _visible_devices()
#: No cuda.bindings modules to time raw calls of.
runtime_module: Final[Any] = None
driver_module: Final[Any] = None


def _identity(value: Any) -> Any:
    return value


# The simulator's handles are plain ints.
stream_t = event_t = host_fn_t = CUstream = CUevent = _identity
direct_driver_calls = True
DIRECT_CALLS: Final = frozenset(
    {
        "stream_query",
        "event_query",
        "launch_host_func",
        "stream_is_capturing",
    }
)


def load_driver_entry_points() -> bool:
    """Nothing to load: the simulator's calls are all direct."""
    return True


def error_name(status: int) -> str:
    """``cudaErrorX`` for a status code."""
    try:
        return _E(status).name
    except ValueError:
        return f"cudaError{status}"


def error_string(status: int) -> str:
    """CUDA's one-line explanation of a status code."""
    return _EXPLANATIONS.get(status, "unknown CUDA error")


# -- the model ---------------------------------------------------------------


class _Op:
    """One piece of queued work: runs once its dependencies and its stream's earlier work did."""

    __slots__ = ("action", "deps", "done", "kind", "stream")

    def __init__(self, stream: _Stream, kind: tuple[Any, ...], action: Callable[[], None] | None):
        self.stream = stream
        self.kind = kind
        self.action = action
        self.deps: list[_Op] = []
        self.done = threading.Event()


class _Stream:
    __slots__ = (
        "__weakref__",
        "capture",
        "condition",
        "destroyed",
        "device",
        "flags",
        "handle",
        "history",
        "pending_error",
        "priority",
        "queue",
        "tail",
        "worker",
    )

    def __init__(self, handle: int, device: int, flags: int, priority: int) -> None:
        self.handle = handle
        self.device = device
        self.flags = flags
        self.priority = priority
        self.queue: deque[_Op] = deque()
        self.condition = threading.Condition()
        self.tail: _Op | None = None
        self.worker: threading.Thread | None = None
        self.history: deque[tuple[Any, ...]] = deque(maxlen=_HISTORY)
        self.pending_error = 0
        self.capture: _Graph | None = None
        self.destroyed = False

    @property
    def blocking(self) -> bool:
        return not self.flags & STREAM_NON_BLOCKING

    def enqueue(
        self,
        kind: tuple[Any, ...],
        action: Callable[[], None] | None,
        deps: list[_Op],
        instant: bool = False,
    ) -> _Op:
        """Queue work; *instant* work (libc's ``sem_post`` as a host function) runs at
        once in the caller's thread where the stream has nothing before it, as a GPU
        runs it at once, with no round trip through the worker (and the GIL)."""
        op = _Op(self, kind, action)
        op.deps = [d for d in deps if not d.done.is_set()]
        with self.condition:
            if instant and not self.queue and not op.deps:
                self.history.append(kind)
                if action is not None and not _devices[self.device].sticky:
                    action()
                op.done.set()
                return op
            while len(self.queue) >= QUEUE_DEPTH:
                self.condition.wait()
            self.queue.append(op)
            self.tail = op
            if self.worker is None:
                self.worker = threading.Thread(
                    target=self._work, name=f"extstream-sim-stream-{self.handle:#x}", daemon=True
                )
                self.worker.start()
            self.condition.notify()
        return op

    def _work(self) -> None:
        while True:
            with self.condition:
                if not self.queue:
                    if not self.destroyed:
                        self.condition.wait(_IDLE_WORKER)
                    if not self.queue:  # destroyed, or idle: the next enqueue starts another
                        self.worker = None
                        return
                op = self.queue[0]
            for dep in op.deps:
                dep.done.wait()
            device = _devices[self.device]
            self.history.append(op.kind)  # before it runs: a host function may wake a reader
            if op.action is not None and not device.sticky:
                if op.kind[0] == "host function":
                    with device.host_functions:  # one at a time, as on CUDA's one thread
                        op.action()
                else:
                    op.action()
            with self.condition:
                self.queue.popleft()
                if len(self.queue) == QUEUE_DEPTH - 1:  # there is room again
                    self.condition.notify_all()
            op.done.set()

    def idle(self) -> bool:
        tail = self.tail
        return tail is None or tail.done.is_set()


class _Event:
    __slots__ = ("device", "flags", "handle", "latest", "recorded_at")

    def __init__(self, handle: int, device: int, flags: int) -> None:
        self.handle = handle
        self.device = device
        self.flags = flags
        self.latest: _Op | None = None  # the record op that waits wait for
        self.recorded_at: float | None = None


class _Device:
    __slots__ = ("host_functions", "legacy", "per_thread", "sticky")

    def __init__(self, index: int) -> None:
        self.legacy = _Stream(0, index, 0, 0)
        # The per-thread default streams of live threads (each thread's own is
        # held by the thread; one of an ended thread finishes its work and goes).
        self.per_thread: weakref.WeakSet[_Stream] = weakref.WeakSet()
        self.sticky = 0
        # CUDA runs all host functions of a context on one thread: held by the one running.
        self.host_functions = threading.Lock()


class _Graph:
    """Captured work: a replay queues it again; destroying it runs its user objects' destructors."""

    def __init__(self, origin: _Stream, mode: int) -> None:
        self.origin = origin
        self.mode = mode
        self.thread = threading.get_ident()
        self.steps: list[tuple[tuple[Any, ...], Callable[[], None] | None]] = []
        self.user_objects: list[tuple[int, int]] = []  # (destructor address, its argument)
        self.status = _Capture.ACTIVE

    def replay(self, stream: _Stream) -> None:
        for kind, action in self.steps:
            stream.enqueue(kind, action, _implicit_deps(stream))

    def destroy(self) -> None:
        for destructor, argument in self.user_objects:
            _native.call_host_function(destructor, argument)
        self.user_objects.clear()


# These tables and the handle counter need no lock: next() and dict operations
# are atomic, and a lock here could be wanted by a finalizer (a destroy) that a
# collection runs while the lock is held.
_devices = [_Device(i) for i in range(len(_PHYSICAL))]
_streams: dict[int, _Stream] = {}
_events: dict[int, _Event] = {}
_handles = itertools.count(0x7E00_0000_0000, 0x100)


class _ThreadState(threading.local):
    """A thread's current device, capture mode and per-thread default streams."""

    def __init__(self) -> None:
        self.device = 0
        self.mode = int(_Mode.GLOBAL)  # cudaStreamCaptureMode: CUDA's default
        self.per_thread: dict[int, _Stream] = {}  # by device, for this thread's lifetime


_current = _ThreadState()
_captures: list[_Graph] = []  # the captures in progress


def _stream(handle: int) -> _Stream | None:
    """The stream a handle names for the calling thread; None if it names none."""
    if handle in (0, 1):
        return _devices[_current.device].legacy
    if handle == 2:
        mine = _current.per_thread
        stream = mine.get(_current.device)
        if stream is None:
            stream = mine[_current.device] = _Stream(2, _current.device, 0, 0)
            _devices[_current.device].per_thread.add(stream)
        return stream
    return _streams.get(handle)


def _prohibited(device: int) -> bool:
    """Whether a "potentially unsafe" call from this thread on *device* is refused now,
    by CUDA's capture-mode rules (cuThreadExchangeStreamCaptureMode); the captures
    that refuse it are invalidated."""
    mode = _current.mode
    if not _captures or mode == _Mode.RELAXED:
        return False
    me = threading.get_ident()
    refused = False
    for graph in list(_captures):
        if graph.origin.device != device or graph.mode == _Mode.RELAXED:
            continue
        if graph.thread == me or (mode == _Mode.GLOBAL and graph.mode == _Mode.GLOBAL):
            graph.status = _Capture.INVALIDATED
            refused = True
    return refused


_UNSAFE: Final = int(_E.cudaErrorStreamCaptureUnsupported)


def _implicit_deps(stream: _Stream) -> list[_Op]:
    """The legacy default stream's implicit synchronization with blocking streams."""
    device = _devices[stream.device]
    if stream is device.legacy:
        blocking = [s for s in list(_streams.values()) if s.device == stream.device and s.blocking]
        blocking += list(device.per_thread)
        return [s.tail for s in blocking if s.tail is not None]
    if stream.blocking and device.legacy.tail is not None:
        return [device.legacy.tail]
    return []


def _check(stream: _Stream | None) -> int:
    """The status a call on *stream* fails with (0: none): bad handle, sticky or injected
    error (used up by the call it fails)."""
    if stream is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    sticky = _devices[stream.device].sticky
    if sticky:
        return sticky
    error = stream.pending_error
    stream.pending_error = 0
    return error


def _submit(
    handle: int,
    kind: tuple[Any, ...],
    action: Callable[[], None] | None,
    deps: list[_Op] | None = None,
    instant: bool = False,
) -> tuple[int, _Op | None]:
    """Queue work on a stream, or record it into the graph being captured there."""
    stream = _stream(handle)
    status = _check(stream)
    if status:
        return status, None
    assert stream is not None
    if stream.capture is not None:
        if stream.capture.status is _Capture.INVALIDATED:
            return int(_E.cudaErrorStreamCaptureInvalidated), None
        stream.capture.steps.append((kind, action))
        return 0, None
    if _prohibited(stream.device):
        return _UNSAFE, None
    return 0, stream.enqueue(kind, action, _implicit_deps(stream) + (deps or []), instant)


def _query_status(stream: _Stream) -> int:
    if stream.capture is not None:
        stream.capture.status = _Capture.INVALIDATED
        return int(_E.cudaErrorStreamCaptureUnsupported)
    if not stream.idle():
        return int(NOT_READY)
    return _devices[stream.device].sticky


# -- the direct calls (int status) ---------------------------------------------


def _query(handle: int) -> int:
    stream = _stream(handle)
    status = _check(stream)
    if status:
        return status
    assert stream is not None
    return _UNSAFE if _prohibited(stream.device) else _query_status(stream)


def stream_query(handle: int) -> int:
    return _query(handle)


def _launch(handle: int, function: int, user_data: int) -> int:
    action = lambda: _run_host_function(function, user_data)  # noqa: E731
    instant = function == _native.SEM_POST_ADDRESS
    return _submit(handle, ("host function", function, user_data), action, instant=instant)[0]


def launch_host_func(handle: int, function: int, user_data: int) -> int:
    return _launch(handle, function, user_data)


def stream_is_capturing(handle: int, status_address: int) -> int:
    stream = _stream(handle)
    if stream is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    capture = stream.capture
    ctypes.c_int.from_address(status_address).value = 0 if capture is None else capture.status
    return 0


def event_query(handle: int) -> int:
    event = _events.get(handle)
    if event is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    sticky = _devices[event.device].sticky
    if sticky:
        return sticky
    if _prohibited(event.device):
        return _UNSAFE
    latest = event.latest
    return 0 if latest is None or latest.done.is_set() else int(NOT_READY)


def _record(event_handle: int, stream_handle: int) -> int:
    event = _events.get(event_handle)
    if event is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    stream = _stream(stream_handle)
    if stream is not None and stream.device != event.device:
        return int(_E.cudaErrorInvalidResourceHandle)  # CUDA: event and stream on one device

    def stamp() -> None:
        event.recorded_at = time.perf_counter()

    status, op = _submit(stream_handle, ("record", event_handle), stamp)
    if op is not None:
        event.latest = op
    return status


def _wait_event(stream_handle: int, event_handle: int) -> int:
    event = _events.get(event_handle)
    if event is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    deps = [] if event.latest is None else [event.latest]
    return _submit(stream_handle, ("wait", event_handle), None, deps)[0]


def cuEventRecord(event: int, stream: int) -> tuple[Any]:
    return (_E(_record(event, stream)),)


def cuStreamWaitEvent(stream: int, event: int, flags: int) -> tuple[Any]:
    return (_E(_wait_event(stream, event)),)


# -- the runtime calls ((err, *results) tuples) ---------------------------------


def cudaGetDeviceCount() -> tuple[Any, int]:
    if not _PHYSICAL:
        return _E.cudaErrorNoDevice, 0
    return SUCCESS, len(_PHYSICAL)


def cudaGetDevice() -> tuple[Any, int]:
    return SUCCESS, _current.device


def cudaSetDevice(device: int) -> tuple[Any]:
    if not 0 <= device < len(_PHYSICAL):
        return (_E.cudaErrorInvalidDevice,)
    _current.device = device
    return (SUCCESS,)


class _Properties:
    def __init__(self, physical: int) -> None:
        self.name = f"extstream simulator device {physical}".encode()


def cudaGetDeviceProperties(device: int) -> tuple[Any, ...]:
    if not 0 <= device < len(_PHYSICAL):
        return (_E.cudaErrorInvalidDevice, None)
    return SUCCESS, _Properties(_PHYSICAL[device])


IPC_HANDLE_BYTES: Final = 64


class _IpcEventHandle:
    """cudaIpcEventHandle_t: 64 opaque bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def ipc_handle_bytes(handle: _IpcEventHandle) -> bytes:
    return handle.data


def ipc_handle_from_bytes(data: bytes) -> _IpcEventHandle:
    return _IpcEventHandle(bytes(data))


def cudaIpcGetEventHandle(handle: int) -> tuple[Any, ...]:
    # Separate processes share no simulator: interprocess events need a GPU.
    return (_E.cudaErrorNotSupported, None)


def cudaIpcOpenEventHandle(ipc_handle: _IpcEventHandle) -> tuple[Any, ...]:
    return (_E.cudaErrorNotSupported, None)


def cudaDeviceGetStreamPriorityRange() -> tuple[Any, int, int]:
    greatest, least = PRIORITY_RANGE
    return SUCCESS, least, greatest


def cudaDriverGetVersion() -> tuple[Any, int]:
    return SUCCESS, 13000


def cudaRuntimeGetVersion() -> tuple[Any, int]:
    return SUCCESS, 13000


def cudaStreamCreateWithPriority(flags: int, priority: int) -> tuple[Any, ...]:
    if flags not in (0, STREAM_NON_BLOCKING):
        return (_E.cudaErrorInvalidValue, None)
    device = _context_device()
    if _prohibited(device):
        return (_E(_UNSAFE), None)
    greatest, least = PRIORITY_RANGE
    handle = next(_handles)  # no lock: a finalizer run by a collection here may destroy
    _streams[handle] = _Stream(handle, device, flags, min(max(priority, greatest), least))
    return SUCCESS, handle


def cudaStreamDestroy(handle: int) -> tuple[Any]:
    stream = _streams.get(handle)
    if stream is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    if _prohibited(stream.device):
        return (_E(_UNSAFE),)
    _streams.pop(handle, None)
    with stream.condition:  # queued work still runs, as on a GPU; then the worker ends
        stream.destroyed = True
        stream.condition.notify()
    return (SUCCESS,)


def cudaStreamQuery(handle: int) -> tuple[Any]:
    return (_E(_query(handle)),)


def cudaStreamWaitEvent(stream: int, event: int, flags: int) -> tuple[Any]:
    return (_E(_wait_event(stream, event)),)


def _stream_attribute(handle: int, read: Callable[[_Stream], Any]) -> tuple[Any, ...]:
    stream = _stream(handle)
    if stream is None:
        return (_E.cudaErrorInvalidResourceHandle, None)
    return SUCCESS, read(stream)


def cudaStreamGetDevice(handle: int) -> tuple[Any, ...]:
    stream = _stream(handle)
    if stream is not None and stream.capture is not None:
        stream.capture.status = _Capture.INVALIDATED  # as CUDA 12.8+ does (900, then 901)
        return (_E.cudaErrorStreamCaptureUnsupported, None)
    return _stream_attribute(handle, lambda s: s.device)


class _ThreadContexts(threading.local):
    def __init__(self) -> None:
        self.stack: list[int] = []  # devices of the contexts pushed, innermost last


_contexts = _ThreadContexts()


def _context_device() -> int:
    """The device of the calling thread's current context (the simulator's contexts
    are device numbers; a thread without one pushed uses its current device's)."""
    stack = _contexts.stack
    return stack[-1] if stack else _current.device


def cuDeviceGetCount() -> tuple[Any, int]:
    return cudaGetDeviceCount()


def cuDevicePrimaryCtxRetain(device: int) -> tuple[Any, ...]:
    if not 0 <= device < len(_PHYSICAL):
        return (_E.cudaErrorInvalidDevice, None)
    return CU_SUCCESS, device


def cuCtxGetCurrent() -> tuple[Any, int]:
    return CU_SUCCESS, _context_device()


def cuCtxSetCurrent(context: int) -> tuple[Any]:
    stack = _contexts.stack
    if stack:
        stack[-1] = context
    else:
        _current.device = context
    return (CU_SUCCESS,)


def cuCtxSynchronize() -> tuple[Any]:
    device = _context_device()
    if _prohibited(device):
        return (_E(_UNSAFE),)
    streams = [s for s in list(_streams.values()) if s.device == device]
    for stream in [_devices[device].legacy, *streams, *list(_devices[device].per_thread)]:
        tail = stream.tail
        if tail is not None:
            tail.done.wait()
    return (_E(_devices[device].sticky),)


def cuStreamCreateWithPriority(flags: int, priority: int) -> tuple[Any, ...]:
    return cudaStreamCreateWithPriority(flags, priority)


def cuStreamDestroy(handle: int) -> tuple[Any]:
    return cudaStreamDestroy(handle)


def cuEventCreate(flags: int) -> tuple[Any, ...]:
    return cudaEventCreateWithFlags(flags)


def cuEventDestroy(handle: int) -> tuple[Any]:
    return cudaEventDestroy(handle)


def cuThreadExchangeStreamCaptureMode(mode: int) -> tuple[Any, ...]:
    if mode not in tuple(_Mode):
        return (_E.cudaErrorInvalidValue, None)
    previous, _current.mode = _current.mode, int(mode)
    return CU_SUCCESS, previous


def cuStreamGetCtx(handle: int) -> tuple[Any, ...]:
    """A stream's context: here, its device's number (a capture allows the call)."""
    stream = _stream(handle)
    if stream is None:
        return (_E.cudaErrorInvalidResourceHandle, None)
    return CU_SUCCESS, stream.device


def cuCtxPushCurrent(context: int) -> tuple[Any]:
    _contexts.stack.append(context)
    return (CU_SUCCESS,)


def cuCtxPopCurrent() -> tuple[Any, ...]:
    if not _contexts.stack:
        return (_E.cudaErrorInvalidValue, None)
    return CU_SUCCESS, _contexts.stack.pop()


def cuCtxGetDevice() -> tuple[Any, ...]:
    stack = _contexts.stack
    return CU_SUCCESS, stack[-1] if stack else _current.device


def cudaStreamGetPriority(handle: int) -> tuple[Any, ...]:
    return _stream_attribute(handle, lambda s: s.priority)


def cudaStreamGetFlags(handle: int) -> tuple[Any, ...]:
    return _stream_attribute(handle, lambda s: s.flags)


def cudaStreamIsCapturing(handle: int) -> tuple[Any, ...]:
    return _stream_attribute(
        handle, lambda s: CAPTURE_STATUS_NONE if s.capture is None else int(s.capture.status)
    )


def cudaStreamGetCaptureInfo(handle: int) -> tuple[Any, ...]:
    stream = _stream(handle)
    if stream is None:
        return (_E.cudaErrorInvalidResourceHandle, None, 0, None, [], [], 0)
    capture = stream.capture
    if capture is None:
        return (SUCCESS, CAPTURE_STATUS_NONE, 0, None, [], [], 0)
    return (SUCCESS, capture.status, id(capture), capture, [], [], 0)


def cudaUserObjectCreate(
    argument: int, destructor: int, refcount: int, flags: int
) -> tuple[Any, ...]:
    return SUCCESS, (destructor, argument)


def cudaGraphRetainUserObject(
    graph: _Graph, user_object: tuple[int, int], count: int, flags: int
) -> tuple[Any]:
    graph.user_objects.append(user_object)
    return (SUCCESS,)


def cudaUserObjectRelease(user_object: tuple[int, int], count: int) -> tuple[Any]:
    destructor, argument = user_object  # the last reference: the destructor runs
    _native.call_host_function(destructor, argument)
    return (SUCCESS,)


def cudaEventCreateWithFlags(flags: int) -> tuple[Any, ...]:
    if flags & ~(EVENT_BLOCKING_SYNC | EVENT_DISABLE_TIMING | EVENT_INTERPROCESS):
        return (_E.cudaErrorInvalidValue, None)
    if flags & EVENT_INTERPROCESS and not flags & EVENT_DISABLE_TIMING:
        return (_E.cudaErrorInvalidValue, None)
    device = _context_device()
    if _prohibited(device):
        return (_E(_UNSAFE), None)
    handle = next(_handles)
    _events[handle] = _Event(handle, device, flags)
    return SUCCESS, handle


def cudaEventDestroy(handle: int) -> tuple[Any]:
    event = _events.get(handle)
    if event is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    if _prohibited(event.device):
        return (_E(_UNSAFE),)
    _events.pop(handle, None)
    return (SUCCESS,)


def cudaEventRecord(event: int, stream: int) -> tuple[Any]:
    return (_E(_record(event, stream)),)


def cudaEventQuery(handle: int) -> tuple[Any]:
    return (_E(event_query(handle)),)


def cudaEventElapsedTime(start: int, end: int) -> tuple[Any, ...]:
    events = [_events.get(start), _events.get(end)]
    if None in events:
        return (_E.cudaErrorInvalidResourceHandle, None)
    first, last = events
    assert first is not None and last is not None
    if (first.flags | last.flags) & EVENT_DISABLE_TIMING:
        return (_E.cudaErrorInvalidResourceHandle, None)
    if event_query(start) or event_query(end):
        return (_E.cudaErrorNotReady, None)
    if first.recorded_at is None or last.recorded_at is None:
        return (_E.cudaErrorInvalidResourceHandle, None)
    return SUCCESS, (last.recorded_at - first.recorded_at) * 1000.0


class _HostFunctionThread(threading.local):
    running = False  # whether this thread is inside a host function now


_host_function_thread = _HostFunctionThread()


def _run_host_function(function: int, user_data: int) -> None:
    if function == _native.SEM_POST_ADDRESS:
        # As on a GPU, libc's sem_post returns at once: called with the GIL held,
        # the stream's worker need not wait to take the GIL back after it.
        _native.post(user_data)
        return
    _host_function_thread.running = True
    try:
        _native.call_host_function(function, user_data)
    finally:
        _host_function_thread.running = False


def _not_permitted_in_host_functions(function: Callable[..., Any]) -> Callable[..., Any]:
    """CUDA's rule: every CUDA call made from a host function fails, cudaErrorNotPermitted."""
    refusal: Any = int(_E.cudaErrorNotPermitted)
    if function.__name__ not in DIRECT_CALLS:
        refusal = (_E.cudaErrorNotPermitted,)

    @functools.wraps(function)
    def guarded(*args: Any) -> Any:
        if _host_function_thread.running:
            return refusal
        return function(*args)

    return guarded


def handle_is_valid(ptr: int) -> bool:
    """The simulator knows its handles: anything else is refused."""
    return ptr <= 2 or ptr in _streams or ptr in _events


# -- what extstream.sim offers tests and demos ---------------------------------


def busy(handle: int, seconds: float) -> int:
    """Queue work that keeps the stream busy for *seconds*."""
    return _submit(handle, ("busy", seconds), lambda: time.sleep(seconds))[0]


def inject_error(handle: int, code: int) -> int:
    """Make the stream's next work fail with *code* (sticky codes break the device)."""
    stream = _stream(handle)
    if stream is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    if code not in _STICKY:
        stream.pending_error = code
        return 0

    def fault() -> None:
        _devices[stream.device].sticky = code

    return _submit(handle, ("error", error_name(code)), fault)[0]


def history(handle: int) -> list[tuple[Any, ...]] | None:
    """What ran on the stream, in order; None for an unknown handle."""
    stream = _stream(handle)
    return None if stream is None else list(stream.history)


def begin_capture(handle: int, mode: int = _Mode.GLOBAL) -> int:
    stream = _stream(handle)
    if stream is None:
        return ERROR_INVALID_RESOURCE_HANDLE
    if stream.capture is not None or mode not in tuple(_Mode):
        return int(_E.cudaErrorIllegalState)
    stream.capture = _Graph(stream, int(mode))
    _captures.append(stream.capture)
    return 0


def end_capture(handle: int) -> tuple[int, _Graph | None]:
    stream = _stream(handle)
    if stream is None or stream.capture is None:
        return ERROR_INVALID_RESOURCE_HANDLE, None
    graph, stream.capture = stream.capture, None
    _captures.remove(graph)
    if graph.status is _Capture.INVALIDATED:
        graph.destroy()
        return int(_E.cudaErrorStreamCaptureInvalidated), None
    return 0, graph


def reset_device(device: int) -> None:
    """Clear a sticky error (what a fresh process would start with)."""
    _devices[device].sticky = 0


for _name in __all__:
    _value = globals()[_name]
    if (_name.startswith("cu") or _name in DIRECT_CALLS) and not isinstance(_value, type):
        globals()[_name] = _not_permitted_in_host_functions(_value)
del _name, _value
