"""Every Python code block of README.md and docs/ runs, and the Sphinx site builds.

A block that imports a framework (torch, CuPy, numba, cuda.core, cuda.bindings)
runs on a real GPU only; one that uses extstream alone runs on the session's
backend (the simulator in CI); one that chooses the simulator itself runs
anywhere.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from extstream import sim

from .conftest import ROOT, run_interpreter, run_python

FRAMEWORKS = ("torch", "cupy", "numba", "cuda.core", "cuda.bindings")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_IMPORT = re.compile(r"^(?:import|from)\s+([\w.]+)", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One ``python`` code block and where it is."""

    page: str
    line: int
    code: str

    @property
    def frameworks(self) -> list[str]:
        modules = _IMPORT.findall(self.code)
        return [f for f in FRAMEWORKS if any(m == f or m.startswith(f + ".") for m in modules)]

    @property
    def chooses_the_simulator(self) -> bool:
        return 'os.environ["EXTSTREAM_BACKEND"] = "sim"' in self.code


def _blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(str(page.relative_to(ROOT)), line, match.group(1)))
    return blocks


BLOCKS = _blocks()
ANYWHERE = [b for b in BLOCKS if b.chooses_the_simulator]
EXTSTREAM_ONLY = [b for b in BLOCKS if not b.chooses_the_simulator and not b.frameworks]
WITH_FRAMEWORKS = [b for b in BLOCKS if b.frameworks]


def _ids(blocks: list[Block]) -> list[str]:
    return [f"{b.page}:{b.line}" for b in blocks]


def test_blocks_are_found_on_every_page() -> None:
    pages_with_code = {b.page for b in BLOCKS}
    assert {"README.md", "docs/quickstart.md", "docs/errors.md"} <= pages_with_code
    quick_start = {
        f for b in WITH_FRAMEWORKS if b.page == "docs/quickstart.md" for f in b.frameworks
    }
    assert quick_start == set(FRAMEWORKS)  # one quick start per framework


@pytest.mark.parametrize("block", ANYWHERE, ids=_ids(ANYWHERE))
def test_simulator_block_runs_anywhere(block: Block) -> None:
    result = run_python(block.code, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("block", EXTSTREAM_ONLY, ids=_ids(EXTSTREAM_ONLY))
def test_extstream_block_runs(block: Block) -> None:
    result = run_python(block.code, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("block", WITH_FRAMEWORKS, ids=_ids(WITH_FRAMEWORKS))
def test_framework_block_runs_on_a_gpu(block: Block) -> None:
    if sim.active():
        pytest.skip(f"needs {', '.join(block.frameworks)} on a real GPU")
    for framework in block.frameworks:
        pytest.importorskip(framework)
    result = run_python(block.code, timeout=120)
    assert result.returncode == 0, result.stderr


def test_sphinx_site_builds_without_warnings(tmp_path: Path) -> None:
    for module in ("sphinx", "myst_parser"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'extstream[docs]')")
    result = run_interpreter(
        "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
        str(ROOT / "docs"), str(tmp_path), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "api.html").read_text().count('class="sig-name descname"') > 30
