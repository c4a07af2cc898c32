"""Sphinx configuration: MyST Markdown pages, the API reference from docstrings."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # build from the checkout, installed or not

from extstream import __version__  # noqa: E402 - needs the path above

project = "extstream"
author = "extstream developers"
copyright = "2026, extstream developers"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
# Pages include sections of README.md, whose headings start at level 2.
suppress_warnings = ["myst.header"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"extstream {__version__}"
