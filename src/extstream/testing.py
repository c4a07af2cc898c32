"""What test suites and extstream's pytest plugin ask of extstream, as public functions.

Importing this module chooses no backend and imports no ``cuda.bindings``: the
plugin must be able to read the environment before it picks the backend
(``EXTSTREAM_BACKEND``), so each function imports what it needs when called.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, Final

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
    if NAME == "sim":  # no CUDA versions to report: none invented
        return [line, f"extstream: {count} simulated device(s): {names}"]
    return [line, f"extstream: {count} device(s): {names}; driver {_device.versions()[0]}"]


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

    On the simulator its busy work; on a GPU torch's sleep kernel, of as many
    cycles as the device's clock rate gives (1.98 GHz where it cannot be read), so
    torch must be installed.
    """
    from ._interop import torch_stream, without_cuda
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
    device = target.device_id
    cycles = int(seconds * _clock_hz(device, torch))
    with torch.cuda.device(device), torch.cuda.stream(torch_stream(torch, target.ptr, device)):
        torch.cuda._sleep(cycles)


_DEFAULT_CLOCK_HZ: Final = 1.98e9  # an H100's boost clock, where none can be read


def _clock_hz(device: int, torch: Any = None) -> float:
    """*device*'s clock rate in Hz: CUDA's ``cudaDevAttrClockRate``, else torch's
    ``get_device_properties(device).clock_rate`` (both kHz), else 1.98 GHz."""
    try:
        runtime = importlib.import_module("cuda.bindings.runtime")
        err, khz = runtime.cudaDeviceGetAttribute(
            runtime.cudaDeviceAttr.cudaDevAttrClockRate, device
        )
        if int(err) == 0 and khz:
            return float(khz) * 1e3
    except Exception:  # noqa: S110 - no CUDA runtime here: ask torch
        pass
    try:
        khz = torch.cuda.get_device_properties(device).clock_rate
        if khz:
            return float(khz) * 1e3
    except Exception:  # noqa: S110 - a torch without the attribute: the default
        pass
    return _DEFAULT_CLOCK_HZ


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
            from_external = getattr(cupy.cuda.Stream, "from_external", None)
            if from_external is not None:  # CuPy 14
                cupy_stream = from_external(target)
            else:  # CuPy 13 has only ExternalStream
                cupy_stream = cupy.cuda.ExternalStream(target.ptr, target.device_id)
            with cupy_stream:
                kernel((1,), (1,), (cupy.uint64(0),))

    return fault


def _needs(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"extstream.testing.{what} needs {module} on a GPU") from None
