"""Waiting for the GPU without freezing Python: one blocking wait and one ``await``,
for streams and events alike, in every thread.

- A wait asks for up to 1 ms (short work ends sooner than a wake-up takes),
  then enqueues libc's ``sem_post`` as a host function (no GIL, no Python on
  CUDA's thread) and waits for that semaphore in slices of 50 ms with the GIL
  released. Between slices Python runs its signal handlers, so Ctrl-C raises
  ``KeyboardInterrupt`` within a slice (sooner: a signal interrupts the wait at
  once), and the target is asked again.
- No wait depends on its host function alone: after a kernel fault CUDA runs no
  host function in the context any more, but every query returns the fault, so
  the next slice raises it (within 50 ms). A target found done before its post
  arrived is not waited for either: the post may never come.
- ``await`` enqueues a notification that resolves a future on the event loop
  (no thread per waiter, the loop never blocks) and asks the target every
  50 ms too. asyncio is imported only then.

A host function needs a stream: a stream waits on itself; an event borrows a
*waiter*, a stream of its device that only waits for events (each wait its
own, so that waits do not queue behind each other).

A blocking wait takes a semaphore from a pool and gives it back. A wait that
ends before its host function ran (a timeout, Ctrl-C, an error, a cancelled
``await``) leaves that host function queued. Its waiter is destroyed, which
CUDA does once the queued work is done, so that no later wait queues behind
it; its semaphore waits for the late post among the abandoned ones and serves
again once that post has come. Polling with timeouts so costs neither a stream
nor a semaphore per timeout, and threads that end leave no semaphore behind.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from . import _callbacks, _device, _handles, _native
from ._backend import cuda as _cuda
from ._errors import CudaError
from ._handles import destroy_or_defer, destroy_stream, enqueue_host_function
from ._short import short_repr

if TYPE_CHECKING:
    import asyncio

_SLICE: Final = 0.05
_SPIN: Final = 1e-3  # a host-function wake-up costs about 0.1 ms: short waits poll instead
_SETTLE: Final = 5e-3  # the most a wait lets its posting host function take to return

#: ``launch(ptr, direct)``: enqueue something on a stream, behind the work to wait for.
Launch = Callable[[int, bool], None]
#: A waiter stream lent to a wait: ``(device, handle)``.
Waiter = tuple[int, int]


class Waitable(Protocol):
    """What a stream or an event gives the waits."""

    @property
    def done(self) -> bool:
        """Whether the work waited for has finished (``CudaError`` on a CUDA error)."""

    def _launch_after(self, launch: Launch) -> Waiter | None:
        """Call *launch* on a stream whose next work runs after the work waited for;
        return the waiter borrowed for that, if any."""


_idle_waiters: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
# The waits' semaphores (never freed: see _native). Spare ones are at 0 with no
# post to come. Abandoned ones belong to waits that ended before their post came:
# each is posted once more (unless a fault keeps its host function from running),
# then spare again. A pool, not one per thread, so ended threads leave none behind.
_spare: list[int] = []
_abandoned: collections.deque[int] = collections.deque()
_RECLAIM_TRIES: Final = 4  # abandoned semaphores asked before a new one is made


def check_timeout(timeout: object) -> None:
    """``TypeError``/``ValueError`` for a timeout that is not a number of seconds >= 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {short_repr(timeout)}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0, not {short_repr(timeout)}")


def block(target: Waitable, timeout: float | None, what: str) -> None:
    """Wait until *target*'s work has finished; ``TimeoutError`` after *timeout* s.

    *what* names the wait for the error raised inside a held callback.
    """
    if _handles.callback_threads:
        _callbacks.raise_if_holding_stream(what)
    if timeout is not None:
        check_timeout(timeout)
    if target.done or _spin_until(target, timeout):
        return
    semaphore = _take_semaphore()
    try:
        waiter = target._launch_after(
            lambda ptr, direct: enqueue_host_function(
                ptr, direct, _native.SEM_POST_ADDRESS, semaphore
            )
        )
    except CudaError:  # nothing was queued: no post will come
        _spare.append(semaphore)
        raise
    except BaseException:  # an interrupt may have come after CUDA took the post
        _abandoned.append(semaphore)
        raise
    deadline = None if timeout is None else time.monotonic() + timeout
    posted = False
    try:
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"{target!r} did not finish within {timeout} s")
            if _native.take_within(semaphore, left):
                posted = True
                _settle(target)
                break
            if target.done:
                posted = _native.try_take(semaphore)
                break
    finally:
        if posted:
            _spare.append(semaphore)
            give_back(waiter)
        else:  # its post may still come: reuse the semaphore only after it
            _abandoned.append(semaphore)
            abandon(waiter)


