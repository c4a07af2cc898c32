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


README = ROOT / "README.md"
README_BLOCKS = [b for b in BLOCKS if b.page == "README.md"]


def test_every_readme_block_runs_somewhere() -> None:
    # Each README block runs in this file: on the simulator anywhere, or (a framework
    # block) on a GPU with that framework. None may need a GPU without saying so.
    assert len(README_BLOCKS) >= 2
    assert README_BLOCKS[0].chooses_the_simulator  # the first example runs on a laptop
    for block in README_BLOCKS:
        assert block.chooses_the_simulator or block.frameworks, block


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "<!-- docs:" not in text  # the docs own their text: no fragments included
    # Links work on a package index too: absolute, no relative paths or images.
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert target.startswith("https://"), target
    # The two commands CI runs verbatim (.ci/run), each in its own sh block.
    assert "```sh\npip install -e '.[test]' && pytest\n```" in text
    assert "```sh\npip install -e . && python -m extstream\n```" in text


def test_docs_pages_include_no_readme_fragments() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        assert "README.md" not in page.read_text(), page


def test_sphinx_site_builds_without_warnings(tmp_path: Path) -> None:
    for module in ("sphinx", "myst_nb", "furo", "sphinx_copybutton"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    # Offline: the build must not depend on reaching the intersphinx hosts.
    result = run_interpreter(
        "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
        str(ROOT / "docs"), str(tmp_path), env={"EXTSTREAM_DOCS_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "api.html").read_text()
    assert api.count('class="sig-name descname"') > 30
    assert "extstream.testing.header_lines" not in api  # internals stay unpublished
    assert "Bases:" in api  # Stream shows that it derives from ExternalStream
    assert (tmp_path / "notebook.html").exists() and (tmp_path / "changelog.html").exists()
