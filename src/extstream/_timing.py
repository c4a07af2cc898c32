"""``timed()``: the GPU time of the work a block queues, measured with events."""

from __future__ import annotations

from ._public import public
from ._stream import Event, ExternalStream, as_stream, get_current_stream


@public
class Timed:
    """Context manager from :func:`timed`; ``.ms`` is the GPU time between enter and exit."""

    __slots__ = ("_end", "_start", "_stream")

    def __init__(self, stream: ExternalStream) -> None:
        self._stream = stream
        self._start = Event(timing=True, device_id=stream.device_id)
        self._end = Event(timing=True, device_id=stream.device_id)

    def __enter__(self) -> Timed:
        self._start.record(self._stream)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self._end.record(self._stream)

    @property
    def ms(self) -> float:
        """Milliseconds of GPU time; waits until the block's work has finished."""
        return self._start.elapsed_time(self._end)

    def __repr__(self) -> str:
        if not self._end.done:
            return f"<extstream.timed on {self._stream!r}: still running>"
        return f"<extstream.timed on {self._stream!r}: {self.ms:.3f} ms>"


@public
def timed(stream: object = None) -> Timed:
    """Time, on the GPU, the work queued on *stream* (None: the current stream) in a block.

    ``t.ms`` waits for the block's work, then gives its GPU time in milliseconds::

        with extstream.timed(s) as t:
            ...  # queue work on s
        print(t.ms)
    """
    target = get_current_stream() if stream is None else as_stream(stream)
    return Timed(target)
