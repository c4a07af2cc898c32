"""Every Python code block in README.md runs."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, run_python
from .gpu_helpers import torch_or_skip

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.gpu
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str) -> None:
    torch_or_skip()  # the blocks wrap real torch and cuda.bindings streams
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
