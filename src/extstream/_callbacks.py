"""Host callbacks: Python code that runs when a stream reaches a point.

Each launch stores ``(function, args, context)`` in a table under a fresh int key
and enqueues a host function with that key as its user data; the table keeps the
Python objects alive until CUDA has called back, then drops them. Two host
functions exist, made once:

- *held* (``hold_stream=True``) runs the callback on CUDA's host-function
  thread, so later work on the stream waits until it returned;
- *notify* (``hold_stream=False``) only hands the key to a dispatcher thread and
  returns at once, so the GPU never waits for Python.

A callback that raises is reported through ``sys.unraisablehook`` and the process
goes on. Callbacks must not call CUDA (CUDA's rule for host functions); a wait
from a held callback, which could never finish, raises ``RuntimeError``.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _cuda
from ._errors import raise_cuda_error

_SUCCESS = _cuda.SUCCESS

_pending: dict[int, tuple[Callable[..., object], tuple[object, ...], contextvars.Context]] = {}
_next_key = itertools.count(1).__next__


# The threads on which CUDA has run held callbacks: CUDA's own host-function
# threads, where every blocking wait would wait for itself.
callback_threads: set[int] = set()


def _run(key: int) -> None:
    function, args, context = _pending.pop(key)
    try:
        context.run(function, *args)
    except BaseException as exc:  # a callback must never take the process down
        report_unraisable(exc, f"Exception ignored in extstream host callback {function!r}")


def _run_holding_stream(key: int) -> None:
    callback_threads.add(threading.get_ident())
    _run(key)


_dispatch_queue: queue.SimpleQueue[int] = queue.SimpleQueue()
_dispatcher: threading.Thread | None = None
_dispatcher_lock = threading.Lock()


def _dispatch_forever() -> None:
    get = _dispatch_queue.get
    while True:
        _run(get())


def _start_dispatcher() -> None:
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None or not _dispatcher.is_alive():
            _dispatcher = threading.Thread(
                target=_dispatch_forever, name="extstream-callbacks", daemon=True
            )
            _dispatcher.start()


_HELD = _cuda.host_function(_run_holding_stream)
_NOTIFY = _cuda.host_function(_dispatch_queue.put)


def launch(
    ptr: int,
    direct: bool,
    function: Callable[..., object],
    args: tuple[object, ...],
    hold_stream: bool,
) -> None:
    """Enqueue ``function(*args)`` on the stream *ptr*.

    *direct*: try the driver's entry point first (the handle is checked and
    needs no device switch); the runtime path runs otherwise, or if that fails.
    """
    if not callable(function):
        raise TypeError(f"callback must be callable, not {function!r}")
    if not isinstance(hold_stream, bool):
        raise TypeError(f"hold_stream must be a bool, not {hold_stream!r}")
    if not hold_stream and _dispatcher is None:
        _start_dispatcher()
    key = _next_key()
    _pending[key] = (function, args, contextvars.copy_context())
    host_function = _HELD if hold_stream else _NOTIFY
    if direct and not _cuda.launch_host_func(ptr, host_function, key):
        return
    err = _cuda.cudaLaunchHostFunc(_cuda.stream_t(ptr), _cuda.host_fn_t(host_function), key)[0]
    if err is not _SUCCESS:
        del _pending[key]
        raise_cuda_error(err, "cudaLaunchHostFunc")


def pending_count() -> int:
    """How many launched callbacks have not run yet."""
    return len(_pending)


def raise_if_holding_stream(what: str) -> None:
    """Refuse a blocking wait on CUDA's host-function thread: it would deadlock."""
    if threading.get_ident() in callback_threads:
        raise RuntimeError(
            f"{what} inside a host callback launched with hold_stream=True would wait "
            "for work that waits for this callback (deadlock); use hold_stream=False "
            "for callbacks that need to wait"
        )


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
