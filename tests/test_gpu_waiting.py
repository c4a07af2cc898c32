"""Waiting on a real GPU: await, timeouts, Ctrl-C, exit with pending callbacks, fork."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from extstream import Event, Stream, _native
from extstream._backend import cuda

from .conftest import run_python, stress_scenario
from .gpu_helpers import SLEEP_CODE, sleep_on

pytestmark = pytest.mark.gpu


def test_await_stream_lets_other_tasks_run(stream: Stream) -> None:
    async def main() -> tuple[int, bool]:
        ticks = 0
        finished = False

        async def ticker() -> None:
            nonlocal ticks
            while not finished:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        sleep_on(stream, 0.3)
        await stream
        finished = True
        await task
        return ticks, stream.done

    ticks, done = asyncio.run(main())
    assert done
    assert ticks >= 10  # the loop kept running while the GPU slept


def test_await_idle_stream_and_event_return_at_once(stream: Stream) -> None:
    event = stream.record()
    event.synchronize()

    async def main() -> str:
        await stream
        await event
        return "finished"

    coroutine = main()
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)  # never suspends: nothing to wait for
    assert finished.value.value == "finished"


def test_await_event(stream: Stream) -> None:
    async def main() -> bool:
        sleep_on(stream, 0.2)
        event = stream.record()
        assert not event.done
        await event
        return event.done

    assert asyncio.run(main())


def test_many_tasks_await_different_events_independently() -> None:
    slow, fast = Stream(), Stream()

    async def main() -> list[str]:
        order: list[str] = []
        sleep_on(slow, 0.5)
        sleep_on(fast, 0.05)
        slow_event, fast_event = slow.record(), fast.record()

        async def wait(name: str, event: Event) -> None:
            await event
            order.append(name)

        await asyncio.gather(wait("slow", slow_event), wait("fast", fast_event))
        return order

    assert asyncio.run(main()) == ["fast", "slow"]
    slow.close()
    fast.close()


def test_event_and_stream_timeouts(stream: Stream) -> None:
    sleep_on(stream, 0.5)
    event = stream.record()
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        event.synchronize(timeout=0.05)
    with pytest.raises(TimeoutError):
        stream.synchronize(timeout=0.05)
    assert time.perf_counter() - started < 0.4
    event.synchronize(timeout=5)
    stream.synchronize(timeout=5)


def test_plain_synchronize_in_a_worker_thread(stream: Stream) -> None:
    sleep_on(stream, 0.1)
    worker = threading.Thread(target=stream.synchronize)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and stream.done


def test_ctrl_c_interrupts_every_wait_kind_at_once() -> None:
    # The stress suite's scenario: a child waits (synchronize with and without a
    # timeout, Event.synchronize, await stream, await event) on 3 s of GPU work
    # and gets SIGINT; KeyboardInterrupt must come within 100 ms, and the child
    # exits cleanly.
    report = stress_scenario("Ctrl-C during each wait")
    assert report["ok"], report


def test_exit_with_pending_callbacks_is_clean() -> None:
    code = (
        "import extstream\n"
        f"{SLEEP_CODE}"
        "stream = extstream.Stream()\n"
        "sleep_on(stream, 1.0)\n"
        "for i in range(500):\n"
        "    stream.launch_host_func(print, i)\n"
        "    stream.launch_host_func(print, i, hold_stream=False)\n"
        "print('exiting', flush=True)\n"
    )
    started = time.perf_counter()
    result = run_python(code, timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 10
    assert result.stdout.strip().splitlines() == ["exiting"]  # dropped, not run
    assert "dropped 1000 host callback(s)" in result.stderr


def test_exit_with_owned_streams_and_events_alive_is_prompt() -> None:
    # Their __del__ runs while the interpreter finalizes, when threads it froze
    # (a simulated stream's worker) may hold what a destroy would wait for.
    code = (
        "import extstream\n"
        "print('exiting', flush=True)\n"
        "other = extstream.Stream()\n"
        "timing = [extstream.Event(timing=True).record(other) for _ in range(3)]\n"
        "stream = extstream.Stream()\n"
        "event = stream.record()\n"  # exit while the stream is still taking this in
    )
    for _ in range(3):  # the freeze needs unlucky timing: try more than once
        result = run_python(code, timeout=30)
        assert result.returncode == 0 and result.stdout.strip() == "exiting", result.stderr


def test_forked_child_gets_a_clear_error() -> None:
    code = (
        "import os, extstream\n"
        "stream = extstream.Stream()\n"
        "stream.launch_host_func(print, 'parent callback')\n"
        "stream.synchronize()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        extstream.Stream()\n"
        "    except extstream.CudaError as exc:\n"
        "        print('child:', exc.name, 'spawn' in str(exc), flush=True)\n"
        "    try:\n"
        "        stream.done\n"
        "    except extstream.CudaError as exc:\n"
        "        print('child:', exc.name, flush=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "parent callback",
        "child: cudaErrorInitializationError True",
        "child: cudaErrorInitializationError",
    ]


def _counted(made: dict[str, int], key: str, function: Any) -> Any:
    """*function*, counting its calls in ``made[key]``."""

    def counting(*args: Any) -> Any:
        made[key] += 1
        return function(*args)

    return counting


def test_waits_that_time_out_cost_no_stream_and_no_semaphore_each(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polling with timeouts: each wait that ends before its host function ran
    # leaves that host function queued. Its waiter stream is destroyed (CUDA
    # frees it after the queued work) and its semaphore is taken again once the
    # late post came, instead of one leaked stream and semaphore per timeout.
    made = {"streams": 0, "destroyed": 0, "semaphores": 0}
    monkeypatch.setattr(
        cuda,
        "cudaStreamCreateWithPriority",
        _counted(made, "streams", cuda.cudaStreamCreateWithPriority),
    )
    monkeypatch.setattr(
        cuda, "cudaStreamDestroy", _counted(made, "destroyed", cuda.cudaStreamDestroy)
    )
    monkeypatch.setattr(
        _native, "new_semaphore", _counted(made, "semaphores", _native.new_semaphore)
    )

    async def await_with_timeouts(event: Event) -> int:
        timeouts = 0
        for _ in range(20):
            try:
                await asyncio.wait_for(event, 0.002)
            except asyncio.TimeoutError:
                timeouts += 1
        return timeouts

    def poll(event: Event) -> int:
        timeouts = 0
        for _ in range(30):
            for target in (event, stream):
                try:
                    target.synchronize(timeout=0.002)
                except TimeoutError:
                    timeouts += 1
        return timeouts + asyncio.run(await_with_timeouts(event))

    sleep_on(stream, 0.5)
    assert poll(stream.record()) == 80
    stream.synchronize()
    # every waiter stream made for a timed-out wait is destroyed again
    assert made["streams"] - made["destroyed"] <= 1
    semaphores = made["semaphores"]
    sleep_on(stream, 0.5)
    assert poll(stream.record()) == 80
    stream.synchronize()
    assert made["streams"] - made["destroyed"] <= 1
    # the semaphores whose posts came late serve the second round
    assert made["semaphores"] - semaphores <= 2


def test_threads_that_wait_and_end_leave_no_semaphore_behind(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = {"semaphores": 0}
    monkeypatch.setattr(
        _native, "new_semaphore", _counted(made, "semaphores", _native.new_semaphore)
    )
    for _ in range(50):  # a short-lived thread per wait, one after the other
        sleep_on(stream, 0.01)
        worker = threading.Thread(target=stream.synchronize)
        worker.start()
        worker.join(10)
        assert not worker.is_alive() and stream.done
    assert made["semaphores"] <= 2  # the semaphores are pooled, not one per thread
