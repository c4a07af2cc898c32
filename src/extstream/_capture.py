"""A guard for library code that must not break a graph capture it did not start.

CUDA's default stream capture mode is *global*: while any thread captures a
graph in that mode, a "potentially unsafe" call (a query, a synchronization, a
destroy, an allocation) from any other thread that is not in relaxed mode is
refused with ``cudaErrorStreamCaptureUnsupported``, and the refusal invalidates
the other thread's capture (``cuThreadExchangeStreamCaptureMode``; torch's
``torch.cuda.graph`` captures in global mode). A library whose background
thread polls an event can so break a user's capture; torch and NCCL each fixed
that inside themselves. :func:`relaxed_capture` is the fix as a public guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import _device, _handles
from ._backend import cuda as _cuda
from ._public import public


@public
@contextmanager
def relaxed_capture() -> Iterator[None]:
    """``with extstream.relaxed_capture():`` the calling thread's CUDA calls in the
    block can no longer break a graph capture that another thread makes.

    Sets the thread's stream capture mode to relaxed
    (``cuThreadExchangeStreamCaptureMode``) and restores the previous mode after
    the block, so blocks nest. It does not make a call legal that conflicts with
    a capture by its nature (querying a stream or event that is being captured
    still fails). extstream's own threads always run in relaxed mode. Without a
    usable driver it does nothing (nothing can capture then).
    """
    if not _cuda.load_driver_entry_points():
        yield
        return
    _device.note_use()
    previous = _handles.exchange_capture_mode(_cuda.CAPTURE_MODE_RELAXED)
    try:
        yield
    finally:
        _handles.exchange_capture_mode(previous)
