"""The pytest plugin, run on small suites in a child pytest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import ROOT

GPU_TESTS = """
import pytest
import extstream
from extstream import sim

@pytest.mark.gpu
def test_stream_fixture(cuda_stream):
    assert isinstance(cuda_stream, extstream.Stream)
    sim.busy(cuda_stream, 0.05)
    assert not cuda_stream.done

@pytest.mark.gpu
def test_event_factory(cuda_stream, cuda_event):
    start, end = cuda_event(timing=True), cuda_event(timing=True)
    start.record(cuda_stream)
    end.record(cuda_stream)
    assert start.elapsed_time(end) >= 0

def test_debug_checks_are_on():
    assert extstream.debug_checks_enabled()
"""


Child = Callable[..., pytest.RunResult]


@pytest.fixture
def child(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Child:
    """Run pytest in a child process on *source*, with extstream's plugin loaded.

    ``-p pytest_extstream`` also where the plugin's entry point loads it (CI
    installs extstream): naming it both ways must work.
    """
    for name in ("EXTSTREAM_BACKEND", "EXTSTREAM_REQUIRE_GPU", "EXTSTREAM_CHECK"):
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
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["extstream *: backend sim*", "extstream: 1 device(s)*"])


def test_gpu_tests_skip_without_gpu_and_fail_when_required(
    child: Child, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTSTREAM_BACKEND", "cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    child(GPU_TESTS).assert_outcomes(passed=1, skipped=2)
    child(GPU_TESTS, "--require-gpu").assert_outcomes(passed=1, errors=2)
    monkeypatch.setenv("EXTSTREAM_REQUIRE_GPU", "off")
    child(GPU_TESTS).assert_outcomes(passed=1, skipped=2)
    monkeypatch.setenv("EXTSTREAM_REQUIRE_GPU", "1")
    child(GPU_TESTS).assert_outcomes(passed=1, errors=2)


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

@pytest.mark.gpu
def test_leaks(cuda_stream):
    cuda_stream.use()

@pytest.mark.gpu
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

@pytest.mark.multi_gpu(2)
def test_two():
    assert extstream.Stream(1).device_id == 1
"""
    child(source, "--extstream-sim").assert_outcomes(skipped=1)
    monkeypatch.setenv("EXTSTREAM_SIM_DEVICES", "2")
    child(source, "--extstream-sim").assert_outcomes(passed=1)


def test_works_with_xdist(child: Child) -> None:
    pytest.importorskip("xdist")
    result = child(GPU_TESTS, "--extstream-sim", "-n", "2")
    result.assert_outcomes(passed=3)
