"""The pytest plugin, run on small suites in a child pytest."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT

GPU_TESTS = """
import pytest
import extstream
from extstream import sim

@pytest.mark.extstream_gpu
def test_stream_fixture(extstream_stream):
    assert isinstance(extstream_stream, extstream.Stream)
    sim.busy(extstream_stream, 0.05)
    assert not extstream_stream.done

@pytest.mark.extstream_gpu
def test_event_factory(extstream_stream, extstream_event):
    start, end = extstream_event(timing=True), extstream_event(timing=True)
    start.record(extstream_stream)
    end.record(extstream_stream)
    assert start.elapsed_time(end) >= 0

@pytest.mark.extstream_gpu
def test_debug_checks_are_on_in_extstream_gpu_tests():
    assert extstream.debug_checks_enabled()

def test_and_off_elsewhere():
    assert not extstream.debug_checks_enabled()
"""


Child = Callable[..., pytest.RunResult]
# What this session's plugin sets, and a child session must choose afresh.
ENVIRONMENT = (
    "EXTSTREAM_BACKEND",
    "EXTSTREAM_REQUIRE_GPU",
    "EXTSTREAM_CHECK",
    "EXTSTREAM_XDIST_DEVICES",
    "EXTSTREAM_XDIST_SIMULATED",
)


@pytest.fixture
def child(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Child:
    """Run pytest in a child process on *source*, with extstream's plugin loaded.

    ``-p pytest_extstream`` also where the plugin's entry point loads it (CI
    installs extstream): naming it both ways must work.
    """
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    # Under `pytest -n`, this test runs in an xdist worker: the child is a session
    # of its own, not that worker (the plugin reads these to find its worker).
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))

    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_child=source)
        return pytester.runpytest_subprocess(
            "-p", "pytest_extstream", "-p", "no:cacheprovider", *args
        )

    return run


def test_simulator_option_runs_gpu_tests_with_fixtures(child: Child) -> None:
    result = child(GPU_TESTS, "--extstream-sim")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["extstream *: backend sim*", "extstream: 1 simulated device(s)*"])


def test_gpu_tests_skip_without_gpu_and_fail_when_required(
    child: Child, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTSTREAM_BACKEND", "cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    child(GPU_TESTS).assert_outcomes(passed=1, skipped=3)
    child(GPU_TESTS, "--require-gpu").assert_outcomes(passed=1, errors=3)
    monkeypatch.setenv("EXTSTREAM_REQUIRE_GPU", "off")
    child(GPU_TESTS).assert_outcomes(passed=1, skipped=3)
    monkeypatch.setenv("EXTSTREAM_REQUIRE_GPU", "1")
    child(GPU_TESTS).assert_outcomes(passed=1, errors=3)


def test_a_bad_require_gpu_value_is_a_usage_error_naming_it(
    child: Child, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin reads the variable as extstream does: "maybe" is neither yes nor no.
    monkeypatch.setenv("EXTSTREAM_REQUIRE_GPU", "maybe")
    result = child(GPU_TESTS, "--extstream-sim")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*EXTSTREAM_REQUIRE_GPU='maybe' is not a boolean*"])


def test_guard_fails_a_test_that_leaves_a_current_stream(child: Child) -> None:
    source = """
import pytest
import extstream

@pytest.mark.extstream_gpu
def test_leaks(extstream_stream):
    extstream_stream.use()

@pytest.mark.extstream_gpu
def test_next_one_starts_clean():
    assert extstream.get_current_stream().ptr == 0
"""
    result = child(source, "--extstream-sim")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*extstream guard: left <extstream.Stream * current on device 0*"])


def test_multi_gpu_marker(child: Child, monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
import pytest
import extstream

@pytest.mark.extstream_multi_gpu(2)
def test_two():
    assert extstream.Stream(1).device_id == 1
"""
    child(source, "--extstream-sim").assert_outcomes(skipped=1)
    monkeypatch.setenv("EXTSTREAM_SIM_DEVICES", "2")
    child(source, "--extstream-sim").assert_outcomes(passed=1)


def test_works_with_xdist(child: Child) -> None:
    pytest.importorskip("xdist")
    result = child(GPU_TESTS, "--extstream-sim", "-n", "2")
    result.assert_outcomes(passed=4)


