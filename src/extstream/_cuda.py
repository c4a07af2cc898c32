"""The backend seam: the only module of extstream that imports ``cuda.bindings``.

Everything else calls CUDA through the names bound here, so a CPU simulator can
stand in for the real runtime by providing the same names with the same call and
return conventions (``(err, *results)`` tuples, ``err is SUCCESS`` on success).
Importing this module never touches the driver: the runtime functions are only
looked up, not called.

The CUDA runtime functions extstream uses, and nothing more:

- streams: cudaStreamCreateWithPriority, cudaStreamDestroy, cudaStreamQuery,
  cudaStreamWaitEvent, cudaStreamGetDevice,
  cudaStreamGetPriority, cudaStreamGetFlags, cudaStreamIsCapturing
- events: cudaEventCreateWithFlags, cudaEventDestroy, cudaEventRecord,
  cudaEventQuery, cudaEventElapsedTime
- devices and versions: cudaGetDevice, cudaSetDevice, cudaGetDeviceCount,
  cudaGetDeviceProperties, cudaDriverGetVersion, cudaRuntimeGetVersion
- errors: cudaGetErrorName, cudaGetErrorString
- graphs (host callbacks captured into one): cudaStreamGetCaptureInfo,
  cudaUserObjectCreate, cudaGraphRetainUserObject, cudaUserObjectRelease

And of the driver, once ``cuInit`` succeeded (so that each runs on the
CPU driver model of tests/driver/ too, and nothing extstream enqueues goes
through cuda.bindings' GIL-taking runtime trampolines): cuDeviceGetCount,
cuDevicePrimaryCtxRetain, cuCtxGetCurrent, cuCtxSetCurrent, cuCtxSynchronize,
cuCtxPushCurrent, cuCtxPopCurrent, cuCtxGetDevice, cuStreamGetCtx,
cuStreamCreateWithPriority, cuStreamDestroy, cuEventCreate, cuEventDestroy,
cuEventRecord, cuStreamWaitEvent, cuThreadExchangeStreamCaptureMode (cuda.bindings releases
the GIL in each).

The hot calls take the cheapest path measured on an H100 (benchmarks/call_paths.py):

- ``stream_query``, ``event_query``, ``stream_is_capturing`` and
  ``launch_host_func`` call the driver's entry points (``cuStreamQuery`` ...)
  through ctypes on an int handle, found once with ``cuGetProcAddress``; this
  skips cuda.bindings' per-call wrapping. Every one releases the GIL (see
  ``_ENTRY_POINTS``). They return the int ``CUresult``. ``cuLaunchHostFunc`` is
  the only way extstream enqueues a host function.
- ``cuEventRecord`` and ``cuStreamWaitEvent`` are cuda.bindings' driver calls on
  prebuilt ``CUevent``/``CUstream`` objects: with two handles, ctypes' argument
  conversion costs more than it saves.

Driver calls need a current context and report driver errors, so callers treat
any status but success (and not-ready, for queries) by repeating the call
through the runtime, which sets up the primary context and gives the runtime's
error. The first call of any of them binds them all; where there is no driver,
they become stand-ins that report failure, so that the runtime path is taken.
cuda.bindings' own driver calls raise (not return) an error where no driver
library exists, so a stream takes the direct path only once
:func:`load_driver_entry_points` succeeded.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, Final

import cuda.bindings
from cuda.bindings import driver as _driver
from cuda.bindings import runtime as _rt

from . import _native

# The backend interface: _sim provides the same names (tests/test_backends.py checks).
__all__ = [
    "BINDINGS_VERSION",
    "CAPTURE_MODE_RELAXED",
    "CAPTURE_STATUS_NONE",
    "CU_SUCCESS",
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
    "STREAM_NON_BLOCKING",
    "SUCCESS",
    "USER_OBJECT_NO_DESTRUCTOR_SYNC",
    "CUevent",
    "CUstream",
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
    "error_name",
    "error_string",
    "event_query",
    "event_t",
    "handle_is_valid",
    "host_fn_t",
    "ipc_handle_bytes",
    "ipc_handle_from_bytes",
    "launch_host_func",
    "load_driver_entry_points",
    "runtime_module",
    "stream_is_capturing",
    "stream_query",
    "stream_t",
]

BINDINGS_VERSION: Final[str] = cuda.bindings.__version__

SUCCESS: Final[Any] = _rt.cudaError_t.cudaSuccess
NOT_READY: Final[Any] = _rt.cudaError_t.cudaErrorNotReady
#: cudaErrorNotReady as an int: the same number in ``CUresult``, which the direct calls return.
NOT_READY_STATUS: Final = int(NOT_READY)
ERROR_INVALID_RESOURCE_HANDLE: Final = int(_rt.cudaError_t.cudaErrorInvalidResourceHandle)
ERROR_NOT_SUPPORTED: Final = int(_rt.cudaError_t.cudaErrorNotSupported)
#: cudaStreamCaptureStatusNone as an int, as both capture queries are compared.
CAPTURE_STATUS_NONE: Final = int(_rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone)

STREAM_NON_BLOCKING: Final = int(_rt.cudaStreamNonBlocking)
EVENT_BLOCKING_SYNC: Final = int(_rt.cudaEventBlockingSync)
EVENT_DISABLE_TIMING: Final = int(_rt.cudaEventDisableTiming)
EVENT_INTERPROCESS: Final = int(_rt.cudaEventInterprocess)

# Runtime handle types, for the runtime path.
stream_t = _rt.cudaStream_t
event_t = _rt.cudaEvent_t
host_fn_t = _rt.cudaHostFn_t

cudaStreamCreateWithPriority = _rt.cudaStreamCreateWithPriority
cudaStreamDestroy = _rt.cudaStreamDestroy
cudaStreamQuery = _rt.cudaStreamQuery
cudaStreamWaitEvent = _rt.cudaStreamWaitEvent
cudaStreamGetDevice = _rt.cudaStreamGetDevice
cudaStreamGetPriority = _rt.cudaStreamGetPriority
cudaStreamGetFlags = _rt.cudaStreamGetFlags
cudaStreamIsCapturing = _rt.cudaStreamIsCapturing
cudaEventCreateWithFlags = _rt.cudaEventCreateWithFlags
cudaEventDestroy = _rt.cudaEventDestroy
cudaEventRecord = _rt.cudaEventRecord
cudaEventQuery = _rt.cudaEventQuery
cudaEventElapsedTime = _rt.cudaEventElapsedTime
cudaGetDevice = _rt.cudaGetDevice
cudaSetDevice = _rt.cudaSetDevice
cudaGetDeviceCount = _rt.cudaGetDeviceCount
cudaGetDeviceProperties = _rt.cudaGetDeviceProperties
cudaDeviceGetStreamPriorityRange = _rt.cudaDeviceGetStreamPriorityRange
cudaDriverGetVersion = _rt.cudaDriverGetVersion
cudaStreamGetCaptureInfo = _rt.cudaStreamGetCaptureInfo
cudaUserObjectCreate = _rt.cudaUserObjectCreate
cudaGraphRetainUserObject = _rt.cudaGraphRetainUserObject
cudaUserObjectRelease = _rt.cudaUserObjectRelease
USER_OBJECT_NO_DESTRUCTOR_SYNC: Final = int(_rt.cudaUserObjectFlags.cudaUserObjectNoDestructorSync)
GRAPH_USER_OBJECT_MOVE: Final = int(_rt.cudaUserObjectRetainFlags.cudaGraphUserObjectMove)
cudaRuntimeGetVersion = _rt.cudaRuntimeGetVersion
# Events shared between processes: a 64-byte handle.
cudaIpcGetEventHandle = _rt.cudaIpcGetEventHandle
cudaIpcOpenEventHandle = _rt.cudaIpcOpenEventHandle
IPC_HANDLE_BYTES: Final = 64  # CUDA_IPC_HANDLE_SIZE


def ipc_handle_bytes(handle: Any) -> bytes:
    """The 64 bytes of a ``cudaIpcEventHandle_t``.

    Read through ``getPtr()``: cuda-bindings 13.4 dropped the ``reserved``
    field that 12.x and 13.0-13.3 have; every version has ``getPtr()``.
    """
    return ctypes.string_at(handle.getPtr(), IPC_HANDLE_BYTES)


def ipc_handle_from_bytes(data: bytes) -> Any:
    """A ``cudaIpcEventHandle_t`` holding *data* (64 bytes, checked by the caller)."""
    handle = _rt.cudaIpcEventHandle_t()
    ctypes.memmove(handle.getPtr(), data, IPC_HANDLE_BYTES)
    return handle


#: The cuda.bindings modules themselves: ``python -m extstream bench`` times
#: their raw calls beside extstream's (None on the simulator).
runtime_module: Final[Any] = _rt
driver_module: Final[Any] = _driver


_FAILED: Final = -1  # the stand-ins' status: not a CUresult, so the runtime path runs


def _loads_first(name: str) -> Callable[..., int]:
    """A stand-in for the ctypes call *name*: binds them all, then makes the call."""

    def stand_in(*args: Any) -> int:
        load_driver_entry_points()
        function: Callable[..., int] = globals()[name]
        return function(*args)

    return stand_in


stream_query: Callable[[int], int] = _loads_first("stream_query")
event_query: Callable[[int], int] = _loads_first("event_query")
launch_host_func: Callable[[int, int, int], int] = _loads_first("launch_host_func")
# (stream, address of an int that receives the CUstreamCaptureStatus)
stream_is_capturing: Callable[[int, int], int] = _loads_first("stream_is_capturing")

CUstream = _driver.CUstream
CUevent = _driver.CUevent
CU_SUCCESS: Final[Any] = _driver.CUresult.CUDA_SUCCESS
cuEventRecord = _driver.cuEventRecord
cuStreamWaitEvent = _driver.cuStreamWaitEvent
# A stream's device from its context: allowed during capture, on any 12.x driver.
cuStreamGetCtx = _driver.cuStreamGetCtx
cuCtxPushCurrent = _driver.cuCtxPushCurrent
cuCtxPopCurrent = _driver.cuCtxPopCurrent
cuCtxGetDevice = _driver.cuCtxGetDevice
cuCtxSetCurrent = _driver.cuCtxSetCurrent
cuCtxGetCurrent = _driver.cuCtxGetCurrent
cuCtxSynchronize = _driver.cuCtxSynchronize
cuDeviceGetCount = _driver.cuDeviceGetCount
cuDevicePrimaryCtxRetain = _driver.cuDevicePrimaryCtxRetain
cuStreamCreateWithPriority = _driver.cuStreamCreateWithPriority
cuStreamDestroy = _driver.cuStreamDestroy
cuEventCreate = _driver.cuEventCreate
cuEventDestroy = _driver.cuEventDestroy
cuThreadExchangeStreamCaptureMode = _driver.cuThreadExchangeStreamCaptureMode
CAPTURE_MODE_RELAXED: Final[Any] = _driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
#: CUDA_ERROR_INVALID_CONTEXT: a special handle (0, 1, 2) used where no context is current.
ERROR_INVALID_CONTEXT: Final = int(_driver.CUresult.CUDA_ERROR_INVALID_CONTEXT)

_P: Final = ctypes.c_void_p
# Every entry point releases the GIL (CFUNCTYPE). CUDA promises nothing about a
# call not waiting while a host function of its context runs, and a held
# callback needs the GIL on CUDA's thread: a query that kept the GIL (PYFUNCTYPE,
# about 120 ns cheaper) could deadlock with it, and Ctrl-C could not break that.
# tests/driver/ models exactly that driver.
_ENTRY_POINTS: Final[dict[str, tuple[str, tuple[Any, ...]]]] = {
    "stream_query": ("cuStreamQuery", (_P,)),
    "event_query": ("cuEventQuery", (_P,)),
    "launch_host_func": ("cuLaunchHostFunc", (_P, _P, _P)),
    "stream_is_capturing": ("cuStreamIsCapturing", (_P, _P)),
}
#: The names of the ctypes driver calls.
DIRECT_CALLS: Final = frozenset(_ENTRY_POINTS)
_load_lock = threading.Lock()
#: Whether the ctypes calls reach the driver (False: every call takes the runtime path).
direct_driver_calls = False
_load_tried = False


def _always_failed(*args: object) -> int:
    return _FAILED


def _after_fork_in_child() -> None:
    global _load_lock  # another thread may have held it at the fork
    _load_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def load_driver_entry_points() -> bool:
    """Bind the ctypes driver calls (once); False where the driver cannot give them.

    After the first call an answer costs no lock: ``_load_tried`` is set only once
    ``direct_driver_calls`` holds the final answer.
    """
    global _load_tried, direct_driver_calls
    if _load_tried:
        return direct_driver_calls
    with _load_lock:
        if _load_tried:
            return direct_driver_calls
        functions: dict[str, Any] = {}
        try:
            # No device or no usable driver (cuInit fails): the runtime path reports it.
            entries = _ENTRY_POINTS.items() if _driver.cuInit(0)[0] == CU_SUCCESS else ()
            flags = _default_stream_flags()
            for name, (symbol, argtypes) in entries:
                err, address, _ = _driver.cuGetProcAddress(symbol.encode(), 12000, flags)
                if err != CU_SUCCESS or not int(address):
                    break
                functions[name] = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(int(address))
        except Exception:  # noqa: S110 - no driver library: the runtime path reports it
            pass
        complete = len(functions) == len(_ENTRY_POINTS)
        for name in _ENTRY_POINTS:
            globals()[name] = functions[name] if complete else _always_failed
        direct_driver_calls = complete
        _load_tried = True
        return complete


def _default_stream_flags() -> Any:
    """The ``cuGetProcAddress`` flags that give handle 0 the meaning cuda.bindings gives
    it: its driver module fetches every function for the per-thread default stream
    when ``CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM`` is a non-zero int, so that
    queries and launches on 0 reach the stream its records and waits reach."""
    flags = _driver.CUdriverProcAddress_flags
    try:
        per_thread = bool(int(os.environ.get("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", "0")))
    except ValueError:  # cuda.bindings itself refuses such a value
        per_thread = False
    if per_thread:
        return flags.CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
    return flags.CU_GET_PROC_ADDRESS_LEGACY_STREAM


def error_name(status: int) -> str:
    """``cudaErrorX`` for a status code; works without a driver."""
    try:
        err, name = _rt.cudaGetErrorName(_rt.cudaError_t(status))
    except ValueError:  # not a status this cuda-python knows
        return f"cudaError{status}"
    return name.decode() if err is SUCCESS else f"cudaError{status}"


def error_string(status: int) -> str:
    """CUDA's one-line explanation of a status code; works without a driver."""
    try:
        err, text = _rt.cudaGetErrorString(_rt.cudaError_t(status))
    except ValueError:
        return "unknown CUDA error"
    return text.decode() if err is SUCCESS else "unknown CUDA error"


def handle_is_valid(ptr: int) -> bool:
    """Whether *ptr* may be handed to CUDA as a stream or event handle.

    CUDA dereferences a handle without checking it, so an address that is not
    mapped in this process kills it with SIGSEGV. The real runtime cannot tell a
    stream from other readable memory, but it can refuse unreadable addresses.
    """
    return ptr <= 2 or _native.address_is_readable(ptr)
