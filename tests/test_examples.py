"""Every example in examples/ runs to completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, run_python
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
    result = subprocess.run(
        [sys.executable, "-m", "extstream"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extstream " in result.stdout
    assert "all checks passed" in result.stdout


def test_self_check_json() -> None:
    json_result = subprocess.run(
        [sys.executable, "-m", "extstream", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert json_result.returncode == 0, json_result.stderr
    report = json.loads(json_result.stdout)
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert report["devices"]


def test_self_check_without_a_gpu_runs_on_the_simulator() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extstream"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "EXTSTREAM_BACKEND": "cuda",
            "CUDA_VISIBLE_DEVICES": "",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA GPU here" in result.stdout
    assert "(sim backend)" in result.stdout and "all checks passed" in result.stdout
