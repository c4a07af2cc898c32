"""Host callbacks: Python code that runs when a stream reaches a point.

Three ways a callback reaches Python, each chosen by measurement
(benchmarks/callbacks.py) or forced by a rule:

- *held* (``hold_stream=True``): a ctypes host function runs the callback on
  CUDA's host-function thread, taking the GIL there (as CuPy does), so later
  work on the stream waits until it returned. The launch keeps
  ``(function, args, context)`` in a table under an int key until it ran.
- *notify* (``hold_stream=False``): the host functions are libc's ``sem_post``,
  which needs no GIL: one posts the stream's own semaphore, the next the
  dispatcher's doorbell. One dispatcher thread for all streams (started on
  demand, gone after 10 s without work) wakes at the doorbell and runs each
  stream's callbacks in launch order as far as that stream's semaphore allows,
  so the thread count stays bounded whatever the number of streams; a
  stream's queue and semaphore are let go (the semaphore reused) once it is
  empty. The GPU never waits for Python, and CUDA's thread never touches
  Python, so no GIL deadlock is possible.
- *captured*: a launch into a stream that is being captured into a CUDA graph
  becomes a graph node that fires on every replay, so its entry is not removed
  when it runs. CUDA owns a user object per entry whose destructor (again a
  GIL-free ``sem_post``) tells extstream when the graph and all its instances
  are gone; launches look at a few entries each, so each such entry is dropped
  soon after, and its semaphore serves again.

Every launch goes through the driver's ``cuLaunchHostFunc`` (never
cuda.bindings' runtime trampoline, which takes the GIL on CUDA's thread), and
Python that runs on CUDA's thread is marked, so that nothing extstream runs
there calls CUDA (a collection there defers its destroys). extstream's own
threads (the dispatchers, the reaper) run in relaxed capture mode, so that
they never break a graph capture of another thread.

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
import contextlib
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
from ._errors import CudaError, call, report_unraisable
from ._handles import (
    callback_threads,
    capture_status,
    enqueue_host_function,
    launch_error,
    on_reaper,
    relax_capture_mode,
    start_reaper,
    stream_device,
    stream_done,
)
from ._short import short_repr

_EXIT_TIMEOUT: Final = _config.exit_timeout()

# An entry: [function, args, context]. Lists, so that a failed launch can find
# and remove its own entry by identity.
Entry = list[Any]
# The stream a held callback waits on: (handle, device for 0/1/2 else -1).
_Where = tuple[int, int]
_CAPTURE_ACTIVE: Final = 1  # cudaStreamCaptureStatusActive

# The tables are dicts and deques used one operation at a time (atomic with the
# GIL, and thread-safe per object in free-threaded builds), and keys come from
# one counter, so they need no lock of their own.
_held: dict[int, tuple[Entry, _Where]] = {}
# key -> (entry, release semaphore, device of the graph)
_captured: dict[int, tuple[Entry, int, int]] = {}
_captured_keys: collections.deque[int] = collections.deque()  # looked at in turn
_LOOKS_PER_LAUNCH: Final = 4
_next_key = itertools.count(1).__next__
_dropping = False  # set at exit: callbacks that still arrive are skipped
_dropped = 0


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
        report_unraisable(exc, "Exception ignored in extstream host callback", function)


def _on_cudas_thread(function: Callable[[int], None]) -> int:
    """A C host function that runs ``function(user_data)`` marked as on CUDA's
    host-function thread: blocking waits refuse there, and destroys defer."""

    def host_function(user_data: int) -> None:
        ident = threading.get_ident()
        callback_threads.add(ident)
        try:
            function(user_data)
        finally:
            callback_threads.discard(ident)

    return _native.host_function(host_function)


def _run_held(key: int) -> None:
    _run(_held.pop(key)[0])


def _run_captured(key: int) -> None:
    item = _captured.get(key)
    if item is not None:
        _run(item[0], replay=True)


def _notify_captured(key: int) -> None:
    _captured_ready.put(key)  # the graph dispatcher runs it


_HELD: Final = _on_cudas_thread(_run_held)
_HELD_CAPTURED: Final = _on_cudas_thread(_run_captured)
_NOTIFY_CAPTURED: Final = _on_cudas_thread(_notify_captured)


class _StreamQueue:
    """The notifications of one stream, in launch order, and the semaphore CUDA
    posts for each."""

    __slots__ = ("entries", "key", "lock", "released", "semaphore")

    def __init__(self, key: object, semaphore: int) -> None:
        self.key = key
        self.entries: collections.deque[Entry] = collections.deque()
        self.lock = threading.Lock()  # launch order must be queue order
        self.semaphore = semaphore
        self.released = False  # let go by the dispatcher: a launch takes a new queue


_DISPATCHER_IDLE = 10.0  # seconds without work before the dispatcher ends; tests shorten it
_RESCAN: Final = 0.1  # the dispatcher also looks this often, and lets empty queues go
_KEEP_EMPTY: Final = 64  # empty queues kept for busy streams between looks
# Streams with a queue, by handle (special handles: by device, and thread for 2).
_queues: dict[object, _StreamQueue] = {}
_queues_lock = threading.Lock()
_free_semaphores: list[int] = []  # of queues let go, all taken to 0
_doorbell: Final = _native.new_semaphore()  # posted after each notification's own post
_dispatcher: threading.Thread | None = None
_dispatcher_lock = threading.Lock()
_captured_ready: queue.SimpleQueue[int] = queue.SimpleQueue()
_graph_dispatcher: threading.Thread | None = None
_graph_dispatcher_lock = threading.Lock()


def _dispatch_captured_forever() -> None:
    relax_capture_mode()
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


class _ThreadToken(threading.local):
    """An object per thread, for the thread's lifetime: handle 2 names a stream per
    host thread, and a new thread gets a new, idle one even where the OS hands it
    an ended thread's id (``threading.get_ident()``)."""

    def __init__(self) -> None:
        self.token = object()


