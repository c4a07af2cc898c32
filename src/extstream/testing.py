"""What test suites and extstream's pytest plugin ask of extstream, as public functions.

Importing this module chooses no backend and imports no ``cuda.bindings``: the
plugin must be able to read the environment before it picks the backend
(``EXTSTREAM_BACKEND``), so each function imports what it needs when called.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from . import _config

__all__ = [
    "backend_chosen",
    "busy",
    "captured_callbacks",
    "devices",
    "gpu_required_by_environment",
    "header_lines",
    "pending_callbacks",
    "prepare_fault",
    "requested_backend",
    "simulated_device_count",
]


def gpu_required_by_environment() -> bool:
    """``EXTSTREAM_REQUIRE_GPU``: True, False, or ``ValueError`` naming a bad value."""
    return _config.gpu_required()


def requested_backend() -> str:
    """``EXTSTREAM_BACKEND`` as extstream reads it: ``"cuda"`` (also when unset) or ``"sim"``."""
    return _config.backend()


def simulated_device_count() -> int:
    """``EXTSTREAM_SIM_DEVICES``: the devices of the machine the simulator models."""
    return _config.sim_device_count()


def backend_chosen() -> bool:
    """Whether extstream's backend was chosen (it is, once anything used CUDA names)."""
    return "extstream._backend" in sys.modules


def devices() -> tuple[int, str | None]:
    """``(device count, why there is none)``; the reason is None when there are devices."""
    from . import _device
    from ._errors import CudaError

    try:
        return _device.device_count(), None
    except CudaError as exc:
        return 0, f"no CUDA GPU: {exc}"


def header_lines() -> list[str]:
    """What a test report's header says of extstream: version, backend, devices, driver."""
    from . import _device
    from ._backend import NAME, cuda
    from ._version import __version__

    line = f"extstream {__version__}: backend {NAME}, cuda-bindings {cuda.BINDINGS_VERSION}"
    count, reason = devices()
    if reason is not None:
        return [line, f"extstream: {reason}"]
    names = ", ".join(_device.device_name(device) for device in range(count))
    driver = _device.versions()[0]
    return [line, f"extstream: {count} device(s): {names}; driver {driver}"]


def pending_callbacks() -> int:
    """Host callbacks launched that have not run yet (those kept for graphs not counted)."""
    from . import _callbacks

    return _callbacks.pending_count()


def captured_callbacks() -> int:
    """Host callbacks kept for CUDA graphs that still exist."""
    from . import _callbacks

    return _callbacks.captured_count()


def busy(stream: object, seconds: float) -> None:
    """Queue work that keeps *stream* busy for about *seconds* (no data touched).

    On the simulator its busy work; on a GPU torch's sleep kernel (about 1.98e9
    cycles a second at full clock), so torch must be installed.
    """
    from ._interop import without_cuda
    from ._stream import as_stream
    from .sim import active
    from .sim import busy as sim_busy

    target = as_stream(stream)
    if active():
        sim_busy(target, seconds)
        return
    torch = _needs("torch", "busy()")
    reason = without_cuda("torch", torch)
    if reason is not None:
        raise RuntimeError(f"extstream.testing.busy() needs a CUDA build of torch: {reason}")
    with torch.cuda.device(target.device_id):
        torch_stream = torch.cuda.ExternalStream(target.ptr, device=target.device_id)
        with torch.cuda.stream(torch_stream):
            torch.cuda._sleep(int(seconds * 1.98e9))


def prepare_fault() -> Callable[[object], None]:
    """A function that queues a kernel fault (an illegal address) on a stream.

    On a GPU a CuPy kernel writing through NULL, compiled now, so that queuing it
    later takes no compile time. The fault loses the process's CUDA context for
    good: use it in a child process. On the simulator a sticky injected error.
    """
    from ._stream import as_stream
    from .sim import active, inject_error

    if active():
        return lambda stream: inject_error(stream, "cudaErrorIllegalAddress")
    cupy = _needs("cupy", "prepare_fault()")
    kernel = cupy.RawKernel(
        r'extern "C" __global__ void write_null(int* p) { *p = 1; }', "write_null"
    )
    kernel.compile()

    def fault(stream: object) -> None:
        target = as_stream(stream)
        with cupy.cuda.Device(target.device_id):
            cupy_stream = cupy.cuda.Stream.from_external(target)
            with cupy_stream:
                kernel((1,), (1,), (cupy.uint64(0),))

    return fault


def _needs(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"extstream.testing.{what} needs {module} on a GPU") from None
