"""Every Python code block in README.md runs."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, run_python
from .gpu_helpers import torch_or_skip

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
SIMULATED = [code for code in BLOCKS if 'os.environ["EXTSTREAM_BACKEND"] = "sim"' in code]
ON_A_GPU = [code for code in BLOCKS if code not in SIMULATED]


def test_readme_has_code_blocks() -> None:
    assert len(SIMULATED) >= 1 and len(ON_A_GPU) >= 2


@pytest.mark.parametrize("code", SIMULATED, ids=[f"sim{i}" for i in range(len(SIMULATED))])
def test_simulator_block_runs_anywhere(code: str) -> None:
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("code", ON_A_GPU, ids=[f"gpu{i}" for i in range(len(ON_A_GPU))])
def test_gpu_block_runs(code: str) -> None:
    torch_or_skip()  # the blocks wrap real torch and cuda.bindings streams
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
