"""Every example in examples/ runs to completion."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from extstream import __main__ as self_check

from .conftest import ROOT, run_interpreter, run_python
from .gpu_helpers import torch_or_skip

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.gpu
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    if "import torch" in path.read_text():
        torch_or_skip()
    result = run_python(
        f"import runpy; runpy.run_path({str(path)!r}, run_name='__main__')", timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_self_check_runs_everywhere() -> None:
    result = run_interpreter("-m", "extstream", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extstream " in result.stdout
    assert "all checks passed" in result.stdout


def test_self_check_json() -> None:
    result = run_interpreter("-m", "extstream", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert report["devices"]


def test_self_check_without_a_gpu_runs_on_the_simulator() -> None:
    result = run_interpreter(
        "-m",
        "extstream",
        env={"EXTSTREAM_BACKEND": "cuda", "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA GPU here" in result.stdout
    assert "(sim backend)" in result.stdout and "all checks passed" in result.stdout
    assert "EXTSTREAM_BACKEND=sim" in result.stdout  # how to do the same in one's own code
    assert "CUDA driver 13" not in result.stdout  # no invented versions
    assert "CUDA driver and runtime: none (simulated devices)" in result.stdout


def test_self_check_on_a_simulator_that_sees_no_device_fails_at_once() -> None:
    result = run_interpreter(
        "-m", "extstream", env={"EXTSTREAM_BACKEND": "sim", "CUDA_VISIBLE_DEVICES": ""}, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("no CUDA GPU here") == 1  # no second try, no recursion


def test_the_self_check_leaves_out_a_torch_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CPU-only torch's torch.cuda.Stream() raises: wrapping it would fail the self-check
    # on a GPU machine where the user works with CuPy, say.
    monkeypatch.setattr(self_check, "_installed", lambda name: name == "torch")  # torch alone
    cpu_torch = types.SimpleNamespace(version=types.SimpleNamespace(cuda=None))
    monkeypatch.setitem(sys.modules, "torch", cpu_torch)
    assert not self_check._has_cuda_streams("torch")
    assert "wrap a torch stream" not in [title for title, _ in self_check._framework_checks()]
    cpu_torch.version.cuda = "13.0"
    assert self_check._has_cuda_streams("torch")
    assert "wrap a torch stream" in [title for title, _ in self_check._framework_checks()]