_thread = _ThreadToken()


def _queue_key(ptr: int) -> object:
    # Special handles are per device, and handle 2 is per thread as well.
    if ptr > 2:
        return ptr
    return (ptr, _device.current_device(), _thread.token if ptr == 2 else None)


def _spare_semaphore() -> int:
    """A semaphore at 0 with no post to come: one let go, or a new one."""
    try:
        return _free_semaphores.pop()
    except IndexError:
        return _native.new_semaphore()


def _stream_queue(key: object) -> _StreamQueue:
    stream_queue = _queues.get(key)
    if stream_queue is None:
        with _queues_lock:
            stream_queue = _queues.get(key)
            if stream_queue is None:
                stream_queue = _queues[key] = _StreamQueue(key, _spare_semaphore())
    return stream_queue


def _run_posted() -> None:
    """Run, for every stream, the callbacks whose posts have come, in order."""
    for stream_queue in list(_queues.values()):
        entries, semaphore = stream_queue.entries, stream_queue.semaphore
        while entries and _native.try_take(semaphore):  # a post always follows its entry
            _run(entries.popleft())


def _let_empty_queues_go() -> None:
    for stream_queue in list(_queues.values()):
        with _queues_lock, stream_queue.lock:  # a launch appends under the queue's lock
            if stream_queue.entries or stream_queue.released:
                continue
            stream_queue.released = True
            del _queues[stream_queue.key]
        if not _native.try_take(stream_queue.semaphore):  # a stray post: never reuse it
            _free_semaphores.append(stream_queue.semaphore)


def _dispatch() -> None:
    """The dispatcher: run notifications as CUDA posts them; end after a quiet spell."""
    global _dispatcher
    relax_capture_mode()
    quiet_since = time.monotonic()
    while True:
        rang = _native.take_within(_doorbell, _RESCAN)
        _run_posted()
        if rang:
            quiet_since = time.monotonic()
        if not rang or len(_queues) > _KEEP_EMPTY:
            _let_empty_queues_go()
        if not rang and time.monotonic() - quiet_since > _DISPATCHER_IDLE:
            with _dispatcher_lock:  # a launch checks for a dispatcher after it queued
                if not _queues:
                    _dispatcher = None
                    return


