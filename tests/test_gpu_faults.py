"""Faults and garbage collection at bad moments.

A kernel fault while a wait is in progress: every wait raises it soon, none
hangs, and the process still exits (on a GPU a fault loses the process's CUDA
context, so each case runs in a child process, on the simulator too). A
collection inside extstream or on CUDA's thread: no deadlock, no leak.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from extstream import Event, Stream
from extstream._backend import cuda as backend

from .conftest import run_python, stress_scenario
from .gpu_helpers import wait_until

pytestmark = pytest.mark.gpu


def test_a_fault_during_each_wait_kind_raises_it_and_the_process_exits() -> None:
    # The stress suite's scenario, once per wait kind (twice with --quick): each
    # in a child process whose queue, behind about 0.5 s of GPU work, holds a
    # kernel fault, then a held and a notified callback and an event record.
    # Every wait must raise cudaErrorIllegalAddress within 100 ms of the fault,
    # no callback may run, and the child must exit at once, saying what it dropped.
    report = stress_scenario("kernel fault during each wait", "--quick")
    assert report["ok"], report


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
