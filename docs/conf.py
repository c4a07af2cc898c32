"""Sphinx configuration: MyST Markdown pages, the notebook, the API reference from docstrings.

Build (what CI runs): ``pip install -e '.[docs]' && sphinx-build -W -n docs docs/_build/html``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # build from the checkout, installed or not

from extstream import __version__  # noqa: E402 - needs the path above

project = "extstream"
author = "extstream developers"
copyright = "2026, extstream developers"
version = release = __version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the example notebook
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_copybutton",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
# The notebook is rendered as it is stored, not run: it runs in the test suite
# (tests/test_notebook.py), on the simulator in CI.
nb_execution_mode = "off"

# Every cross-reference must resolve: `sphinx-build -n` and the test of the build.
nitpicky = True

# -- API reference ------------------------------------------------------------
# Docstrings are NumPy style (napoleon); members in the order of the source;
# type hints go into the parameter descriptions, not the signatures.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# Private names some signatures mention (a TypeVar bound to ExternalStream);
# the reference states those return values in words instead.
nitpick_ignore = [
    ("py:class", "_S"),
    ("py:class", "extstream._stream._S"),
    ("py:class", "extstream._timing.Timed"),
    ("py:class", "Launch"),
    ("py:class", "_wait.Launch"),
]

# -- intersphinx --------------------------------------------------------------
# Links into the docs of Python, NumPy, CuPy, torch and cuda-python. Their
# inventories are fetched at build time; a build machine that cannot reach a
# host (CI's has no network) builds without that inventory instead of failing,
# and references into it are then rendered as plain code (nitpick_ignore_regex
# below), never as broken links. EXTSTREAM_DOCS_OFFLINE=1 skips every fetch.
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "numpy": "https://numpy.org/doc/stable",
    "cupy": "https://docs.cupy.dev/en/stable",
    "torch": "https://docs.pytorch.org/docs/stable",
    "cuda-bindings": "https://nvidia.github.io/cuda-python/cuda-bindings/latest",
    "cuda-core": "https://nvidia.github.io/cuda-python/cuda-core/latest",
}
# The top-level modules each inventory documents: their names stay plain offline.
_MODULES = {
    "python": r"(builtins\.|collections\.abc\.|contextlib\.|typing\.|types\.|asyncio\.)?"
    r"(int|float|str|bytes|bool|object|None|tuple|list|dict|type|Any|Callable|Iterator|"
    r"Generator|Awaitable|BaseException|Exception|RuntimeError|ValueError|TypeError|"
    r"TimeoutError|KeyboardInterrupt|contextmanager|AbstractContextManager|NoReturn|"
    r"contextvars\..*|sys\..*|pickle\..*|ctypes\..*|os\..*|concurrent\..*)",
    "numpy": r"numpy\..*",
    "cupy": r"cupy\..*",
    "torch": r"torch\..*",
    "cuda-bindings": r"cuda\.bindings\..*",
    "cuda-core": r"cuda\.core\..*",
}


def _reachable(url: str) -> bool:
    if os.environ.get("EXTSTREAM_DOCS_OFFLINE"):
        return False
    host = urlsplit(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


intersphinx_mapping = {name: (url, None) for name, url in _INVENTORIES.items() if _reachable(url)}
intersphinx_timeout = 10
nitpick_ignore_regex = [
    (r"py:(class|exc|obj|func|meth|mod|data)", pattern)
    for name, pattern in _MODULES.items()
    if name not in intersphinx_mapping
]

# -- HTML ---------------------------------------------------------------------
html_theme = "furo"  # responsive, with a light/dark switch
html_title = f"extstream {__version__}"
html_static_path = ["_static"]
html_css_files = ["extstream.css"]
html_theme_options = {
    "source_repository": "https://github.com/extstream/extstream/",
    "source_branch": "main",
    "source_directory": "docs/",
}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
