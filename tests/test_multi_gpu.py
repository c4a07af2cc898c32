"""Two devices: device inference, per-device current streams, cross-device ordering.

Marked ``multi_gpu(2)``: they run on a machine with two GPUs, and in CI on the
simulator with ``EXTSTREAM_SIM_DEVICES=2`` (the last test starts that run).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

import extstream
from extstream import ExternalStream, Stream, as_stream, get_current_stream

from .conftest import ROOT, stress_scenario
from .gpu_helpers import capture, sleep_on, torch_or_skip, wait_until

two_devices = pytest.mark.multi_gpu(2)


@two_devices
def test_wrapping_infers_the_other_device() -> None:
    other = Stream(1)
    assert extstream._device.current_device() == 0
    assert ExternalStream(other.ptr).device_id == 1
    previous = extstream.set_debug_checks(True)
    try:
        with pytest.raises(ValueError, match="belongs to device 1"):
            ExternalStream(other.ptr, 0)
    finally:
        extstream.set_debug_checks(previous)
    other.close()


@two_devices
def test_current_streams_are_per_device() -> None:
    mine = Stream(1)
    before = get_current_stream(0)
    with mine:
        assert get_current_stream(1) is mine
        assert get_current_stream(0) is before
    assert get_current_stream(1).ptr == 0
    legacy0, legacy1 = ExternalStream(0, 0), ExternalStream(0, 1)
    assert legacy0 != legacy1 and hash(legacy0) != hash(legacy1)
    mine.close()


@two_devices
def test_current_stream_follows_a_device_switch_made_elsewhere() -> None:
    # A framework switches devices with cudaSetDevice; extstream only reads it.
    cuda = extstream._backend.cuda
    mine, seen = Stream(1), []

    def other_thread() -> None:
        assert cuda.cudaSetDevice(1)[0] is cuda.SUCCESS
        seen.append(get_current_stream())
        with mine:
            seen.append(get_current_stream())
        assert cuda.cudaSetDevice(0)[0] is cuda.SUCCESS
        seen.append(get_current_stream())

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert [s.device_id for s in seen] == [1, 1, 0] and seen[1] is mine
    assert get_current_stream().device_id == 0  # this thread never switched
    mine.close()


@two_devices
def test_an_event_orders_work_across_devices() -> None:
    first, second = Stream(0), Stream(1)
    sleep_on(first, 0.3)
    second.wait_event(first.record())
    marker = second.record()
    assert not marker.done  # device 1 waits for device 0's work
    marker.synchronize()
    assert first.done
    first.close()
    second.close()


@two_devices
def test_peer_copy_ordered_by_an_event() -> None:
    torch = torch_or_skip()
    first, second = Stream(0), Stream(1)
    x = torch.zeros(1 << 20, device="cuda:0")
    sleep_on(first, 0.2)
    with torch.cuda.stream(torch.cuda.ExternalStream(first.ptr, device=0)):
        x.fill_(5)
    second.wait_event(first.record())
    with torch.cuda.device(1), torch.cuda.stream(torch.cuda.ExternalStream(second.ptr, device=1)):
        y = x.to("cuda:1", non_blocking=True)
    second.synchronize()
    assert bool((y == 5).all())


@two_devices
def test_callbacks_and_await_on_both_devices_in_threads_and_tasks() -> None:
    streams = [Stream(0), Stream(1)]
    seen: dict[int, list[int]] = {0: [], 1: []}

    def launch(device: int) -> None:
        for i in range(200):
            streams[device].launch_host_func(seen[device].append, i)
            streams[device].launch_host_func(seen[device].append, -i, hold_stream=False)

    workers = [threading.Thread(target=launch, args=(d,)) for d in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    async def main() -> None:
        for s in streams:
            sleep_on(s, 0.1)
        await asyncio.gather(*(asyncio.ensure_future(_await(s)) for s in streams))

    asyncio.run(main())
    assert wait_until(lambda: all(len(v) == 400 for v in seen.values()))
    for values in seen.values():
        assert [v for v in values if v > 0] == list(range(1, 200))
    for s in streams:
        s.close()


async def _await(stream: Stream) -> None:
    await stream


@two_devices
def test_framework_streams_of_device_1_wrap_with_their_device() -> None:
    torch = torch_or_skip()
    with torch.cuda.device(1):
        native = torch.cuda.Stream()
    assert as_stream(native).device_id == 1
    assert as_stream(torch.cuda.default_stream(1)).device_id == 1
    cupy = pytest.importorskip("cupy")
    with cupy.cuda.Device(1):
        cupy_stream = cupy.cuda.Stream(non_blocking=True)
    assert as_stream(cupy_stream).device_id == 1


@two_devices
def test_wrapping_a_capturing_stream_of_device_1_finds_it_and_keeps_the_capture() -> None:
    # The capture-safe lookup (the stream's context), with device 0 current.
    with capture(1) as (stream, graphs):
        wrapped = ExternalStream(stream.ptr)  # device_id=-1: asked from the stream
        assert extstream._device.current_device() == 0
        found = wrapped.device_id
        capturing = wrapped.is_capturing
    assert (found, capturing) == (1, True)
    assert graphs  # the capture ended without error: it was still valid


@two_devices
def test_a_fault_on_device_1_leaves_device_0s_waits_and_callbacks_alone() -> None:
    # The stress suite's scenario: device 0 busy with a held and a notified callback
    # and a record; device 1 faults; device 0's waits (threads, await) and new work
    # succeed and its callbacks run, while device 1's wait raises the fault.
    report = stress_scenario("two devices: a fault on device 1")
    assert report["ok"] and not report.get("not_run"), report


def test_two_simulated_devices_run_the_multi_gpu_tests() -> None:
    if os.environ.get("EXTSTREAM_SIM_DEVICES"):
        pytest.skip("this is the run it starts")
    env = {
        **os.environ,
        "EXTSTREAM_BACKEND": "sim",
        "EXTSTREAM_SIM_DEVICES": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "pytest_extstream",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "7 passed, 3 skipped" in result.stdout, result.stdout[-3000:]
