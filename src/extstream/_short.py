"""A short description of a caller's object, for the messages that name it.

An error message must stay readable whatever it was given: the full ``repr()``
of a 3,000-item list is 17,036 characters, and that of a GPU array copies it
from the device. :func:`short_repr` gives at most about :data:`LIMIT` characters:
small values as their ``repr``, containers and strings cut by :mod:`reprlib`,
arrays by type, shape and dtype (their ``repr`` is never asked), and anything
else as its type's name and a bounded prefix of its ``repr``.
"""

from __future__ import annotations

import reprlib
from typing import Final

LIMIT: Final = 80  # characters of a description, about

_REPR: Final = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6
_REPR.maxdict = 4
_REPR.maxlevel = 2
# Arrays: their repr prints (and so may copy to the host) their data.
_ARRAY_PROTOCOLS: Final = ("__cuda_array_interface__", "__dlpack__", "__array_interface__")


def _type_name(obj: object) -> str:
    kind = type(obj)
    module = getattr(kind, "__module__", "builtins")
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def short_repr(obj: object) -> str:
    """*obj* described in about :data:`LIMIT` characters (never raises)."""
    name = _type_name(obj)
    kind = type(obj)
    try:
        if any(hasattr(kind, protocol) for protocol in _ARRAY_PROTOCOLS):
            shape, dtype = tuple(obj.shape), obj.dtype  # type: ignore[attr-defined]
            return f"<{name} shape={shape} dtype={dtype}>"
        # Builtin containers and strings cut by reprlib (it would cut the middle of
        # any other repr: those keep their start, below).
        text = _REPR.repr(obj) if kind.__module__ == "builtins" else repr(obj)
    except Exception:  # a description must not raise, whatever the object
        return f"<{name} object>"
    if len(text) <= LIMIT:
        return text
    return f"<{name}: {text[:LIMIT]}...>"
