"""pytest plugin for suites that need CUDA streams (registered as ``extstream``).

- Markers: ``gpu`` (needs CUDA behaviour: a real GPU, or the simulator when the
  session runs on it; otherwise skipped with the reason) and ``multi_gpu(n)``.
  ``--require-gpu`` or ``EXTSTREAM_REQUIRE_GPU=1`` turns those skips into failures.
- ``--extstream-sim`` runs the session on extstream's CPU simulator; the ini
  option ``extstream_sim_without_gpu = true`` does so only where no GPU is found.
- Fixtures: ``cuda_stream`` (a fresh stream per test), ``cuda_event`` (an event
  factory), and a guard on every ``gpu`` test that fails it if it leaves a
  different current stream or host callbacks pending.
- Debug checks (``EXTSTREAM_CHECK``) are on unless that variable says otherwise.
- The header shows the backend, devices, driver and cuda-python versions.

This module imports extstream only after choosing the backend, which must
happen before extstream is first imported.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_REQUIRE_ENV = "EXTSTREAM_REQUIRE_GPU"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("extstream")
    group.addoption(
        "--extstream-sim",
        action="store_true",
        help="run the session on extstream's CPU simulator (EXTSTREAM_BACKEND=sim)",
    )
    group.addoption(
        "--require-gpu",
        action="store_true",
        help=f"fail gpu-marked tests instead of skipping them without a GPU ({_REQUIRE_ENV}=1)",
    )
    parser.addini(
        "extstream_sim_without_gpu",
        type="bool",
        default=False,
        help="where no GPU is found, run gpu-marked tests on the simulator instead of skipping",
    )


def _env_requires_gpu() -> bool:
    return os.environ.get(_REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _gpu_required(config: pytest.Config) -> bool:
    return bool(config.getoption("--require-gpu", default=False)) or _env_requires_gpu()


def _driver_sees_a_gpu() -> bool:
    """Ask the driver directly: extstream must not be imported before the backend is chosen."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return (
        driver.cuInit(0) == 0
        and driver.cuDeviceGetCount(ctypes.byref(count)) == 0
        and count.value > 0
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    if os.environ.get("EXTSTREAM_BACKEND"):
        return  # chosen by the caller
    simulate = "--extstream-sim" in args or (
        early_config.getini("extstream_sim_without_gpu")
        and "--require-gpu" not in args
        and not _env_requires_gpu()
        and not _driver_sees_a_gpu()
    )
    if not simulate:
        return
    if "extstream" in sys.modules:
        raise pytest.UsageError(
            "extstream was imported before pytest could choose the simulator backend; "
            "set EXTSTREAM_BACKEND=sim before importing it"
        )
    os.environ["EXTSTREAM_BACKEND"] = "sim"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gpu: needs CUDA behaviour (a GPU, or the extstream simulator)"
    )
    config.addinivalue_line("markers", "multi_gpu(n): needs at least n CUDA devices")
    import extstream

    if "EXTSTREAM_CHECK" not in os.environ:
        extstream.set_debug_checks(True)


def _devices() -> tuple[int, str | None]:
    """(device count, why there is none)."""
    import extstream
    from extstream import _device

    try:
        return _device.device_count(), None
    except extstream.CudaError as exc:
        return 0, f"no CUDA GPU: {exc}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    import extstream
    from extstream._backend import NAME, cuda

    count, reason = _devices()
    line = (
        f"extstream {extstream.__version__}: backend {NAME}, cuda-bindings {cuda.BINDINGS_VERSION}"
    )
    if reason is not None:
        return [line, f"extstream: {reason}"]
    names = []
    for device in range(count):
        err, properties = cuda.cudaGetDeviceProperties(device)
        names.append(properties.name.decode(errors="replace") if err is cuda.SUCCESS else "?")
    driver = cuda.cudaDriverGetVersion()[1]
    version = f"{driver // 1000}.{driver % 1000 // 10}"
    return [line, f"extstream: {count} device(s): {', '.join(names)}; driver {version}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    gpu = item.get_closest_marker("gpu")
    multi = item.get_closest_marker("multi_gpu")
    if gpu is None and multi is None:
        return
    count, reason = _devices()
    needed = 1
    if multi is not None:
        needed = int(multi.args[0]) if multi.args else 2
    if reason is None and count < needed:
        reason = f"needs {needed} CUDA devices, {count} found"
    if reason is None:
        return
    if _gpu_required(item.config):
        pytest.fail(
            f"a GPU is required ({_REQUIRE_ENV} / --require-gpu) but {reason}", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture
def cuda_stream() -> Iterator[Any]:
    """A fresh :class:`extstream.Stream` on the current device, closed after the test."""
    import extstream

    stream = extstream.Stream()
    try:
        yield stream
        stream.synchronize(timeout=30)
    finally:
        stream.close()


@pytest.fixture
def cuda_event() -> Iterator[Callable[..., Any]]:
    """A factory of :class:`extstream.Event` objects, all closed after the test."""
    import extstream

    made: list[extstream.Event] = []

    def make(**options: Any) -> extstream.Event:
        event = extstream.Event(**options)
        made.append(event)
        return event

    yield make
    for event in made:
        event.close()


@pytest.fixture(autouse=True)
def _extstream_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a gpu test that leaves another current stream or host callbacks pending."""
    if request.node.get_closest_marker("gpu") is None:
        yield
        return
    import extstream
    from extstream import _callbacks

    count, reason = _devices()
    before = [extstream.get_current_stream(d) for d in range(count)] if reason is None else []
    pending = _callbacks.pending_count()
    yield
    problems = []
    for device, stream in enumerate(before):
        now = extstream.get_current_stream(device)
        if now != stream:
            problems.append(f"left {now!r} current on device {device} (was {stream!r})")
            stream.use()
    deadline = time.monotonic() + 5
    while _callbacks.pending_count() > pending and time.monotonic() < deadline:
        time.sleep(0.005)
    if _callbacks.pending_count() > pending:
        problems.append(f"left {_callbacks.pending_count() - pending} host callback(s) pending")
    if problems:
        pytest.fail("extstream guard: " + "; ".join(problems), pytrace=False)
