"""pytest plugin for suites that need CUDA streams (registered as ``pytest_extstream``).

It claims only names of its own, so that installing extstream changes no other
project's results:

- Markers: ``extstream_gpu`` (needs CUDA behaviour: a real GPU, or the simulator
  when the session runs on it; otherwise skipped with the reason) and
  ``extstream_multi_gpu(n)``. ``--require-gpu`` or ``EXTSTREAM_REQUIRE_GPU=1``
  turns those skips into failures.
- ``--extstream-sim`` runs the session on extstream's CPU simulator; the ini
  option ``extstream_sim_without_gpu = true`` does so only where no GPU is found.
- ``--extstream-gpu-per-worker`` (or the ini option ``extstream_gpu_per_worker``):
  under pytest-xdist, worker *k* sees only GPU ``k mod n`` of the *n* that the
  outer ``CUDA_VISIBLE_DEVICES`` allows (or of all), set before CUDA starts there:
  the controller passes its device list and its choice of backend (simulated or
  not) to the workers, which pin their GPU before anything could call cuInit.
- Fixtures: ``extstream_stream`` (a fresh stream per test), ``extstream_event``
  (an event factory), and a guard on every ``extstream_gpu`` test that fails it
  if it leaves a different current stream or host callbacks pending.
- Debug checks (``EXTSTREAM_CHECK``) are on inside ``extstream_gpu`` tests,
  unless that variable says otherwise.
- The ini option ``extstream_generic_names = true`` also gives the plugin's
  earlier, generic names, for suites that migrate: markers ``gpu`` and
  ``multi_gpu(n)``, fixtures ``cuda_stream`` and ``cuda_event``.
- After collection, the report shows the backend, devices, driver and
  cuda-bindings versions, when a collected test uses extstream.

It stays out of sessions that do not use it: no ``cuda.bindings`` import and no
CUDA call unless a collected test carries one of its markers or uses one of its
fixtures, or an extstream option asks for it. The backend must be
chosen before extstream first uses it: this module talks to extstream through
``extstream.testing``, whose import chooses none, and through the public API.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

import extstream
from extstream import testing

_REQUIRE_ENV = "EXTSTREAM_REQUIRE_GPU"
_DEVICES_ENV = "EXTSTREAM_XDIST_DEVICES"  # the controller's device list, for its workers
_SIMULATED_ENV = "EXTSTREAM_XDIST_SIMULATED"  # the controller's choice, "1" or "0"
_GENERIC_INI = "extstream_generic_names"
# The plugin's own names, and the generic ones a project may opt in to (as the
# plugin's earlier versions had them).
_GPU, _MULTI_GPU = "extstream_gpu", "extstream_multi_gpu"
_GENERIC_MARKERS: Final = {_GPU: "gpu", _MULTI_GPU: "multi_gpu"}
_GENERIC_FIXTURES: Final = {"extstream_stream": "cuda_stream", "extstream_event": "cuda_event"}


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
        help=f"fail extstream_gpu tests instead of skipping them without a GPU ({_REQUIRE_ENV}=1)",
    )
    group.addoption(
        "--extstream-gpu-per-worker",
        action="store_true",
        help="under pytest-xdist, give each worker one GPU (worker k: GPU k mod n)",
    )
    parser.addini(
        "extstream_sim_without_gpu",
        type="bool",
        default=False,
        help="where no GPU is found, run extstream_gpu tests on the simulator instead of skipping",
    )
    parser.addini(
        "extstream_gpu_per_worker",
        type="bool",
        default=False,
        help="under pytest-xdist, give each worker one GPU (--extstream-gpu-per-worker)",
    )
    parser.addini(
        _GENERIC_INI,
        type="bool",
        default=False,
        help="also claim the generic names gpu, multi_gpu (markers) and cuda_stream, "
        "cuda_event (fixtures), as the plugin's earlier versions did",
    )


def _env_requires_gpu() -> bool:
    try:
        return testing.gpu_required_by_environment()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _gpu_required(config: pytest.Config) -> bool:
    return bool(config.getoption("--require-gpu", default=False)) or _env_requires_gpu()


def _driver_device_count() -> int:
    """Ask the driver directly (0 without one): extstream must not choose its backend yet."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _simulating(args: list[str], config: pytest.Config) -> bool:
    if os.environ.get("EXTSTREAM_BACKEND"):
        return testing.requested_backend() == "sim"
    return "--extstream-sim" in args or bool(
        config.getini("extstream_sim_without_gpu")
        and "--require-gpu" not in args
        and not _env_requires_gpu()
        and not _driver_device_count()
    )


def _gpu_per_worker(args: list[str], config: pytest.Config) -> bool:
    return "--extstream-gpu-per-worker" in args or bool(config.getini("extstream_gpu_per_worker"))


