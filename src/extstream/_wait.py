"""Waiting for the GPU without freezing Python: interruptible, with timeouts, awaitable.

A blocking wait enqueues libc's ``sem_post`` as a host function (no GIL, no
Python on CUDA's thread) and waits for that semaphore in slices of 50 ms with
the GIL released; between slices Python runs its signal handlers, so Ctrl-C
raises ``KeyboardInterrupt`` within a slice (sooner: a signal interrupts the
wait at once). An ``await`` enqueues a notification that resolves a future on
the event loop: no thread per waiter, the loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _callbacks, _native

_SLICE = 0.05
_SPIN = 1e-3  # a host-function wake-up costs about 0.1 ms: short waits poll instead
_SETTLE = 5e-3  # the most a wait lets its posting host function take to return
MAIN_THREAD = threading.main_thread().ident


class _ThreadSemaphore(threading.local):
    address = 0  # this thread's wait semaphore; 0 until made


_local = _ThreadSemaphore()


def check_timeout(timeout: float) -> None:
    """``TypeError``/``ValueError`` for a timeout that is not a number of seconds >= 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0, not {timeout!r}")


def wait_posted(
    enqueue_post: Callable[[int], None],
    still_busy: Callable[[], bool],
    timeout: float | None,
    what: str,
) -> None:
    """Wait until the ``sem_post`` that ``enqueue_post(semaphore)`` enqueued has run.

    *still_busy* is asked between slices (it raises on CUDA errors, which would
    keep the host function from ever running). ``TimeoutError`` after *timeout* s.
    """
    if timeout is not None:
        check_timeout(timeout)
    if not _native.AVAILABLE:  # pragma: no cover - no libc semaphores: poll instead
        poll_until(lambda: not still_busy(), float("inf") if timeout is None else timeout, what)
        return
    semaphore = _local.address or _new_thread_semaphore()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        enqueue_post(semaphore)
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"{what} did not finish within {timeout} s")
            if _native.take_within(semaphore, left):
                _settle(still_busy)
                return
            if not still_busy():
                _native.take(semaphore)  # done, so the post has run or is about to
                return
    except BaseException:
        _local.address = 0  # a post is still coming: never reuse this semaphore
        raise


def _settle(still_busy: Callable[[], bool]) -> None:
    """Let the posting host function return before the wait does.

    CUDA reports a stream busy while a host function on it runs, so right after
    its ``sem_post`` a query can still say not ready. Yielding the GIL for a few
    ms at most covers that; work others queued after the post is not waited for.
    """
    end = time.perf_counter() + _SETTLE
    while still_busy() and time.perf_counter() < end:
        time.sleep(0)


def spin_until(is_done: Callable[[], bool], timeout: float | None) -> bool:
    """Ask *is_done* for up to 1 ms (less with a shorter *timeout*): short GPU work ends
    sooner than a host-function wake-up takes."""
    end = time.perf_counter() + (_SPIN if timeout is None else min(_SPIN, timeout))
    while time.perf_counter() < end:
        if is_done():
            return True
    return False


def _new_thread_semaphore() -> int:
    _local.address = _native.new_semaphore()
    return _local.address


def poll_until(is_done: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for *is_done* by polling with a growing sleep; ``TimeoutError`` after *timeout* s."""
    check_timeout(timeout)
    deadline = time.monotonic() + timeout
    pause = 20e-6
    while not is_done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what} did not finish within {timeout} s")
        time.sleep(min(pause, left))
        pause = min(pause * 2, 5e-3)


def _resolve(target: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
    loop, future = target
    with contextlib.suppress(RuntimeError):  # a closed loop: no one is waiting any more
        loop.call_soon_threadsafe(_set_done, future)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_notified(enqueue_notification: Callable[[Callable[[Any], None], Any], None]) -> None:
    """Await a hold_stream=False callback that ``enqueue_notification(cb, arg)`` enqueued."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    enqueue_notification(_resolve, (loop, future))
    await future


def raise_if_holding_stream(what: str) -> None:
    """Refuse a blocking wait on CUDA's host-function thread (see ``_callbacks``)."""
    if _callbacks.callback_threads:
        _callbacks.raise_if_holding_stream(what)
