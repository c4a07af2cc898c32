"""Every ``EXTSTREAM_*`` environment variable, and the switch for debug checks.

The ground floor (it imports only ``_public``), so the pytest plugin can read
these before the backend is chosen. A bad value raises ``ValueError`` naming
the variable and the value.
"""

from __future__ import annotations

import os
from typing import Final

from ._public import public
from ._short import short_repr

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
_BACKENDS: Final = ("cuda", "sim")


def _bad(name: str, expected: str) -> ValueError:
    return ValueError(f"environment variable {name}={os.environ[name]!r} {expected}")


def env_flag(name: str) -> bool:
    """The boolean environment variable *name* (unset: False)."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(name, "is not a boolean (1 or 0)")


def _env_number(name: str, default: float, minimum: float, kind: type[float] | type[int]) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise _bad(name, f"is not a number >= {minimum:g}") from None
    if not value >= minimum:  # also refuses nan
        raise _bad(name, f"is not a number >= {minimum:g}")
    return value


def backend() -> str:
    """``EXTSTREAM_BACKEND``: ``"cuda"`` (default) or ``"sim"``."""
    name = os.environ.get("EXTSTREAM_BACKEND", "").strip().lower() or "cuda"
    if name not in _BACKENDS:
        raise _bad("EXTSTREAM_BACKEND", "must be 'cuda' or 'sim'")
    return name


def sim_device_count() -> int:
    """``EXTSTREAM_SIM_DEVICES``: how many devices the simulator has (default 1)."""
    return int(_env_number("EXTSTREAM_SIM_DEVICES", 1, 1, int))


def exit_timeout() -> float:
    """``EXTSTREAM_EXIT_TIMEOUT``: seconds the exit waits for held callbacks (default 10)."""
    return float(_env_number("EXTSTREAM_EXIT_TIMEOUT", 10.0, 0.0, float))


def gpu_required() -> bool:
    """``EXTSTREAM_REQUIRE_GPU``: a missing GPU fails ``gpu`` tests instead of skipping them."""
    return env_flag("EXTSTREAM_REQUIRE_GPU")


#: ``EXTSTREAM_PER_THREAD_DEFAULT_STREAM``: whether the default stream is the
#: per-thread one (handle 2) instead of the legacy one (0).
PER_THREAD_DEFAULT_STREAM: Final = env_flag("EXTSTREAM_PER_THREAD_DEFAULT_STREAM")

# ``EXTSTREAM_CHECK``. Debug checks cost CUDA calls; read by the hot paths as a
# plain module global.
checks = env_flag("EXTSTREAM_CHECK")


@public
def set_debug_checks(enabled: bool) -> bool:
    """Turn debug checks on or off; returns the previous setting.

    With checks on, a device id given for an :class:`~extstream.ExternalStream`
    is compared with the stream's real device at construction (one CUDA call).
    """
    global checks
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, not {short_repr(enabled)}")
    previous, checks = checks, enabled
    return previous


@public
def debug_checks_enabled() -> bool:
    """Whether debug checks are on (``EXTSTREAM_CHECK=1`` or :func:`set_debug_checks`)."""
    return checks


# Every bad value fails ``import extstream``, not a later first use.
backend()
sim_device_count()
exit_timeout()
