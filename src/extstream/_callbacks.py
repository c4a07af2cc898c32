"""Host callbacks: Python code that runs when a stream reaches a point.

Three ways a callback reaches Python, each chosen by measurement
(benchmarks/callbacks.py) or forced by a rule:

- *held* (``hold_stream=True``): a ctypes host function runs the callback on
  CUDA's host-function thread, taking the GIL there (as CuPy does), so later
  work on the stream waits until it returned. The launch keeps
  ``(function, args, context)`` in a table under an int key until it ran.
- *notify* (``hold_stream=False``): the host function is libc's ``sem_post``
  on the stream's own semaphore, which needs no GIL. A dispatcher thread of
  that stream (started on demand, gone after 10 s without work) runs the
  stream's callbacks in launch order as the semaphore allows. The GPU never
  waits for Python, and CUDA's thread never touches Python, so no GIL deadlock
  is possible. One host function per callback: CUDA's turnaround per host
  function is most of a callback's cost.
- *captured*: a launch into a stream that is being captured into a CUDA graph
  becomes a graph node that fires on every replay, so its entry is not removed
  when it runs. CUDA owns a user object per entry whose destructor (again a
  GIL-free ``sem_post``) tells extstream when the graph and all its instances
  are gone; the entry is dropped at the next launch or dispatch after that.

A callback that raises is reported through ``sys.unraisablehook``. Callbacks
must not call CUDA (CUDA's rule for host functions); a blocking wait from a held
callback, which could never finish, raises ``RuntimeError``.

At interpreter exit, callbacks that have not run are dropped with a warning,
after waiting (up to ``EXTSTREAM_EXIT_TIMEOUT`` seconds, default 10) for held
ones to pass, so that CUDA's thread never enters a finalizing interpreter.
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import itertools
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Final

from . import _config, _device, _native
from ._backend import cuda as _cuda
from ._errors import CudaError, call
from ._handles import enqueue_host_function, is_capturing

_EXIT_TIMEOUT: Final = _config.exit_timeout()

# An entry: [function, args, context]. Lists, so that a failed launch can find
# and remove its own entry by identity.
Entry = list[Any]

_held: dict[int, Entry] = {}
_captured: dict[int, tuple[Entry, int]] = {}  # key -> (entry, release semaphore)
_next_key = itertools.count(1).__next__
_dropping = False  # set at exit: callbacks that still arrive are skipped
_dropped = 0

# The threads running a held callback right now (CUDA's host-function threads),
# where every blocking wait would wait for itself. Empty almost always, so the
# waits' check of it costs next to nothing.
callback_threads: set[int] = set()


def _run(entry: Entry, replay: bool = False) -> None:
    """Run an entry in its context; a graph replays in a fresh copy of it each time."""
    global _dropped
    function, args, context = entry
    if _dropping:
        _dropped += 1
        return
    try:
        (context.copy() if replay else context).run(function, *args)
    except BaseException as exc:  # a callback must never take the process down
        report_unraisable(exc, f"Exception ignored in extstream host callback {function!r}")


def _holding_stream(run: Callable[[], None]) -> None:
    ident = threading.get_ident()
    callback_threads.add(ident)
    try:
        run()
    finally:
        callback_threads.discard(ident)


def _run_held(key: int) -> None:
    entry = _held.pop(key)
    _holding_stream(lambda: _run(entry))


def _run_captured(key: int) -> None:
    item = _captured.get(key)
    if item is not None:
        entry = item[0]
        _holding_stream(lambda: _run(entry, replay=True))


def _notify_captured(key: int) -> None:
    _captured_ready.put(key)


_HELD: Final = _native.host_function(_run_held)
_HELD_CAPTURED: Final = _native.host_function(_run_captured)
_NOTIFY_CAPTURED: Final = _native.host_function(_notify_captured)


class _StreamQueue:
    """The notifications of one stream, in launch order, the semaphore CUDA posts
    for each, and the thread that runs them."""

    __slots__ = ("entries", "lock", "semaphore", "thread")

    def __init__(self) -> None:
        self.entries: collections.deque[Entry] = collections.deque()
        self.lock = threading.Lock()  # launch order must be queue order
        self.semaphore = _native.new_semaphore()
        self.thread: threading.Thread | None = None

    def dispatch(self) -> None:
        """Run the queue's callbacks as CUDA posts; return after 10 s without any."""
        entries, semaphore = self.entries, self.semaphore
        while True:
            if not _native.take_within(semaphore, _DISPATCHER_IDLE):
                with self.lock:  # a launch holds it while it appends and enqueues
                    if not entries:  # else the GPU has not got there yet: wait on
                        self.thread = None
                        return
                continue
            if entries:  # a post always follows its entry; never die on a stray one
                _run(entries.popleft())

    def start_thread(self) -> None:
        """Start the dispatcher (the caller holds ``lock``)."""
        self.thread = threading.Thread(
            target=self.dispatch, name="extstream-callbacks", daemon=True
        )
        self.thread.start()