def _ensure_dispatcher() -> None:
    """Start the dispatcher unless one runs (a launch asks only when it saw none)."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            _dispatcher = threading.Thread(
                target=_dispatch, name="extstream-callbacks", daemon=True
            )
            _dispatcher.start()


def launch(
    ptr: int,
    direct: bool,
    function: Callable[..., object],
    args: tuple[object, ...],
    hold_stream: bool,
) -> None:
    """Enqueue ``function(*args)`` on the stream *ptr* (see the module doc)."""
    if not callable(function):
        raise TypeError(f"callback must be callable, not {short_repr(function)}")
    if not isinstance(hold_stream, bool):
        raise TypeError(f"hold_stream must be a bool, not {short_repr(hold_stream)}")
    entry: Entry = [function, args, contextvars.copy_context()]
    if hold_stream:  # Python will run on CUDA's thread, where a collection can destroy
        start_reaper()
    if _captured:
        _release_finished_graphs(_LOOKS_PER_LAUNCH)
    # Only an active capture makes a graph node; into an invalidated one CUDA
    # refuses the launch below with its own error.
    if capture_status(ptr, direct) == _CAPTURE_ACTIVE:
        _launch_captured(ptr, direct, entry, hold_stream)
    elif hold_stream:
        key = _next_key()
        _held[key] = (entry, (ptr, _device.current_device() if ptr <= 2 else -1))
        try:
            enqueue_host_function(ptr, direct, _HELD, key)
        except CudaError:  # not enqueued (an interrupt may come after CUDA took it)
            del _held[key]
            raise
    else:
        _launch_notification(ptr, direct, entry)


def _launch_notification(ptr: int, direct: bool, entry: Entry) -> None:
    key = _queue_key(ptr)
    while True:
        stream_queue = _stream_queue(key)
        with stream_queue.lock:
            if stream_queue.released:  # let go just now: take the stream's new queue
                continue
            stream_queue.entries.append(entry)
            try:
                enqueue_host_function(ptr, direct, _native.SEM_POST_ADDRESS, stream_queue.semaphore)
            except CudaError:  # not enqueued
                stream_queue.entries.pop()  # ours: the lock kept others out
                raise
            break
    if _dispatcher is None:  # checked after queueing: a dispatcher ending now sees the entry
        _ensure_dispatcher()
    try:  # noqa: SIM105 - a hot path: suppress() would cost a context manager per call
        enqueue_host_function(ptr, direct, _native.SEM_POST_ADDRESS, _doorbell)
    except CudaError:  # the dispatcher's next look finds the stream's post all the same
        pass


def _launch_captured(ptr: int, direct: bool, entry: Entry, hold_stream: bool) -> None:
    start_reaper()  # a graph node of either mode runs Python on CUDA's thread
    if not hold_stream and _graph_dispatcher is None:
        _start_graph_dispatcher()
    device = stream_device(ptr, direct)  # from its context: a capture allows it
    graph = call(_cuda.cudaStreamGetCaptureInfo, _cuda.stream_t(ptr))[2]
    release = _spare_semaphore()
    try:
        user_object = call(
            _cuda.cudaUserObjectCreate,
            release,
            _cuda.host_fn_t(_native.SEM_POST_ADDRESS),
            1,
            _cuda.USER_OBJECT_NO_DESTRUCTOR_SYNC,
        )
    except CudaError:
        _free_semaphores.append(release)  # no user object: no post will come
        raise
    try:
        call(_cuda.cudaGraphRetainUserObject, graph, user_object, 1, _cuda.GRAPH_USER_OBJECT_MOVE)
    except CudaError:
        # Ours alone: releasing it runs its destructor, whose late post keeps the
        # semaphore from serving again.
        _cuda.cudaUserObjectRelease(user_object, 1)
        raise
    key = _next_key()
    _captured[key] = (entry, release, device)
    _captured_keys.append(key)
    status = _cuda.launch_host_func(ptr, _HELD_CAPTURED if hold_stream else _NOTIFY_CAPTURED, key)
    if status:  # the graph keeps the user object: its semaphore goes with the graph
        del _captured[key]
        raise launch_error(ptr, status)


def _release_finished_graphs(looks: int | None = None) -> None:
    """Drop the entries of captured callbacks whose graphs CUDA has destroyed: look
    at *looks* entries in turn (None: all), so that a launch costs no scan."""
    keys = _captured_keys
    for _ in range(len(keys) if looks is None else min(looks, len(keys))):
        try:
            key = keys.popleft()
        except IndexError:  # another thread took the last meanwhile
            return
        item = _captured.get(key)
        if item is None:  # its launch failed
            continue
        if _native.try_take(item[1]):  # the graph is gone: the entry and semaphore are free
            del _captured[key]
            _free_semaphores.append(item[1])
        else:
            keys.append(key)


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


def _failed(where: _Where) -> bool:
    """Whether the stream's context has a sticky error (a kernel fault).

    After one CUDA runs no host function in the context any more, and every
    call returns the error, an idle query included.
    """
    ptr, device = where
    try:
        if ptr > 2:
            stream_done(ptr, True)  # a launch went through the driver: so may this
        else:
            with _device.on_device(device):
                stream_done(ptr, False)
    except CudaError:
        return True
    return False


def _held_reachable() -> int:
    """Held callbacks pending on streams whose context can still run them."""
    pending = [where for _, where in list(_held.values())]
    failed = {where for where in set(pending) if _failed(where)}
    return sum(where not in failed for where in pending)


def _graphs_settled(deadline: float) -> bool:
    """Wait until the devices of graphs that hold captured callbacks have finished
    their queued work (replays included), by *deadline*; whether they did."""
    devices = {device for _, _, device in list(_captured.values())}
    if not devices:
        return True
    settled = threading.Event()

    def synchronize(_: int) -> None:
        for device in devices:
            with contextlib.suppress(CudaError):  # a fault: that device runs no more
                _device.synchronize(device)
        settled.set()

    # On the reaper, which every captured launch started: Python 3.12+ starts no
    # thread at exit, and the wait must not outlast the deadline.
    on_reaper(synchronize, 0)
    return settled.wait(max(0.0, deadline - time.monotonic()))


def _at_exit() -> None:
    global _dropping
    _dropping = True
    deadline = time.monotonic() + _EXIT_TIMEOUT
    while _held and time.monotonic() < deadline and _held_reachable():
        time.sleep(0.002)  # CUDA's thread runs (and skips) the held callbacks meanwhile
    # Graph nodes run Python on CUDA's thread too, in both modes: replays still
    # queued must pass before the interpreter finalizes.
    graphs_settled = _graphs_settled(deadline)
    dropped = _dropped + pending_count()
    if dropped:
        warnings.warn(
            f"extstream dropped {dropped} host callback(s) still pending at interpreter exit",
            RuntimeWarning,
            stacklevel=1,
        )
    unreached = _held_reachable() if _held else 0
    if unreached or not graphs_settled:
        # The GPU has not reached them: CUDA's thread would enter Python after
        # finalization, which can crash or hang. Leave before that can happen.
        # (After a fault it never will: then the exit goes on as usual.)
        what = (
            f"{unreached} held host callback(s)"
            if unreached
            else "replays of graphs with host callbacks"
        )
        sys.stderr.write(
            f"extstream: {what} still not reached by the GPU after {_EXIT_TIMEOUT} s at "
            "exit; exiting now (EXTSTREAM_EXIT_TIMEOUT sets the wait)\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    # The parent's callbacks and dispatchers are not ours, and any of these locks
    # may have been held by another thread at the fork.
    global _dispatcher, _dispatcher_lock, _graph_dispatcher, _graph_dispatcher_lock, _queues_lock
    _dispatcher = _graph_dispatcher = None
    _dispatcher_lock = threading.Lock()
    _graph_dispatcher_lock = threading.Lock()
    _queues_lock = threading.Lock()
    _held.clear()
    _captured.clear()
    _captured_keys.clear()
    _queues.clear()
    _free_semaphores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
