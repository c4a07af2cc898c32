"""The notification dispatcher's thread logic, driven by posting its semaphore by hand."""

from __future__ import annotations

import contextvars
import ctypes
import threading
import time

import pytest

from extstream import _callbacks, _native

from .conftest import run_python
from .gpu_helpers import wait_until


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_callbacks, "_DISPATCHER_IDLE", 0.05)


def entry(seen: list[int], value: int) -> list[object]:
    return [seen.append, (value,), contextvars.copy_context()]


def queue_up(key: object, *entries: list[object]) -> int:
    """Queue notification entries for stream *key* as a launch does; its semaphore."""
    stream_queue = _callbacks._stream_queue(key)
    with stream_queue.lock:
        stream_queue.entries.extend(entries)
    _callbacks._ensure_dispatcher()
    return stream_queue.semaphore


def cuda_posts(semaphore: int) -> None:
    """What CUDA does for one notification: the stream's post, then the doorbell."""
    _native.post(semaphore)
    _native.post(_callbacks._doorbell)


def test_runs_each_stream_in_order_as_posted_then_stops_when_idle(short_idle: None) -> None:
    seen: list[int] = []
    first = queue_up("first", entry(seen, 1), entry(seen, 2))
    second = queue_up("second", entry(seen, 10))
    cuda_posts(second)  # streams finish in any order; each in its own order
    assert wait_until(lambda: seen == [10])
    cuda_posts(first)
    assert wait_until(lambda: seen == [10, 1])
    time.sleep(0.2)
    assert seen == [10, 1]  # the second is not posted yet: the GPU has not got there
    assert _callbacks._dispatcher is not None  # and the thread waits on past its idle time
    cuda_posts(first)
    assert wait_until(lambda: seen == [10, 1, 2])
    assert wait_until(lambda: _callbacks._dispatcher is None)  # idle, nothing pending: gone
    assert "first" not in _callbacks._queues and "second" not in _callbacks._queues
    assert {first, second} <= set(_callbacks._free_semaphores)  # reused by the next queues


def test_one_dispatcher_serves_any_number_of_streams(short_idle: None) -> None:
    before = threading.active_count()
    seen: list[int] = []
    for i in range(300):
        cuda_posts(queue_up(("stream", i), entry(seen, i)))
    assert threading.active_count() <= before + 1
    assert wait_until(lambda: sorted(seen) == list(range(300)))
    assert wait_until(lambda: not any(isinstance(key, tuple) for key in _callbacks._queues))


def test_semaphore_wait_with_timeout() -> None:
    semaphore = _native.new_semaphore()
    started = time.monotonic()
    assert not _native.take_within(semaphore, 0.05)
    assert time.monotonic() - started >= 0.04
    _native.post(semaphore)
    assert _native.try_take(semaphore)
    assert not _native.try_take(semaphore)


def test_address_probe() -> None:
    buffer = ctypes.create_string_buffer(64)
    assert _native.address_is_readable(ctypes.addressof(buffer))
    assert not _native.address_is_readable(0x10)
    assert not _native.address_is_readable(2**64 - 5)


def test_a_lock_held_at_fork_is_new_in_the_child() -> None:
    # Another thread inside the address probe when the process forks: the
    # child's probe must not wait for a lock no thread of it will release.
    code = (
        "import ctypes, os, threading, warnings\n"
        "from extstream import _native\n"
        "warnings.simplefilter('ignore', DeprecationWarning)  # fork with threads\n"
        "held, release = threading.Event(), threading.Event()\n"
        "def hold():\n"
        "    with _native._probe_lock:\n"
        "        held.set()\n"
        "        release.wait()\n"
        "threading.Thread(target=hold).start()\n"
        "held.wait()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    buffer = ctypes.create_string_buffer(16)\n"
        "    os._exit(0 if _native.address_is_readable(ctypes.addressof(buffer)) else 1)\n"
        "release.set()\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    result = run_python(code, timeout=30)
    assert result.stdout.strip() == "0", result.stderr
