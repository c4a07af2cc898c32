"""The simulator's model: stream order, the legacy stream, events, errors, devices.

In-process when the session runs on the simulator (CI); the subprocess tests run
everywhere.
"""

from __future__ import annotations

import threading
import time

import pytest

from extstream import CudaError, Event, ExternalStream, Stream, _sim, sim

from .conftest import run_python
from .gpu_helpers import wait_until

on_sim = pytest.mark.skipif(not sim.active(), reason="the session does not run on the simulator")


@on_sim
def test_busy_and_history(stream: Stream) -> None:
    sim.busy(stream, 0.1)
    event = stream.record()
    stream.launch_host_func(print, "x")
    assert not stream.done
    stream.synchronize()
    kinds = [entry[0] for entry in sim.history(stream)]
    # then the host function with which synchronize() waited, interruptibly
    assert kinds == ["busy", "record", "host function", "host function"]
    assert sim.history(stream)[1] == ("record", event.ptr)


@on_sim
def test_legacy_stream_waits_for_blocking_streams_only() -> None:
    blocking, nonblocking = Stream(nonblocking=False), Stream()
    legacy = ExternalStream(0)
    sim.busy(blocking, 0.2)
    after_blocking = legacy.record()
    assert not after_blocking.done  # legacy work waits for the blocking stream
    after_blocking.synchronize()
    sim.busy(nonblocking, 0.5)
    assert legacy.record().done or wait_done(legacy)  # not held by the non-blocking one
    assert not nonblocking.done
    sim.busy(legacy, 0.2)
    assert not blocking.record().done  # and blocking streams wait for the legacy stream
    for s in (blocking, nonblocking):
        s.synchronize()
        s.close()


def wait_done(stream: ExternalStream) -> bool:
    deadline = time.monotonic() + 0.1
    while not stream.done:
        if time.monotonic() > deadline:
            return False
    return True


@on_sim
def test_event_timing_is_real_time(stream: Stream) -> None:
    start, end = Event(timing=True), Event(timing=True)
    start.record(stream)
    sim.busy(stream, 0.05)
    end.record(stream)
    assert start.elapsed_time(end) >= 45


@on_sim
def test_injected_error_is_returned_once(stream: Stream) -> None:
    sim.inject_error(stream, "cudaErrorInvalidValue")
    with pytest.raises(CudaError, match="cudaErrorInvalidValue"):
        _ = stream.done
    assert stream.done


@on_sim
def test_sticky_error_breaks_the_device_until_reset(stream: Stream) -> None:
    other = Stream()
    sim.inject_error(stream, "cudaErrorIllegalAddress")
    with pytest.raises(CudaError) as info:
        stream.synchronize()
    assert info.value.status == 700
    with pytest.raises(CudaError, match="cudaErrorIllegalAddress"):
        _ = other.done
    sim.reset_device(0)
    assert other.done
    other.close()


@on_sim
def test_unknown_error_names_are_listed(stream: Stream) -> None:
    with pytest.raises(ValueError, match="cudaErrorIllegalAddress"):
        sim.inject_error(stream, "cudaErrorNoSuchThing")


@on_sim
def test_destroyed_stream_handles_are_detected() -> None:
    s = Stream()
    wrapper = ExternalStream(s.ptr)
    assert wrapper.done
    s.close()
    with pytest.raises(CudaError, match="cudaErrorInvalidResourceHandle"):
        _ = wrapper.done


def test_tools_refuse_the_real_backend() -> None:
    result = run_python(
        "import extstream.sim as sim\n"
        "try:\n"
        "    sim.busy(0, 1)\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', 'EXTSTREAM_BACKEND=sim' in str(exc))\n",
        env={"EXTSTREAM_BACKEND": "cuda"},
    )
    assert result.stdout.strip() == "refused: True", result.stderr


