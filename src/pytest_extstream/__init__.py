"""pytest plugin for suites that need CUDA streams (registered as ``pytest_extstream``).

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

The backend must be chosen before extstream first uses it: this module talks
to extstream through ``extstream.testing``, whose import chooses none, and
through the public API after that.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import extstream
from extstream import testing

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
    try:
        return testing.gpu_required_by_environment()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    if testing.backend_chosen():
        raise pytest.UsageError(
            "extstream's CUDA backend was loaded before pytest could choose the simulator; "
            "set EXTSTREAM_BACKEND=sim before using extstream"
        )
    os.environ["EXTSTREAM_BACKEND"] = "sim"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gpu: needs CUDA behaviour (a GPU, or the extstream simulator)"
    )
    config.addinivalue_line("markers", "multi_gpu(n): needs at least n CUDA devices")
    _env_requires_gpu()  # a bad value is a usage error now, not a surprise at the first skip
    if "EXTSTREAM_CHECK" not in os.environ:
        extstream.set_debug_checks(True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return testing.header_lines()


def pytest_runtest_setup(item: pytest.Item) -> None:
    gpu = item.get_closest_marker("gpu")
    multi = item.get_closest_marker("multi_gpu")
    if gpu is None and multi is None:
        return
    count, reason = testing.devices()
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
    stream = extstream.Stream()
    try:
        yield stream
        stream.synchronize(timeout=30)
    finally:
        stream.close()


@pytest.fixture
def cuda_event() -> Iterator[Callable[..., Any]]:
    """A factory of :class:`extstream.Event` objects, all closed after the test."""
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
    count, reason = testing.devices()
    before = [extstream.get_current_stream(d) for d in range(count)] if reason is None else []
    pending = testing.pending_callbacks()
    yield
    problems = []
    for device, stream in enumerate(before):
        now = extstream.get_current_stream(device)
        if now != stream:
            problems.append(f"left {now!r} current on device {device} (was {stream!r})")
            stream.use()
    deadline = time.monotonic() + 5
    while testing.pending_callbacks() > pending and time.monotonic() < deadline:
        time.sleep(0.005)
    if testing.pending_callbacks() > pending:
        problems.append(f"left {testing.pending_callbacks() - pending} host callback(s) pending")
    if problems:
        pytest.fail("extstream guard: " + "; ".join(problems), pytrace=False)
