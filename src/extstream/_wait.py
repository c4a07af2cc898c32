"""Waiting that stays interruptible."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(is_done: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for *is_done* by polling with a growing sleep; ``TimeoutError`` after *timeout* s.

    Sleeping in Python keeps the wait interruptible by Ctrl-C.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0, not {timeout!r}")
    deadline = time.monotonic() + timeout
    pause = 20e-6
    while not is_done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what} did not finish within {timeout} s")
        time.sleep(min(pause, left))
        pause = min(pause * 2, 5e-3)