_DISPATCHER_IDLE = 10.0  # seconds; tests shorten it
_queues: dict[object, _StreamQueue] = {}
_queues_lock = threading.Lock()
_captured_ready: queue.SimpleQueue[int] = queue.SimpleQueue()
_graph_dispatcher: threading.Thread | None = None
_graph_dispatcher_lock = threading.Lock()


def _dispatch_captured_forever() -> None:
    while True:
        item = _captured.get(_captured_ready.get())
        if item is not None:
            _run(item[0], replay=True)
        del item  # hold nothing while waiting: a destroyed graph's objects must go


def _start_graph_dispatcher() -> None:
    global _graph_dispatcher
    with _graph_dispatcher_lock:
        if _graph_dispatcher is None:
            _graph_dispatcher = threading.Thread(
                target=_dispatch_captured_forever, name="extstream-graph-callbacks", daemon=True
            )
            _graph_dispatcher.start()


def _stream_queue(ptr: int) -> _StreamQueue:
    # Special handles are per device, and handle 2 is per thread as well.
    key: object = ptr
    if ptr <= 2:
        key = (ptr, _device.current_device(), threading.get_ident() if ptr == 2 else 0)
    stream_queue = _queues.get(key)
    if stream_queue is None:
        with _queues_lock:
            stream_queue = _queues.setdefault(key, _StreamQueue())
    return stream_queue


def launch(
    ptr: int,
    direct: bool,
    function: Callable[..., object],
    args: tuple[object, ...],
    hold_stream: bool,
) -> None:
    """Enqueue ``function(*args)`` on the stream *ptr* (see the module doc)."""
    if not callable(function):
        raise TypeError(f"callback must be callable, not {function!r}")
    if not isinstance(hold_stream, bool):
        raise TypeError(f"hold_stream must be a bool, not {hold_stream!r}")
    entry: Entry = [function, args, contextvars.copy_context()]
    if _captured:
        _release_finished_graphs()
    if is_capturing(ptr, direct):
        _launch_captured(ptr, direct, entry, hold_stream)
    elif hold_stream:
        key = _next_key()
        _held[key] = entry
        try:
            enqueue_host_function(ptr, direct, _HELD, key)
        except CudaError:  # not enqueued (an interrupt may come after CUDA took it)
            del _held[key]
            raise
    else:
        _launch_notification(ptr, direct, entry)


def _launch_notification(ptr: int, direct: bool, entry: Entry) -> None:
    stream_queue = _stream_queue(ptr)
    with stream_queue.lock:
        stream_queue.entries.append(entry)
        try:
            enqueue_host_function(ptr, direct, _native.SEM_POST_ADDRESS, stream_queue.semaphore)
        except CudaError:  # not enqueued (an interrupt may come after CUDA took it)
            stream_queue.entries.pop()  # ours: the lock kept others out
            raise
        if stream_queue.thread is None:
            stream_queue.start_thread()