def test_each_xdist_worker_gets_its_own_gpu(
    child: Child, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("EXTSTREAM_SIM_DEVICES", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    source = """
import os
import pytest
from extstream import testing

@pytest.mark.extstream_gpu
@pytest.mark.parametrize("i", range(8))
def test_device(i, worker_id):
    lines = testing.header_lines()
    with open(f"seen-{worker_id}-{i}", "w") as out:
        out.write(os.environ["CUDA_VISIBLE_DEVICES"] + " " + lines[1])
"""
    result = child(
        source, "--extstream-sim", "-n", "2", "--dist", "each", "--extstream-gpu-per-worker"
    )
    result.assert_outcomes(passed=16)  # every test on each worker
    seen: dict[str, set[str]] = {}
    for path in pytester.path.glob("seen-*"):
        seen.setdefault(path.name.split("-")[1], set()).add(path.read_text())
    # Each worker sees one device, its own: device 0 there is a different GPU.
    assert (
        seen
        == {
            "gw0": {"0 extstream: 1 simulated device(s): extstream simulator device 0"},
            "gw1": {"1 extstream: 1 simulated device(s): extstream simulator device 1"},
        }
        or len(seen) == 1
    )  # xdist may give one worker every test


def test_an_outer_cuda_visible_devices_is_honoured(
    child: Child, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("EXTSTREAM_SIM_DEVICES", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,1")
    source = """
import os
import pytest

@pytest.mark.extstream_gpu
@pytest.mark.parametrize("i", range(6))
def test_device(i, worker_id):
    with open(f"seen-{worker_id}-{i}", "w") as out:
        out.write(os.environ["CUDA_VISIBLE_DEVICES"])
"""
    result = child(
        source, "--extstream-sim", "-n", "2", "--dist", "each", "--extstream-gpu-per-worker"
    )
    result.assert_outcomes(passed=12)
    seen = {path.name.split("-")[1]: path.read_text() for path in pytester.path.glob("seen-*")}
    assert seen == {"gw0": "2", "gw1": "1"}  # worker k: the k-th device the outer list allows


def test_a_session_that_does_not_use_it_is_left_alone(child: Child) -> None:
    # A downstream library's CPU unit tests: no cuda.bindings, no CUDA call, no
    # header, no debug checks (a fake handle with a given device costs no CUDA call).
    unrelated = """
import sys

def test_plain():
    assert 1 + 1 == 2

def test_nothing_of_cuda_was_imported():
    # cuda-bindings 12.9 itself imports the bare "cuda" namespace at start-up;
    # extstream's backend (and so cuda.bindings) loads only when CUDA is used.
    loaded = [name for name in sys.modules if name.startswith("cuda.")]
    assert not loaded and "extstream._backend" not in sys.modules
"""
    result = child(unrelated)
    result.assert_outcomes(passed=2)
    assert not [line for line in result.outlines if line.startswith("extstream")]  # no header
    fake_handle = """
import extstream

def test_a_fake_handle_with_its_device():
    assert extstream.ExternalStream(0x1000, 0).ptr == 0x1000
"""
    child(fake_handle).assert_outcomes(passed=1)


def test_the_generic_names_are_an_opt_in(child: Child, pytester: pytest.Pytester) -> None:
    generic = """
import pytest
import extstream

@pytest.mark.gpu
def test_old_names(cuda_stream, cuda_event):
    assert isinstance(cuda_stream, extstream.Stream)
    assert isinstance(cuda_event(), extstream.Event)
    assert extstream.debug_checks_enabled()  # the guard knows the generic marker too

@pytest.mark.multi_gpu(2)
def test_two():
    pass
"""
    # Without the opt-in the names are not extstream's: an unknown marker, no fixture.
    result = child(generic, "--extstream-sim", "--strict-markers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'gpu' not found in `markers` configuration option*"])
    pytester.makeini("[pytest]\nextstream_generic_names = true\n")
    result = child(generic, "--extstream-sim", "--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["extstream *: backend sim*", "*needs 2 CUDA devices, 1 found*"])


DOWNSTREAM_CONFTEST = """
import pytest

def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: this project's own meaning: run on its GPU pool")

def pytest_runtest_setup(item):
    mark = item.get_closest_marker("gpu")
    if mark is not None and mark.kwargs.get("pool") == "offline":
        pytest.skip("downstream: the offline pool")

@pytest.fixture
def cuda_stream():
    return "the project's own stream"
"""

DOWNSTREAM_TESTS = """
import sys
import pytest

@pytest.mark.gpu
def test_its_gpu_marker_means_its_own_thing():
    assert "extstream._backend" not in sys.modules
    assert not [name for name in sys.modules if name.startswith("cuda.")]

@pytest.mark.gpu(pool="offline")
def test_its_own_skip():
    pass

@pytest.mark.multi_gpu
def test_an_unregistered_marker_stays_unregistered():
    pass

def test_its_own_fixture(cuda_stream):
    assert cuda_stream == "the project's own stream"

def test_plain():
    pass
"""


def test_a_downstream_project_with_its_own_names_gets_the_same_results(
    child: Child, pytester: pytest.Pytester
) -> None:
    # A project with its own `gpu` marker and `cuda_stream` fixture, which never uses
    # extstream: installing extstream must change nothing in its results.
    pytester.makeconftest(DOWNSTREAM_CONFTEST)
    pytester.makepyfile(test_downstream=DOWNSTREAM_TESTS)

    def outcome(plugin: str) -> tuple[dict[str, int], list[str], list[str]]:
        result = pytester.runpytest_subprocess("-p", plugin, "-p", "no:cacheprovider", "-rA")
        summary = [line for line in result.outlines if line.startswith(("PASSED", "SKIPPED"))]
        header = [line for line in result.outlines if line.lower().startswith("extstream")]
        return result.parseoutcomes(), sorted(summary), header

    enabled, disabled = outcome("pytest_extstream"), outcome("no:pytest_extstream")
    assert enabled == disabled
    counts, summary, header = enabled
    assert counts == {"passed": 4, "skipped": 1, "warnings": 1}  # PytestUnknownMarkWarning
    assert not header
    assert not [line for line in summary if "extstream" in line]
    assert "SKIPPED [1] conftest.py:9: downstream: the offline pool" in summary


def test_each_xdist_worker_is_pinned_before_cuda_starts_there(
    child: Child, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # CUDA reads CUDA_VISIBLE_DEVICES once, at cuInit: a worker whose GPU is pinned
    # after something there called cuInit sees every GPU. A stand-in driver with two
    # GPUs records what each process's cuInit saw.
    pytest.importorskip("xdist")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the stand-in libcuda.so.1")
    driver = tmp_path / "driver"
    driver.mkdir()
    source = ROOT / "tests" / "driver" / "visible_devices.c"
    library = driver / "libcuda.so.1"
    subprocess.run(
        [compiler, "-Wall", "-Werror", "-shared", "-fPIC", "-o", library, source], check=True
    )
    log = tmp_path / "seen.log"
    monkeypatch.setenv("LD_LIBRARY_PATH", str(driver))
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "2")
    monkeypatch.setenv("VISIBLE_DEVICES_LOG", str(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makeini("[pytest]\nextstream_sim_without_gpu = true\n")
    tests = """
import ctypes, os
import pytest

@pytest.mark.parametrize("i", range(2))
def test_what_cuda_sees_here(i, worker_id):
    driver = ctypes.CDLL("libcuda.so.1")
    count = ctypes.c_int(0)
    assert driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0
    with open(f"worker-{os.getpid()}", "w") as out:
        out.write(worker_id)
"""
    result = child(tests, "-n", "2", "--dist", "each", "--extstream-gpu-per-worker")
    result.assert_outcomes(passed=4)
    workers = {path.name[7:]: path.read_text() for path in pytester.path.glob("worker-*")}
    assert sorted(workers.values()) == ["gw0", "gw1"]
    seen: dict[str, set[str]] = {}  # what each worker's cuInit saw: "visible count"
    for line in log.read_text().splitlines():
        pid, visible, count = line.split()
        if pid in workers:
            seen.setdefault(workers[pid], set()).add(f"{visible} {count}")
    assert seen == {"gw0": {"0 1"}, "gw1": {"1 1"}}
