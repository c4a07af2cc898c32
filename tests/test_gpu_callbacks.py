"""Host callbacks on a real GPU: order, holding the stream, lifetime, errors, context."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import time
import weakref
from typing import Any

import pytest

from extstream import CudaError, ExternalStream, Stream
from extstream import _callbacks as extstream_callbacks

from .gpu_helpers import capture, sleep_on, torch_or_skip, wait_until

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("hold_stream", [True, False])
def test_callbacks_run_in_stream_order(hold_stream: bool) -> None:
    streams = [Stream() for _ in range(4)]
    seen: dict[int, list[int]] = {i: [] for i in range(4)}
    n = 25_000  # 100k callbacks in all
    for i in range(n):
        for k, s in enumerate(streams):
            s.launch_host_func(seen[k].append, i, hold_stream=hold_stream)
    for s in streams:
        s.synchronize()
    assert wait_until(lambda: all(len(v) == n for v in seen.values()), timeout=60)
    for k in range(4):
        assert seen[k] == list(range(n))
    for s in streams:
        s.close()


def test_hold_stream_true_holds_later_gpu_work(stream: Stream) -> None:
    torch = torch_or_skip()
    pinned = torch.zeros(1, dtype=torch.int64).pin_memory()
    on_gpu = torch.zeros(1, dtype=torch.int64, device="cuda")
    sleep_on(stream, 0.1)  # the callback runs late: without holding, the copy reads 0
    stream.launch_host_func(lambda t: t.fill_(42), pinned)
    with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):
        on_gpu.copy_(pinned, non_blocking=True)
    stream.synchronize()
    assert on_gpu.item() == 42


def test_hold_stream_false_does_not_hold_the_stream(stream: Stream) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(_: object) -> None:
        started.set()
        release.wait(10)

    stream.launch_host_func(slow, None, hold_stream=False)
    assert started.wait(5)
    stream.synchronize(timeout=5)  # the GPU went on while the callback still runs
    release.set()


def test_arg_lives_until_the_callback_ran(stream: Stream) -> None:
    class Payload:
        pass

    seen: list[str] = []
    sleep_on(stream, 1.0)
    payload = Payload()
    ref = weakref.ref(payload)
    stream.launch_host_func(lambda p: seen.append(type(p).__name__), payload)
    del payload
    gc.collect()
    assert not stream.done and seen == []  # still pending, and only the launch holds it
    assert ref() is not None
    stream.synchronize()
    assert seen == ["Payload"]
    gc.collect()
    assert ref() is None


def test_exceptions_reach_unraisablehook_and_later_callbacks_run(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    seen: list[int] = []

    def boom(_: object) -> None:
        raise ValueError("from a callback")

    stream.launch_host_func(boom, None)
    stream.launch_host_func(seen.append, 1)
    stream.synchronize()
    assert seen == [1]
    assert len(reports) == 1
    assert isinstance(reports[0].exc_value, ValueError)
    assert "host callback" in reports[0].err_msg


@pytest.mark.parametrize("hold_stream", [True, False])
def test_a_raising_unraisablehook_stops_nothing(
    stream: Stream, monkeypatch: pytest.MonkeyPatch, hold_stream: bool
) -> None:
    hook_calls: list[Any] = []

    def raising_hook(report: Any) -> None:
        hook_calls.append(report)
        raise RuntimeError("the hook itself fails")

    monkeypatch.setattr(sys, "unraisablehook", raising_hook)
    seen: list[int] = []

    def boom(_: object) -> None:
        raise ValueError("from a callback")

    async def awaited() -> bool:
        await stream
        return True

    for round_ in range(3):
        stream.launch_host_func(boom, None, hold_stream=hold_stream)
        stream.launch_host_func(seen.append, round_, hold_stream=hold_stream)
        assert asyncio.run(awaited())
        stream.synchronize()
    assert wait_until(lambda: seen == [0, 1, 2])
    assert len(hook_calls) == 3


def test_callback_sees_the_enqueuers_context(stream: Stream) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    var.set("enqueued")
    stream.launch_host_func(lambda _: seen.append(var.get()), None)
    var.set("later")
    stream.synchronize()
    assert seen == ["enqueued"]


def test_add_callback_passes_stream_status_and_arg(stream: Stream) -> None:
    seen: list[tuple[Any, ...]] = []
    stream.add_callback(lambda s, status, arg: seen.append((s, status, arg)), "x")
    stream.add_callback(
        lambda s, status, arg: seen.append((s, status, arg)), "y", hold_stream=False
    )
    stream.synchronize()
    assert wait_until(lambda: len(seen) == 2)
    assert sorted(seen, key=lambda t: t[2]) == [(stream, 0, "x"), (stream, 0, "y")]


def test_waiting_inside_a_held_callback_raises(stream: Stream) -> None:
    errors: list[BaseException] = []

    def wait_for_own_stream(s: ExternalStream) -> None:
        try:
            s.synchronize()
        except RuntimeError as exc:
            errors.append(exc)

    stream.launch_host_func(wait_for_own_stream, stream)
    stream.synchronize()
    assert len(errors) == 1 and "deadlock" in str(errors[0])


def test_callbacks_need_a_callable(stream: Stream) -> None:
    with pytest.raises(TypeError, match="callable"):
        stream.launch_host_func(42, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hold_stream"):
        stream.launch_host_func(print, None, hold_stream=1)  # type: ignore[arg-type]


def test_callbacks_from_a_thread_that_never_used_cuda(stream: Stream) -> None:
    seen: list[int] = []
    worker = threading.Thread(target=lambda: stream.launch_host_func(seen.append, 1))
    worker.start()
    worker.join()
    stream.synchronize()
    assert seen == [1]


@pytest.mark.parametrize("hold_stream", [True, False])
def test_captured_callbacks_fire_on_every_replay_and_are_released(hold_stream: bool) -> None:
    fired: list[int] = []
    with capture() as (stream, graphs):
        stream.launch_host_func(fired.append, 7, hold_stream=hold_stream)
    captured = extstream_callbacks.captured_count()
    assert captured >= 1
    for _ in range(5):
        graphs[0].replay()
    stream.synchronize()
    assert wait_until(lambda: len(fired) >= 5)
    assert fired == [7] * 5  # the capture itself does not run it
    graphs[0].destroy()
    graphs.clear()
    gc.collect()
    stream.synchronize()
    assert wait_until(lambda: extstream_callbacks.captured_count() == captured - 1)


def test_waiting_on_a_capturing_stream_raises_and_enqueues_nothing() -> None:
    errors: list[CudaError] = []
    pending = extstream_callbacks.pending_count()
    try:
        with capture() as (stream, _):
            for wait in (lambda: stream.done, stream.synchronize):
                try:
                    wait()
                except CudaError as exc:
                    errors.append(exc)
    except (RuntimeError, CudaError):
        pass  # the capture that the refused query invalidated is reported
    assert [e.name.startswith("cudaErrorStreamCapture") for e in errors] == [True, True], errors
    assert extstream_callbacks.pending_count() == pending


def test_hold_stream_true_holds_later_work_generic(stream: Stream) -> None:
    finished: list[bool] = []

    def slow(_: object) -> None:
        time.sleep(0.2)
        finished.append(True)

    stream.launch_host_func(slow, None)
    after = stream.record()
    after.synchronize()  # completes only once the callback returned
    assert finished == [True]


@pytest.mark.parametrize("hold_stream", [True, False])
def test_replays_run_in_fresh_contexts_and_objects_go_with_the_graph(hold_stream: bool) -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []

    class Payload:
        pass

    def callback(_: object) -> None:
        seen.append(var.get())
        var.set(var.get() + 1)  # must not leak into the next replay

    payload = Payload()
    ref = weakref.ref(payload)
    with capture() as (stream, graphs):
        stream.launch_host_func(callback, payload, hold_stream=hold_stream)
    del payload
    for _ in range(3):
        graphs[0].replay()
        stream.synchronize()
    assert wait_until(lambda: len(seen) == 3)
    assert seen == [0, 0, 0]
    graphs[0].destroy()
    graphs.clear()
    gc.collect()
    stream.synchronize()

    def released() -> bool:
        stream.launch_host_func(lambda _: None, None)  # a launch drops finished graphs' entries
        stream.synchronize()
        gc.collect()
        return ref() is None

    assert wait_until(released)


def test_many_short_lived_streams_with_notifications_keep_threads_and_queues_bounded() -> None:
    before = threading.active_count()
    seen: list[int] = []
    for i in range(2000):
        short_lived = Stream()
        short_lived.launch_host_func(seen.append, i, hold_stream=False)
        short_lived.close()
    assert wait_until(lambda: len(seen) == 2000)
    # The simulator's stream workers end with their streams; extstream adds one
    # dispatcher for all, and lets every emptied queue go.
    assert wait_until(lambda: threading.active_count() <= before + 2)
    assert wait_until(lambda: len(extstream_callbacks._queues) <= 1)
    assert sorted(seen) == list(range(2000))
