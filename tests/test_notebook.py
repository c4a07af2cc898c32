"""The example notebook runs top to bottom in a Jupyter kernel (nbclient).

On the simulator in CI, on the GPU where there is one. The kernel runs in a
child process, so the warnings of Jupyter's own packages stay out of this
session's ``filterwarnings = error``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from extstream import sim

from .conftest import ROOT, run_python

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"

EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient

notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
nbformat.write(notebook, sys.argv[2])
"""


def _text(output: dict[str, Any]) -> str:
    if output["output_type"] == "stream":
        return str(output["text"])
    data = output.get("data", {})
    return str(data.get("text/html", "")) + str(data.get("text/plain", ""))


@pytest.mark.gpu
def test_notebook_runs_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    monkeypatch.setenv("EXTSTREAM_BACKEND", "sim" if sim.active() else "cuda")
    executed = tmp_path / "executed.ipynb"
    code = f"import sys; sys.argv[1:] = [{str(NOTEBOOK)!r}, {str(executed)!r}]\n{EXECUTE}"
    result = run_python(code, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    outputs = ["".join(_text(o) for o in cell["outputs"]) for cell in cells]
    assert all(o["output_type"] != "error" for cell in cells for o in cell["outputs"])
    backend = "the simulator" if sim.active() else "CUDA"
    assert f"on {backend}" in outputs[0]
    assert "<b>extstream.Stream</b>" in outputs[1] and ": idle" in outputs[1]
    assert ": busy" in outputs[3] and ": pending" in outputs[4] and ": complete" in outputs[5]
    assert "[0, 1, 2, 3, 4]" in outputs[6]
    assert "ms on the stream" in outputs[7]
    assert "did not finish within 0.05 s" in outputs[8]
    assert "[True, True]" in outputs[9]
    assert ", closed" in outputs[-1]
