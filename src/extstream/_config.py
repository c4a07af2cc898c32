"""Settings read once from the environment, and the switch for debug checks."""

from __future__ import annotations

import os

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str) -> bool:
    """The boolean environment variable *name*; a value that is neither raises."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a boolean (1 or 0)")


#: Whether the default stream is the per-thread one (handle 2) instead of the legacy one (0).
PER_THREAD_DEFAULT_STREAM = env_flag("EXTSTREAM_PER_THREAD_DEFAULT_STREAM")

# Debug checks cost CUDA calls; read by the hot paths as a plain module global.
checks = env_flag("EXTSTREAM_CHECK")


def set_debug_checks(enabled: bool) -> bool:
    """Turn debug checks on or off; returns the previous setting.

    With checks on, a device id given for an :class:`~extstream.ExternalStream`
    is compared with the stream's real device at construction (one CUDA call).
    """
    global checks
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, not {enabled!r}")
    previous, checks = checks, enabled
    return previous


def debug_checks_enabled() -> bool:
    """Whether debug checks are on (``EXTSTREAM_CHECK=1`` or :func:`set_debug_checks`)."""
    return checks
