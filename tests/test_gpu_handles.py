"""What is done to a raw handle, on a GPU and on the simulator: each handle is checked
once, fixed attributes are asked once, foreign events go straight to CUDA."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extstream import Event, ExternalStream, Stream, _handles
from extstream._backend import cuda as backend

from .gpu_helpers import capture, sleep_on

pytestmark = pytest.mark.gpu


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """Record each call of the backend's *name* (still made) in the returned list."""
    calls: list[Any] = []
    original: Callable[..., Any] = getattr(backend, name)

    def counting(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(backend, name, counting)
    return calls


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    yield _count_calls(monkeypatch, "handle_is_valid")


def test_a_wrapped_handle_is_probed_once(stream: Stream, probes: list[Any]) -> None:
    wrapped = ExternalStream(stream.ptr, 0)
    owned = Event()
    event = Event.from_handle(owned.ptr, 0)  # a foreign handle: checked at first use
    for _ in range(3):
        assert wrapped.priority == 0
        assert wrapped.is_nonblocking
        assert not wrapped.is_capturing
        assert "idle" in wrapped._repr_html_()
        wrapped.record(event)
        wrapped.wait_event(event)
        wrapped.synchronize()
    assert [args[0] for args in probes] == [stream.ptr, event.ptr]
    owned.close()


def test_priority_and_flags_are_asked_once(stream: Stream, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _count_calls(monkeypatch, "cudaStreamGetPriority")
    flags_asked = _count_calls(monkeypatch, "cudaStreamGetFlags")
    high = Stream(priority=-1, nonblocking=False)
    assert [high.priority, high.priority, high.is_nonblocking, high.is_nonblocking] == [
        -1,
        -1,
        False,
        False,
    ]
    assert (len(asked), len(flags_asked)) == (1, 1)
    high.close()


class TorchLikeEvent:
    """Looks like a torch event to extstream: the module and the attribute it reads."""

    __module__ = "torch.cuda.streams"

    def __init__(self, handle: int) -> None:
        self.cuda_event = handle


TorchLikeEvent.__name__ = "Event"  # extstream recognises framework events by name


def test_framework_events_are_used_without_probing_or_wrapping(
    stream: Stream, probes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    owned = Event()
    torch_like = TorchLikeEvent(owned.ptr)
    wrapped: list[Any] = []
    original = Event.from_handle.__func__  # type: ignore[attr-defined]

    def counting_from_handle(cls: type[Event], *args: Any) -> Event:
        wrapped.append(args)
        event: Event = original(cls, *args)
        return event

    monkeypatch.setattr(Event, "from_handle", classmethod(counting_from_handle))
    other = Stream()
    sleep_on(stream, 0.1)
    recorded = stream.record(torch_like)  # returns an Event, as for any event given
    for _ in range(3):
        other.wait_event(torch_like)
    assert recorded.ptr == owned.ptr and not recorded.closed
    assert not other.done  # it waits for the sleep through the event
    other.synchronize()
    assert owned.done
    assert probes == []  # the handle came from the framework: nothing to probe
    assert len(wrapped) == 1  # only record() wraps, because it returns an Event
    other.close()
    owned.close()


def test_capture_queries_use_a_buffer_per_thread() -> None:
    addresses: set[int] = set()
    answers: list[bool] = []
    idle = Stream()  # made before the capture: a capture may refuse creating streams
    with capture() as (capturing, _):
        all_started = threading.Barrier(4)

        def ask() -> None:
            addresses.add(_handles._capture_status.address)
            all_started.wait()  # all alive at once: no thread's buffer can be reused
            for _ in range(200):
                answers.append(capturing.is_capturing and not idle.is_capturing)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    idle.close()
    assert len(addresses) == 4
    assert answers == [True] * 800


def test_after_await_the_stream_reads_done(stream: Stream) -> None:
    async def main() -> list[bool]:
        seen = []
        for _ in range(100):
            sleep_on(stream, 0.001)
            await stream
            seen.append(stream.done)
        return seen

    assert asyncio.run(main()) == [True] * 100
