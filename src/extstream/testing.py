"""What test suites and extstream's pytest plugin ask of extstream, as public functions.

Importing this module chooses no backend and imports no ``cuda.bindings``: the
plugin must be able to read the environment before it picks the backend
(``EXTSTREAM_BACKEND``), so each function imports what it needs when called.
"""

from __future__ import annotations

import sys

from . import _config

__all__ = [
    "backend_chosen",
    "captured_callbacks",
    "devices",
    "gpu_required_by_environment",
    "header_lines",
    "pending_callbacks",
]


def gpu_required_by_environment() -> bool:
    """``EXTSTREAM_REQUIRE_GPU``: True, False, or ``ValueError`` naming a bad value."""
    return _config.gpu_required()


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
