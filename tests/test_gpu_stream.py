"""ExternalStream, Stream and Event on a real GPU: state, waiting, ordering, devices."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import extstream
from extstream import Event, ExternalStream, Stream
from extstream._backend import cuda as backend

from .conftest import run_python
from .gpu_helpers import capture, sleep_on, torch_or_skip

pytestmark = pytest.mark.gpu


def test_wrapping_a_handle_infers_its_device(stream: Stream) -> None:
    wrapped = ExternalStream(stream.ptr)
    assert wrapped.device_id == 0 == stream.device_id
    assert wrapped == stream and hash(wrapped) == hash(stream)
    assert wrapped.kind == "ordinary"


def test_special_handles_take_the_current_device() -> None:
    for ptr in (0, 1, 2):
        s = ExternalStream(ptr)
        assert s.device_id == 0
        assert s.done in (True, False)


def test_debug_checks_refuse_a_wrong_device(stream: Stream) -> None:
    previous = extstream.set_debug_checks(True)
    try:
        with pytest.raises(ValueError, match=r"belongs to device 0, not device_id=1"):
            ExternalStream(stream.ptr, 1)
        assert ExternalStream(stream.ptr, 0).device_id == 0
    finally:
        extstream.set_debug_checks(previous)


def test_a_given_device_is_trusted_without_checks(stream: Stream) -> None:
    previous = extstream.set_debug_checks(False)
    try:
        assert ExternalStream(stream.ptr, 7).device_id == 7
    finally:
        extstream.set_debug_checks(previous)


def test_done_follows_queued_work(stream: Stream) -> None:
    assert stream.done
    sleep_on(stream, 0.2)
    assert not stream.done
    stream.synchronize()
    assert stream.done


def test_synchronize_timeout(stream: Stream) -> None:
    sleep_on(stream, 0.5)
    with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
        stream.synchronize(timeout=0.05)
    stream.synchronize(timeout=10)
    assert stream.done


def test_attributes(stream: Stream) -> None:
    assert stream.is_nonblocking is True
    assert Stream(nonblocking=False).is_nonblocking is False
    assert stream.is_capturing is False
    assert stream.priority == 0
    high = Stream(priority=-1)
    assert high.priority == -1
    high.close()


def test_is_capturing_during_graph_capture() -> None:
    seen = []
    with capture() as (stream, _):
        seen.append(stream.is_capturing)
        # wrapping during capture, debug checks on: asking the device would break it
        previous = extstream.set_debug_checks(True)
        try:
            seen.append(ExternalStream(stream.ptr, 0).is_capturing)
        finally:
            extstream.set_debug_checks(previous)
    assert seen == [True, True]
    assert stream.is_capturing is False


def test_wrapping_a_capturing_stream_without_its_device_keeps_the_capture_valid() -> None:
    # The device comes from the stream's context, which a capture allows; CUDA's
    # cudaStreamGetDevice would invalidate the capture.
    event = Event()
    seen = []
    with capture() as (stream, graphs):
        wrapped = ExternalStream(stream.ptr)  # device_id=-1: asked on first need
        with wrapped:
            seen.append(extstream.get_current_stream() is wrapped)
        wrapped.record(event)
        seen += [wrapped == stream, hash(wrapped) == hash(stream), "device 0" in repr(wrapped)]
        seen.append(wrapped.is_capturing)
    assert seen == [True] * 5
    assert graphs  # the capture ended without error: it was still valid
    assert wrapped.device_id == 0
    event.close()


def test_record_and_wait_event_order_two_streams(stream: Stream) -> None:
    torch = torch_or_skip()
    consumer = Stream()
    x = torch.zeros(1 << 20, device="cuda")
    y = torch.empty_like(x)
    producer_torch = torch.cuda.ExternalStream(stream.ptr)
    consumer_torch = torch.cuda.ExternalStream(consumer.ptr)
    sleep_on(stream, 0.2)
    with torch.cuda.stream(producer_torch):
        x.fill_(7)
    event = stream.record()
    assert isinstance(event, Event) and event.device_id == 0
    consumer.wait_event(event)
    with torch.cuda.stream(consumer_torch):
        y.copy_(x)
    assert not consumer.done  # the copy waits behind the producer's sleep
    consumer.synchronize()
    assert bool((y == 7).all())
    consumer.close()


def test_wait_for_another_stream(stream: Stream) -> None:
    other = Stream()
    sleep_on(other, 0.2)
    stream.wait(other)
    assert not stream.done
    other.synchronize()
    stream.synchronize()
    assert stream.done
    other.close()


def test_waits_on_streams_reuse_one_event_yet_keep_what_each_waits_for(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, idle, third = Stream(), Stream(), Stream()
    third.wait(idle)  # this thread's marker event of device 0 exists from here on
    created: list[int] = []
    original = backend.cudaEventCreateWithFlags

    def counting(*args: object) -> object:
        created.append(1)
        return original(*args)

    monkeypatch.setattr(backend, "cudaEventCreateWithFlags", counting)
    sleep_on(slow, 1.0)
    stream.wait(slow)  # the marker recorded on the busy stream
    third.wait(idle)  # ... and recorded anew on an idle one
    third.synchronize()
    assert not stream.done  # still behind slow's work: the re-record did not move its wait
    slow.synchronize()
    stream.synchronize()
    assert created == []  # no event made (or destroyed) per wait
    for each in (slow, idle, third):
        each.close()


def test_each_thread_waits_with_its_own_marker(stream: Stream) -> None:
    other, busy = Stream(), Stream()
    sleep_on(busy, 1.0)
    stream.wait(busy)
    thread = threading.Thread(target=other.wait, args=(Stream(),))
    thread.start()
    thread.join()
    assert not stream.done  # the other thread's wait recorded no event this one uses
    busy.synchronize()
    stream.synchronize()
    other.close()
    busy.close()


def test_event_timing_and_errors(stream: Stream) -> None:
    start, end = Event(timing=True), Event(timing=True)
    start.record(stream)
    sleep_on(stream, 0.05)
    end.record(stream)
    ms = start.elapsed_time(end)
    assert 20 < ms < 1000
    assert end.done
    untimed = stream.record()
    with pytest.raises(ValueError, match="timing=True"):
        start.elapsed_time(untimed)
    with pytest.raises(ValueError, match="interprocess"):
        Event(timing=True, interprocess=True)


def test_event_record_defaults_to_the_current_stream(stream: Stream) -> None:
    event = Event()
    with stream:
        sleep_on(stream, 0.2)
        event.record()
    assert not event.done
    with pytest.raises(TimeoutError):
        event.synchronize(timeout=0.02)
    event.synchronize()
    assert event.done


def test_record_into_a_given_event(stream: Stream) -> None:
    event = Event()
    assert stream.record(event) is event


def test_stream_close_and_use_after_close() -> None:
    s = Stream()
    ptr = s.ptr
    s.close()
    s.close()
    assert s.closed
    assert repr(s) == f"<extstream.Stream {ptr:#x} on device 0, closed>"
    for use in (lambda: s.done, s.synchronize, s.record, lambda: s.launch_host_func(print, 1)):
        with pytest.raises(ValueError, match="closed stream"):
            use()


def test_garbage_collection_destroys_owned_objects() -> None:
    s, e = Stream(), Event()
    refs = weakref.ref(s), weakref.ref(e)
    del s, e
    gc.collect()
    assert refs[0]() is None and refs[1]() is None


def test_event_close_and_with() -> None:
    with pytest.warns(DeprecationWarning, match=r"contextlib\.closing"), Event() as e:
        assert not e.closed
    assert e.closed
    with pytest.raises(ValueError, match="closed event"):
        e.synchronize()


def test_current_stream_on_the_gpu(stream: Stream) -> None:
    assert extstream.get_current_stream().ptr == 0
    with stream:
        assert extstream.get_current_stream() is stream
        assert extstream.get_current_stream(0) is stream
    assert extstream.get_current_stream().ptr == 0


def test_stream_on_a_missing_device_names_it_and_the_count() -> None:
    with pytest.raises(ValueError, match=r"device_id=64, but this process sees \d+ device"):
        Stream(device_id=64)


@pytest.mark.parametrize("ptr", [12345, 2**64 - 5, 0x10, 2**63])
def test_bad_handles_raise_instead_of_crashing(ptr: int) -> None:
    # CuPy's ExternalStream(-5).done dies with SIGSEGV; run in a child to be sure.
    result = run_python(
        "import extstream\n"
        f"s = extstream.ExternalStream({ptr})\n"
        "for op in (lambda: s.done, s.synchronize, lambda: s.device_id):\n"
        "    try:\n"
        "        op()\n"
        "    except extstream.CudaError as exc:\n"
        "        print(exc.name)\n"
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split() == ["cudaErrorInvalidResourceHandle"] * 3


def test_hot_calls_go_straight_to_the_driver(stream: Stream) -> None:
    assert stream.done
    assert backend.direct_driver_calls, "fell back to the slower cuda.bindings path"


def test_calls_from_a_new_thread_without_a_cuda_context(stream: Stream) -> None:
    # The direct driver calls need a current context; a new thread has none,
    # so extstream repeats the call through the runtime, which sets it up.
    results: list[object] = []

    def work() -> None:
        event = Event()
        legacy = ExternalStream(0)
        results.extend([stream.done, legacy.done])
        stream.record(event)
        legacy.wait_event(event)
        legacy.synchronize()
        results.append(event.done)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert results == [True, True, True]


def test_a_closed_stream_cannot_be_wrapped() -> None:
    s = Stream()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        ExternalStream(s)


def test_zero_timeout_does_not_wait(stream: Stream) -> None:
    sleep_on(stream, 0.3)
    with pytest.raises(TimeoutError):
        stream.synchronize(timeout=0)
    with pytest.raises(TimeoutError):
        stream.record().synchronize(timeout=0)


def test_timed_measures_the_blocks_gpu_time(stream: Stream) -> None:
    with extstream.timed(stream) as timing:
        sleep_on(stream, 0.05)
    assert 40 < timing.ms < 1000
    assert repr(timing).endswith(" ms>")
    with stream, extstream.timed() as on_current:
        sleep_on(stream, 0.01)
    assert on_current.ms > 5


def test_jupyter_reprs_show_state(stream: Stream) -> None:
    sleep_on(stream, 0.3)
    event = stream.record()
    assert f"{stream.ptr:#x}" in stream._repr_html_()
    assert stream._repr_html_().endswith(": busy")
    assert event._repr_html_().endswith(": pending")
    stream.synchronize()
    assert stream._repr_html_().endswith(": idle")
    assert event._repr_html_().endswith(": complete")