async def until_done(target: Waitable) -> None:
    """``await``: resume once *target*'s work has finished, never blocking the event loop."""
    if target.done:
        return
    import asyncio  # noqa: PLC0415 - only awaiting needs it (half of extstream's import time)

    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    waiter = target._launch_after(
        lambda ptr, direct: _callbacks.launch(ptr, direct, _resolve, ((loop, future),), False)
    )
    try:
        while not future.done():
            await asyncio.wait((future,), timeout=_SLICE)
            if target.done:  # also raises the CudaError that keeps the notification from coming
                break
        end = time.perf_counter() + _SETTLE
        while not target.done and time.perf_counter() < end:  # as _settle, without blocking
            await asyncio.sleep(0)
    except BaseException:  # cancelled, or the CudaError: the notification may still come
        abandon(waiter)
        raise
    give_back(waiter)


def _settle(target: Waitable) -> None:
    """Let the posting host function return before the wait does.

    CUDA reports a stream busy while a host function on it runs, so right after
    its ``sem_post`` a query can still say not ready. Yielding the GIL for a few
    ms at most covers that; work others queued after the post is not waited for.
    """
    end = time.perf_counter() + _SETTLE
    while not target.done and time.perf_counter() < end:
        time.sleep(0)


def _spin_until(target: Waitable, timeout: float | None) -> bool:
    """Ask *target* for up to 1 ms (less with a shorter *timeout*) whether it is done.

    The queries keep the GIL, so the spin lets it go between them: a held
    callback the target waits for needs it on CUDA's thread.
    """
    end = time.perf_counter() + (_SPIN if timeout is None else min(_SPIN, timeout))
    while time.perf_counter() < end:
        if target.done:
            return True
        time.sleep(0)  # releases the GIL
    return False


def _take_semaphore() -> int:
    """A semaphore at 0 for one wait: a spare one, an abandoned one whose late post
    came, or a new one."""
    try:
        return _spare.pop()
    except IndexError:
        pass
    for _ in range(min(_RECLAIM_TRIES, len(_abandoned))):
        try:
            semaphore = _abandoned.popleft()
        except IndexError:  # other threads took them meanwhile
            break
        if _native.try_take(semaphore):  # its post came: nothing more will
            return semaphore
        _abandoned.append(semaphore)
    return _native.new_semaphore()


def _resolve(target: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
    loop, future = target
    try:
        loop.call_soon_threadsafe(_set_done, future)
    except RuntimeError:  # a closed loop: no one is waiting any more
        return


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def borrow_waiter(device_id: int) -> Waiter:
    """A waiter stream of *device_id* (-1: the current device), made when none is idle."""
    device = _device.current_device() if device_id < 0 else device_id
    try:
        return device, _idle_waiters[device].pop()
    except IndexError:
        return _device.create_on(
            device,
            _cuda.cudaStreamCreateWithPriority,
            _cuda.STREAM_NON_BLOCKING,
            0,
            driver_create=_cuda.cuStreamCreateWithPriority,
        )


def give_back(waiter: Waiter | None) -> None:
    """Return a waiter whose wait has ended (None: nothing was borrowed)."""
    if waiter is not None:
        _idle_waiters[waiter[0]].append(waiter[1])


def abandon(waiter: Waiter | None) -> None:
    """Destroy a waiter whose queued work may still be pending (None: nothing was borrowed).

    CUDA releases a destroyed stream once its work is done, so the late host
    function still runs and no later wait queues behind it. A faulted context
    refuses the destroy: then the waiter goes with the process.
    """
    if waiter is not None:
        with contextlib.suppress(CudaError):
            destroy_or_defer(destroy_stream, waiter[1])


def _after_fork_in_child() -> None:
    # The parent's waiter streams are not this process's.
    _idle_waiters.clear()
    _abandoned.clear()  # posts from the parent's GPU work never come here


os.register_at_fork(after_in_child=_after_fork_in_child)