def test_two_simulated_devices() -> None:
    code = (
        "import extstream\n"
        "from extstream import sim, Stream, ExternalStream, get_current_stream\n"
        "extstream.set_debug_checks(True)\n"
        "s0, s1 = Stream(0), Stream(1)\n"
        "assert ExternalStream(s1.ptr).device_id == 1\n"
        "try:\n"
        "    ExternalStream(s1.ptr, 0)\n"
        "except ValueError as exc:\n"
        "    assert 'belongs to device 1' in str(exc)\n"
        "assert ExternalStream(0, 0) != ExternalStream(0, 1)\n"
        "with s1:\n"
        "    assert get_current_stream(1) is s1 and get_current_stream(0).ptr == 0\n"
        "sim.busy(s0, 0.2)\n"
        "s1.wait_event(s0.record())\n"
        "marker = s1.record()\n"
        "assert not marker.done\n"
        "marker.synchronize()\n"
        "assert s0.done\n"
        "print('ok')\n"
    )
    result = run_python(code, env={"EXTSTREAM_BACKEND": "sim", "EXTSTREAM_SIM_DEVICES": "2"})
    assert result.stdout.strip() == "ok", result.stderr


def test_bad_backend_name_is_refused() -> None:
    result = run_python("import extstream", env={"EXTSTREAM_BACKEND": "gpu"})
    assert result.returncode != 0
    assert "EXTSTREAM_BACKEND='gpu'" in result.stderr


def test_self_check_on_the_simulator() -> None:
    result = run_python(
        "import runpy; runpy.run_module('extstream', run_name='__main__')",
        env={"EXTSTREAM_BACKEND": "sim"},
    )
    assert result.returncode == 0, result.stderr
    assert "(sim backend)" in result.stdout and "all checks passed" in result.stdout


@on_sim
def test_worker_threads_end_with_their_streams() -> None:
    before = threading.active_count()
    streams = [Stream() for _ in range(20)]
    for s in streams:
        sim.busy(s, 0.01)
    for s in streams:
        s.synchronize()
        s.close()
    assert wait_until(lambda: threading.active_count() <= before)


@on_sim
def test_a_full_stream_holds_back_its_producer(stream: Stream) -> None:
    # As on a GPU, a launch waits for room once the stream holds a queue's worth
    # of work, so a producer cannot run ahead without bound.
    event = Event()
    sim.busy(stream, 0.5)
    launched: list[int] = []

    def produce() -> None:
        for _ in range(_sim.QUEUE_DEPTH + 1000):
            stream.record(event)
            launched.append(1)

    producer = threading.Thread(target=produce)
    producer.start()
    assert wait_until(lambda: len(launched) >= _sim.QUEUE_DEPTH - 1)
    time.sleep(0.05)
    # the busy work and the first records fill the queue; the rest waits for room
    assert len(launched) == _sim.QUEUE_DEPTH - 1 and producer.is_alive()
    producer.join(timeout=10)
    assert not producer.is_alive() and len(launched) == _sim.QUEUE_DEPTH + 1000
    stream.synchronize()


@on_sim
def test_idle_streams_keep_no_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread's per-thread default stream (handle 2) is never destroyed: its
    # worker ends once idle, and the next work starts another.
    monkeypatch.setattr(_sim, "_IDLE_WORKER", 0.05)
    before = threading.active_count()

    def use_own_default_stream() -> None:
        own = ExternalStream(2)
        sim.busy(own, 0.01)
        own.synchronize()

    threads = [threading.Thread(target=use_own_default_stream) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert wait_until(lambda: threading.active_count() <= before)
    use_own_default_stream()  # a worker again for work after the idle time


@on_sim
def test_host_functions_of_a_device_run_one_at_a_time() -> None:
    # As CUDA runs a context's host functions on one thread, a slow held callback
    # on one stream delays those of the device's other streams.
    first, second = Stream(), Stream()
    started = threading.Event()
    order: list[str] = []

    def slow(_: object) -> None:
        started.set()
        time.sleep(0.2)
        order.append("slow")

    first.launch_host_func(slow, None)
    assert started.wait(5)
    second.launch_host_func(order.append, "other")
    second.synchronize()
    first.synchronize()
    assert order == ["slow", "other"]
    first.close()
    second.close()
