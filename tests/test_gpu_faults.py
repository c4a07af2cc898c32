"""Faults and garbage collection at bad moments.

A kernel fault while a wait is in progress: every wait raises it soon, none
hangs, and the process still exits (on a GPU a fault loses the process's CUDA
context, so each case runs in a child process, on the simulator too). A
collection inside extstream or on CUDA's thread: no deadlock, no leak.
"""

from __future__ import annotations

import gc
import re
from typing import Any

import pytest

from extstream import Event, Stream
from extstream._backend import cuda as backend

from .conftest import run_python
from .gpu_helpers import FAULT_CODE, wait_until

pytestmark = pytest.mark.gpu

SLEEP = 0.5  # the GPU is busy this long before the fault

SETUP = f"""
import asyncio, threading, time, warnings
import extstream
{FAULT_CODE}
warnings.simplefilter("ignore", DeprecationWarning)  # CuPy 14: cupy.cuda.ExternalStream
fault = fault_maker()
stream = extstream.Stream()
event = extstream.Event()
timing = extstream.timed(stream)
with timing:
    sleep_on(stream, {SLEEP})
    fault(stream)
stream.launch_host_func(print, "held callback ran")
stream.launch_host_func(print, "notification ran", hold_stream=False)
stream.record(event)

async def awaiting(target):
    await target

def in_a_thread(wait):
    caught = []
    def run():
        try:
            wait()
        except BaseException as exc:
            caught.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if caught:
        raise caught[0]

started = time.monotonic()
try:
    WAIT
    print("no error")
except extstream.CudaError as exc:
    print(exc.name, round(time.monotonic() - started, 3), flush=True)
"""

WAITS = {
    "synchronize": "stream.synchronize()",
    "synchronize with timeout": "stream.synchronize(timeout=20)",
    "synchronize in a thread": "in_a_thread(stream.synchronize)",
    "await stream": "asyncio.run(awaiting(stream))",
    "await event": "asyncio.run(awaiting(event))",
    "Event.synchronize": "event.synchronize()",
    "Event.synchronize in a thread": "in_a_thread(event.synchronize)",
    "elapsed_time (timed)": "timing.ms",
}


@pytest.mark.parametrize("wait", list(WAITS.values()), ids=list(WAITS))
def test_a_fault_during_a_wait_raises_it_and_the_process_exits(wait: str) -> None:
    result = run_python(
        SETUP.replace("WAIT", wait), env={"EXTSTREAM_EXIT_TIMEOUT": "20"}, timeout=60
    )
    lines = result.stdout.split("\n")
    name, seconds = lines[0].split()
    assert name == "cudaErrorIllegalAddress", result.stdout + result.stderr
    # The fault comes after SLEEP s; a hang would take until the child's timeout.
    assert float(seconds) < SLEEP + 2.0, result.stdout
    assert "ran" not in result.stdout  # CUDA runs no host function after a fault
    # Exit at once (not after EXTSTREAM_EXIT_TIMEOUT), saying what was dropped.
    assert result.returncode == 0, result.stderr
    dropped = re.search(r"dropped (\d+) host callback", result.stderr)
    assert dropped and int(dropped[1]) >= 2, result.stderr  # an await's own one too