def _visible_devices(simulated: bool) -> list[str]:
    """The devices the outer ``CUDA_VISIBLE_DEVICES`` allows, or all (asked in the
    xdist controller, which runs no tests, so that workers start CUDA afresh)."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [item.strip() for item in outer.split(",") if item.strip()]
    count = testing.simulated_device_count() if simulated else _driver_device_count()
    return [str(index) for index in range(count)]


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw3" in worker 3
    per_worker = _gpu_per_worker(args, early_config)
    if worker is not None:
        # CUDA reads CUDA_VISIBLE_DEVICES once, at cuInit: pin this worker's GPU
        # before anything here can start CUDA, then take the controller's choice
        # of backend, so that the worker needs no probe of its own.
        devices = os.environ.get(_DEVICES_ENV)
        if per_worker and devices:
            listed = devices.split(",")
            os.environ["CUDA_VISIBLE_DEVICES"] = listed[int(worker[2:]) % len(listed)]
        choice = os.environ.get(_SIMULATED_ENV)
        simulated = choice == "1" if choice in ("0", "1") else _simulating(args, early_config)
    else:
        simulated = _simulating(args, early_config)
        os.environ[_SIMULATED_ENV] = "1" if simulated else "0"  # for xdist workers
        if per_worker:
            os.environ[_DEVICES_ENV] = ",".join(_visible_devices(simulated))
    if not simulated or os.environ.get("EXTSTREAM_BACKEND"):
        return
    if testing.backend_chosen():
        raise pytest.UsageError(
            "extstream's CUDA backend was loaded before pytest could choose the simulator; "
            "set EXTSTREAM_BACKEND=sim before using extstream"
        )
    os.environ["EXTSTREAM_BACKEND"] = "sim"


class _GenericNames:
    """The generic fixture names, registered only where a project opts in."""

    @pytest.fixture
    def cuda_stream(self, extstream_stream: Any) -> Any:
        """:func:`extstream_stream` under its generic name."""
        return extstream_stream

    @pytest.fixture
    def cuda_event(self, extstream_event: Any) -> Any:
        """:func:`extstream_event` under its generic name."""
        return extstream_event


def _generic(config: pytest.Config) -> bool:
    return bool(config.getini(_GENERIC_INI))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_GPU}: needs CUDA behaviour (a GPU, or the extstream simulator)"
    )
    config.addinivalue_line("markers", f"{_MULTI_GPU}(n): needs at least n CUDA devices")
    if _generic(config):
        config.addinivalue_line("markers", f"gpu: {_GPU} under its generic name ({_GENERIC_INI})")
        config.addinivalue_line(
            "markers", f"multi_gpu(n): {_MULTI_GPU} under its generic name ({_GENERIC_INI})"
        )
        config.pluginmanager.register(_GenericNames(), "pytest_extstream_generic_names")
    _env_requires_gpu()  # a bad value is a usage error now, not a surprise at the first skip


def _marker(item: pytest.Item, name: str) -> pytest.Mark | None:
    """The closest marker *name* of *item*, or its generic twin where the project opted in."""
    mark = item.get_closest_marker(name)
    if mark is None and _generic(item.config):
        mark = item.get_closest_marker(_GENERIC_MARKERS[name])
    return mark


def _uses_extstream(item: pytest.Item) -> bool:
    if _marker(item, _GPU) or _marker(item, _MULTI_GPU):
        return True
    fixtures = set(_GENERIC_FIXTURES)
    if _generic(item.config):
        fixtures.update(_GENERIC_FIXTURES.values())
    return bool(fixtures.intersection(getattr(item, "fixturenames", ())))


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Any, items: list[pytest.Item]
) -> list[str]:
    return testing.header_lines() if any(map(_uses_extstream, items)) else []


def pytest_runtest_setup(item: pytest.Item) -> None:
    gpu = _marker(item, _GPU)
    multi = _marker(item, _MULTI_GPU)
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
def extstream_stream() -> Iterator[Any]:
    """A fresh :class:`extstream.Stream` on the current device, closed after the test."""
    stream = extstream.Stream()
    try:
        yield stream
        stream.synchronize(timeout=30)
    finally:
        stream.close()


@pytest.fixture
def extstream_event() -> Iterator[Callable[..., Any]]:
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
    """In an extstream_gpu test: debug checks on; fail it if it leaves another current
    stream or host callbacks pending."""
    if _marker(request.node, _GPU) is None:
        yield
        return
    checks = extstream.debug_checks_enabled()
    if "EXTSTREAM_CHECK" not in os.environ:
        extstream.set_debug_checks(True)
    count, reason = testing.devices()
    before = [extstream.get_current_stream(d) for d in range(count)] if reason is None else []
    pending = testing.pending_callbacks()
    yield
    extstream.set_debug_checks(checks)
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
