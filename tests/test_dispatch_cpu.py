"""The notification dispatcher's thread logic, driven by posting its semaphore by hand."""

from __future__ import annotations

import contextvars
import ctypes
import time

import pytest

from extstream import _callbacks, _native

from .gpu_helpers import wait_until

_sem_post = ctypes.CDLL(None).sem_post
_sem_post.argtypes = (ctypes.c_void_p,)


def post(semaphore: int) -> None:
    """What CUDA does when it runs a sem_post host function."""
    _sem_post(semaphore)


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_callbacks, "_DISPATCHER_IDLE", 0.05)


def entry(seen: list[int], value: int) -> list[object]:
    return [seen.append, (value,), contextvars.copy_context()]


def test_runs_in_order_as_posted_then_stops_when_idle(short_idle: None) -> None:
    queue = _callbacks._StreamQueue()
    seen: list[int] = []
    with queue.lock:
        queue.entries.extend([entry(seen, 1), entry(seen, 2)])
        queue.start_thread()
    post(queue.semaphore)
    assert wait_until(lambda: seen == [1])
    time.sleep(0.1)
    assert seen == [1]  # the second is not posted yet: the GPU has not got there
    assert queue.thread is not None  # and the thread waits on for it past its idle time
    post(queue.semaphore)
    assert wait_until(lambda: seen == [1, 2])
    assert wait_until(lambda: queue.thread is None)  # idle with nothing pending: gone


def test_semaphore_wait_with_timeout() -> None:
    semaphore = _native.new_semaphore()
    started = time.monotonic()
    assert not _native.take_within(semaphore, 0.05)
    assert time.monotonic() - started >= 0.04
    post(semaphore)
    assert _native.try_take(semaphore)
    assert not _native.try_take(semaphore)


def test_address_probe() -> None:
    buffer = ctypes.create_string_buffer(64)
    assert _native.address_is_readable(ctypes.addressof(buffer))
    assert not _native.address_is_readable(0x10)
    assert not _native.address_is_readable(2**64 - 5)
