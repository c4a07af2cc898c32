"""Helpers for GPU tests: real queued work without writing a kernel."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import extstream


def sleep_on(stream: extstream.ExternalStream, seconds: float) -> None:
    """Queue GPU work on *stream* that keeps it busy for about *seconds*."""
    torch = pytest.importorskip("torch")
    with torch.cuda.device(stream.device_id):
        torch_stream = torch.cuda.ExternalStream(stream.ptr, device=stream.device_id)
        with torch.cuda.stream(torch_stream):
            torch.cuda._sleep(int(seconds * 2.0e9))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll *predicate* until it holds or *timeout* seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