def _launch_captured(ptr: int, direct: bool, entry: Entry, hold_stream: bool) -> None:
    if not hold_stream and _graph_dispatcher is None:
        _start_graph_dispatcher()
    graph = call(_cuda.cudaStreamGetCaptureInfo, _cuda.stream_t(ptr))[2]
    release = _native.new_semaphore()
    user_object = call(
        _cuda.cudaUserObjectCreate,
        release,
        _cuda.host_fn_t(_native.SEM_POST_ADDRESS),
        1,
        _cuda.USER_OBJECT_NO_DESTRUCTOR_SYNC,
    )
    call(_cuda.cudaGraphRetainUserObject, graph, user_object, 1, _cuda.GRAPH_USER_OBJECT_MOVE)
    key = _next_key()
    _captured[key] = (entry, release)
    # The driver's entry point, never cuda.bindings' runtime wrapper: that one is
    # freed after the first replay (cuda-python #790).
    status = _cuda.launch_host_func(ptr, _HELD_CAPTURED if hold_stream else _NOTIFY_CAPTURED, key)
    if status:
        del _captured[key]
        raise CudaError(
            _cuda.ERROR_NOT_SUPPORTED,
            "cuLaunchHostFunc",
            explanation="the driver refused a host function in a capturing stream "
            f"(CUresult {status})",
        )


def _release_finished_graphs() -> None:
    """Drop the entries of captured callbacks whose graphs CUDA has destroyed."""
    for key, (_, release) in list(_captured.items()):
        if _native.try_take(release):
            del _captured[key]


def pending_count() -> int:
    """Launched callbacks that have not run yet (captured ones not counted)."""
    return len(_held) + sum(len(q.entries) for q in list(_queues.values()))


def captured_count() -> int:
    """Callbacks kept for CUDA graphs that still exist (as far as extstream knows yet)."""
    _release_finished_graphs()
    return len(_captured)


def raise_if_holding_stream(what: str) -> None:
    """Refuse a blocking wait on CUDA's host-function thread: it would deadlock."""
    if threading.get_ident() in callback_threads:
        raise RuntimeError(
            f"{what} inside a host callback launched with hold_stream=True would wait "
            "for work that waits for this callback (deadlock); use hold_stream=False "
            "for callbacks that need to wait"
        )


def _at_exit() -> None:
    global _dropping
    _dropping = True
    deadline = time.monotonic() + _EXIT_TIMEOUT
    while _held and time.monotonic() < deadline:
        time.sleep(0.002)  # CUDA's thread runs (and skips) the held callbacks meanwhile
    dropped = _dropped + pending_count()
    if dropped:
        warnings.warn(
            f"extstream dropped {dropped} host callback(s) still pending at interpreter exit",
            RuntimeWarning,
            stacklevel=1,
        )
    if _held:
        # The GPU has not reached them: CUDA's thread would enter Python after
        # finalization, which can crash or hang. Leave before that can happen.
        sys.stderr.write(
            f"extstream: {len(_held)} held host callback(s) still not reached by the GPU "
            f"after {_EXIT_TIMEOUT} s at exit; exiting now (EXTSTREAM_EXIT_TIMEOUT sets the wait)\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    # The parent's callbacks and dispatchers are not ours, and any of these locks
    # may have been held by another thread at the fork.
    global _graph_dispatcher, _graph_dispatcher_lock, _queues_lock
    _graph_dispatcher = None
    _graph_dispatcher_lock = threading.Lock()
    _queues_lock = threading.Lock()
    _held.clear()
    _captured.clear()
    _queues.clear()
    callback_threads.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


_unraisable_args_type: Any = None


def report_unraisable(exc: BaseException, message: str) -> None:
    """Hand *exc* to ``sys.unraisablehook``, as Python does for errors in ``__del__``."""
    global _unraisable_args_type
    if _unraisable_args_type is None:
        _unraisable_args_type = _find_unraisable_args_type()
    sys.unraisablehook(_unraisable_args_type((type(exc), exc, exc.__traceback__, message, None)))


def _find_unraisable_args_type() -> Any:
    # The hook's argument type is not exported: catch one from a throwaway object.
    caught: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = caught.append

    class _Probe:
        def __del__(self) -> None:
            raise RuntimeError

    try:
        _Probe()
    finally:
        sys.unraisablehook = hook
    return type(caught[0])
