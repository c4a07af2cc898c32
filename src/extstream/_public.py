"""``@public``: a public class or function shows as ``extstream.X``, not its private module."""

from __future__ import annotations

from typing import TypeVar

_T = TypeVar("_T")


def public(obj: _T) -> _T:
    """Set ``obj.__module__`` to ``"extstream"`` (reprs, docs and tracebacks show that path)."""
    obj.__module__ = "extstream"
    return obj