def test_garbage_collection_inside_extstream_calls_never_deadlocks() -> None:
    # Many live objects make collections frequent; each cycle holds a Stream, so
    # a collection inside any extstream call may run a Stream's finalizer there.
    code = (
        "import gc, extstream\n"
        "gc.disable()\n"
        "keep = [extstream.Stream() for _ in range(5000)]\n"
        "gc.enable()\n"
        "gc.set_threshold(50, 2, 2)\n"
        "other = extstream.Stream()\n"
        "event = extstream.Event()\n"
        "for i in range(3000):\n"
        "    cycle = [extstream.Stream(), extstream.Event()]\n"
        "    cycle.append(cycle)\n"
        "    del cycle\n"
        "    other.is_capturing, other.priority, other.record(event), event.done\n"
        "    extstream.ExternalStream(other.ptr).done\n"
        "print('ok', flush=True)\n"
    )
    result = run_python(code, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
    assert result.stderr == ""


def test_streams_and_events_collected_inside_a_held_callback_are_destroyed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CUDA refuses every call made from a host function, the destroys a
    # collection there runs included: they are done soon after, elsewhere.
    destroyed = {"cudaStreamDestroy": 0, "cudaEventDestroy": 0}
    for name in destroyed:
        original = getattr(backend, name)

        def counting(handle: Any, original: Any = original, name: str = name) -> Any:
            result = original(handle)
            if result[0] is backend.SUCCESS:
                destroyed[name] += 1
            return result

        monkeypatch.setattr(backend, name, counting)
    stream = Stream()
    gc.disable()
    try:
        for _ in range(20):
            cycle: list[Any] = [Stream(), Event()]
            cycle.append(cycle)  # only a collection frees it
            del cycle
        stream.launch_host_func(lambda _: gc.collect(), None)
        stream.synchronize()
    finally:
        gc.enable()
    assert wait_until(lambda: destroyed == {"cudaStreamDestroy": 20, "cudaEventDestroy": 20})
    stream.close()


def test_forks_under_load_never_hang_the_child() -> None:
    # Other threads are inside extstream (address probe, callback queues, the
    # loader) when the process forks: every lock they may hold is new in the child.
    code = (
        "import os, threading, time, warnings, extstream\n"
        "warnings.simplefilter('ignore', DeprecationWarning)  # fork with threads\n"
        "stream = extstream.Stream()\n"
        "stop = []\n"
        "def load():\n"
        "    while not stop:\n"
        "        extstream.ExternalStream(stream.ptr).done\n"
        "        stream.launch_host_func(len, (), hold_stream=False)\n"
        "        stream.launch_host_func(len, ())\n"
        "threads = [threading.Thread(target=load) for _ in range(2)]\n"
        "for thread in threads:\n"
        "    thread.start()\n"
        "codes, hangs = [], 0\n"
        "for _ in range(100):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        assert extstream.ExternalStream(0x7F0000001000, 0).ptr == 0x7F0000001000\n"
        "        try:\n"
        "            extstream.ExternalStream(stream.ptr).done\n"
        "        except extstream.CudaError as exc:\n"
        "            os._exit(0 if exc.name == 'cudaErrorInitializationError' else 2)\n"
        "        os._exit(3)\n"
        "    deadline = time.monotonic() + 10\n"
        "    while True:\n"
        "        done, status = os.waitpid(pid, os.WNOHANG)\n"
        "        if done:\n"
        "            codes.append(os.waitstatus_to_exitcode(status))\n"
        "            break\n"
        "        if time.monotonic() > deadline:\n"
        "            os.kill(pid, 9)\n"
        "            hangs += 1\n"
        "        time.sleep(0.001)\n"
        "stop.append(True)\n"
        "for thread in threads:\n"
        "    thread.join()\n"
        "stream.synchronize()\n"
        "print('hangs', hangs, 'exit codes', sorted(set(codes)), flush=True)\n"
    )
    result = run_python(code, timeout=300)
    # Each child got the documented CudaError (exit 0), none was killed.
    assert result.stdout.strip() == "hangs 0 exit codes [0]", result.stdout + result.stderr


def test_finalizers_print_nothing_also_for_half_made_objects_and_at_exit() -> None:
    code = (
        "import gc, extstream\n"
        "try:\n"
        "    extstream.Event(True)  # positional: __init__ never runs\n"
        "except TypeError:\n"
        "    pass\n"
        "class Early(extstream.Stream):\n"
        "    def __init__(self):\n"
        "        raise RuntimeError('before super().__init__()')\n"
        "try:\n"
        "    Early()\n"
        "except RuntimeError:\n"
        "    pass\n"
        "gc.collect()\n"
        "alive = [extstream.Stream(), extstream.Event(), extstream.Stream().record()]\n"
        "print('ok')\n"
    )
    result = run_python(code, timeout=60)
    assert (result.stdout, result.stderr) == ("ok\n", "")
