"""Tools for the CPU simulator, for tests and demos.

The simulator is the backend when ``EXTSTREAM_BACKEND=sim`` is set before
extstream is imported (``pytest --extstream-sim`` does that). Streams are made
with :class:`extstream.Stream` as on a GPU; these functions add what only a
simulator can do. Each raises ``RuntimeError`` when the simulator is not the
backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._backend import NAME
from ._backend import cuda as _backend
from ._errors import CudaError
from ._short import short_repr
from ._stream import as_stream

__all__ = ["Graph", "active", "busy", "capture", "history", "inject_error", "reset_device"]


def active() -> bool:
    """Whether the simulator is extstream's backend in this process."""
    return NAME == "sim"


def _sim() -> Any:
    if not active():
        raise RuntimeError(
            "extstream.sim needs the simulator backend: set EXTSTREAM_BACKEND=sim before "
            "importing extstream (pytest: --extstream-sim)"
        )
    return _backend


def _ptr(stream: object) -> int:
    return as_stream(stream).ptr


def _check(status: int, what: str) -> None:
    if status:
        raise CudaError(status, what)


def busy(stream: object, seconds: float) -> None:
    """Queue work that keeps *stream* busy for *seconds* (a kernel, as far as timing goes)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"seconds must be a number >= 0, not {short_repr(seconds)}")
    _check(_sim().busy(_ptr(stream), float(seconds)), "extstream.sim.busy")


def inject_error(stream: object, name: str) -> None:
    """Make *stream*'s next operation fail with the CUDA error *name*.

    Errors that break a GPU's context (``cudaErrorIllegalAddress``,
    ``cudaErrorLaunchFailure`` ...) are queued as failing work and then stick to
    the device: every later call on it fails too, as on a GPU
    (:func:`reset_device` clears that). Other errors are returned by the next
    call on the stream, once.
    """
    sim = _sim()
    try:
        code = sim.cudaError_t[name]
    except (KeyError, TypeError):  # TypeError: not a name (unhashable)
        known = ", ".join(e.name for e in sim.cudaError_t if e.value)
        raise ValueError(
            f"unknown CUDA error {short_repr(name)}; the simulator knows: {known}"
        ) from None
    if code == 0:
        raise ValueError("cudaSuccess is not an error")
    _check(sim.inject_error(_ptr(stream), int(code)), "extstream.sim.inject_error")


def history(stream: object) -> list[tuple[Any, ...]]:
    """What ran on *stream*, in order (the last 100,000 items): ``("busy", s)``,
    ``("record", event)``, ``("wait", event)``, ``("host function", address, data)``,
    ``("error", name)``."""
    ran = _sim().history(_ptr(stream))
    if ran is None:
        raise CudaError(400, "extstream.sim.history")
    return list(ran)


def reset_device(device_id: int = 0) -> None:
    """Clear a sticky error of the simulated device."""
    _sim().reset_device(device_id)


class Graph:
    """A captured graph: :meth:`replay` queues its work again, :meth:`destroy` frees it."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph

    def replay(self, stream: object) -> None:
        """Queue the captured work on *stream*."""
        target = _sim()._stream(_ptr(stream))
        if target is None:
            raise CudaError(400, "extstream.sim.Graph.replay")
        self._graph.replay(target)

    def destroy(self) -> None:
        """Destroy the graph: CUDA user objects retained by it are released."""
        self._graph.destroy()


@contextmanager
def capture(stream: object) -> Iterator[list[Graph]]:
    """Capture work queued on *stream* in the block; the list holds the :class:`Graph` after."""
    sim, ptr = _sim(), _ptr(stream)
    _check(sim.begin_capture(ptr), "cudaStreamBeginCapture")
    graphs: list[Graph] = []
    try:
        yield graphs
    finally:
        status, graph = sim.end_capture(ptr)
        _check(status, "cudaStreamEndCapture")
        graphs.append(Graph(graph))
