"""The stress suite: faults, garbage collection, fork, exit and bad input.

Each scenario runs in a child process with a time limit, so that a crash (a
signal) or a hang (the child is killed after dumping every thread's stack) is
counted, not fatal. One line per scenario with its figures against its goal,
then a summary; ``--json`` prints one JSON object instead.

    python benchmarks/stress.py            # on the GPU (torch, CuPy where needed)
    python benchmarks/stress.py --sim      # on extstream's CPU simulator
    python benchmarks/stress.py --sim --quick   # what CI runs: smaller counts

``--only NAME`` runs some scenarios. The exit status is 1 when a goal was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
H = 0x7F00_0000_1000  # a handle that names no stream


@dataclass(frozen=True)
class Scenario:
    name: str
    goal: str
    limit: float  # seconds for the child, full run (quick runs get a third, at least 60)
    run: Callable[[bool], dict[str, Any]]  # (quick) -> figures, with "ok" and "figure"


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, goal: str, limit: float) -> Callable[[Any], Any]:
    def register(run: Callable[[bool], dict[str, Any]]) -> Callable[[bool], dict[str, Any]]:
        SCENARIOS[name] = Scenario(name, goal, limit, run)
        return run

    return register


# -- helpers used inside the child ------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run *code* in a fresh interpreter (this checkout's extstream, this backend)."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        check=False,
    )


def _count_successes(backend: Any, keys: dict[str, str]) -> dict[str, int]:
    """Count the backend's successful calls of each function, under its key."""
    counts = dict.fromkeys(keys.values(), 0)
    for name, key in keys.items():
        original = getattr(backend, name)

        def counting(*args: Any, original: Any = original, key: str = key) -> Any:
            result = original(*args)
            if result[0] is backend.SUCCESS:
                counts[key] += 1
            return result

        setattr(backend, name, counting)
    return counts


def _wait_until(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


# -- the scenarios ------------------------------------------------------------------


@scenario("fuzz", "thousands of cases; 0 crashes, 0 hangs, 0 unexpected exceptions", 900)
def fuzz(quick: bool) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import extstream

    def is_clean(exc: Exception) -> bool:
        # extstream's documented errors; RuntimeError itself (a wait refused inside
        # a held callback, a `with` left out of order), not a dependency's subclass.
        documented = (TypeError, ValueError, extstream.CudaError, TimeoutError)
        return isinstance(exc, documented) or type(exc) is RuntimeError

    @contextlib.contextmanager
    def tolerated() -> Any:
        try:
            yield
        except Exception as exc:
            if not is_clean(exc):
                raise

    counts = {"cases": 0, "accepted": 0, "clean errors": 0, "unexpected": 0}
    unexpected: list[str] = []

    class Protocol:
        def __init__(self, value: Any) -> None:
            self.value = value

        def __cuda_stream__(self) -> Any:
            if isinstance(self.value, BaseException):
                raise self.value
            return self.value

    # Without CUDA (the real backend on a CPU machine), readable memory passes the
    # address probe, so the calls reach cuda.bindings: each must still fail cleanly.
    # (On a GPU such a "handle" would be handed to CUDA, which cannot tell it from
    # a stream: the contract covers unreadable addresses only.)
    from extstream import testing

    no_cuda = testing.devices()[0] == 0  # no driver, or no device
    memory = [ctypes.create_string_buffer(64) for _ in range(2)]
    readable = [ctypes.addressof(m) for m in memory] if no_cuda else [H]
    scalars = st.one_of(
        st.sampled_from(readable),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.integers(min_value=-3, max_value=3),
        st.integers(min_value=0, max_value=2**64 - 1),  # random 64-bit addresses
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.none(),
    )
    protocols = st.builds(
        Protocol,
        st.one_of(
            scalars,
            st.tuples(scalars, scalars),
            st.tuples(st.just(0), scalars),
            st.just(RuntimeError("raised by __cuda_stream__")),
            st.lists(scalars, max_size=3),
        ),
    )
    values = st.one_of(scalars, protocols)

    def use(stream: Any) -> None:
        repr(stream)
        with tolerated():
            _ = stream.done
        with tolerated():
            stream.synchronize(timeout=0.01)
        with tolerated():
            stream.record()
        with tolerated():
            stream.wait_event(extstream.Event())
        with tolerated():
            stream.launch_host_func(len, (), hold_stream=False)
        with tolerated(), stream:
            pass

    calls: list[Callable[[Any, Any], Any]] = [
        lambda a, b: use(extstream.ExternalStream(a, b)),
        lambda a, b: use(extstream.ExternalStream(a)),
        lambda a, b: use(extstream.as_stream(a, b)),
        lambda a, b: extstream.Event.from_handle(a, b).done,
        lambda a, b: extstream.Stream(a, priority=b).close(),
        lambda a, b: extstream.Stream(nonblocking=a).close(),
        lambda a, b: extstream.Event(timing=a, device_id=b).close(),
        lambda a, b: extstream.get_current_stream(a),
        lambda a, b: extstream.timed(a),
        lambda a, b: extstream.Stream().synchronize(timeout=a),
        lambda a, b: extstream.Stream().wait_event(a),
        lambda a, b: extstream.Stream().record(a),
        lambda a, b: extstream.Stream().wait(a),
        lambda a, b: extstream.Stream().launch_host_func(a, b),
        lambda a, b: extstream.ExternalStream(readable[0], 0).wait_event(a),
        lambda a, b: extstream.ExternalStream(readable[0], 0).record(a),
        lambda a, b: extstream.ExternalStream(readable[0], b).wait(a),
        lambda a, b: extstream.Event.from_handle(readable[-1], 0).record(a),
    ]

    @settings(
        max_examples=300 if quick else 3000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.integers(0, len(calls) - 1), values, values)
    def case(which: int, a: Any, b: Any) -> None:
        counts["cases"] += 1
        try:
            calls[which](a, b)
            counts["accepted"] += 1
        except Exception as exc:
            if is_clean(exc):
                counts["clean errors"] += 1
                return
            counts["unexpected"] += 1
            unexpected.append(f"call {which}({a!r}, {b!r}): {type(exc).__name__}: {exc}")

    case()
    try:
        extstream.Stream().synchronize(timeout=30)  # drain what the cases queued
    except extstream.CudaError:
        if not no_cuda:
            raise
        # No driver or no device (the real backend on a CPU machine): nothing was
        # queued, and every case had to fail cleanly; that is what was fuzzed.
    return {
        **counts,
        "examples": unexpected[:5],
        "ok": counts["unexpected"] == 0 and counts["cases"] >= (300 if quick else 3000),
        "figure": f"{counts['cases']} cases, {counts['accepted']} accepted, "
        f"{counts['clean errors']} clean errors, {counts['unexpected']} unexpected",
    }


@scenario(
    "event loops awaiting streams, events and callbacks",
    "every task finishes, 0 callback waits time out, within 60 s",
    300,
)
def loops_awaiting(quick: bool) -> dict[str, Any]:
    import extstream

    threads, tasks, steps = (8, 20, 2) if quick else (64, 50, 2)
    finished, timeouts = [0], [0]
    lock = threading.Lock()

    async def task(stream: extstream.Stream) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(steps):
            await stream
            await stream.record()
            called: asyncio.Future[None] = loop.create_future()
            stream.launch_host_func(
                lambda f: loop.call_soon_threadsafe(f.set_result, None), called, hold_stream=False
            )
            try:
                await asyncio.wait_for(called, 20)
            except TimeoutError:
                with lock:
                    timeouts[0] += 1
        with lock:
            finished[0] += 1

    def thread() -> None:
        stream = extstream.Stream()

        async def main() -> None:
            await asyncio.gather(*(task(stream) for _ in range(tasks)))

        asyncio.run(main())
        stream.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=thread) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    seconds = time.perf_counter() - started
    total = threads * tasks
    return {
        "tasks": total,
        "finished": finished[0],
        "timeouts": timeouts[0],
        "ok": finished[0] == total and timeouts[0] == 0 and seconds < 60,
        "figure": f"{threads} loops x {tasks} tasks x {steps} steps: {finished[0]} of {total} "
        f"finished, {timeouts[0]} callback waits timed out, {seconds:.1f} s",
    }


@scenario("current stream: threads x tasks", "0 wrong reads", 600)
def threads_and_tasks(quick: bool) -> dict[str, Any]:
    import extstream

    threads, tasks = (8, 100) if quick else (64, 1000)
    reads, wrong = [0], [0]
    lock = threading.Lock()

    async def task(stream: extstream.ExternalStream) -> None:
        with stream:
            for _ in range(3):
                await asyncio.sleep(0)
                ok = extstream.get_current_stream(0) is stream
                with lock:
                    reads[0] += 1
                    wrong[0] += not ok

    def thread(index: int) -> None:
        streams = [extstream.ExternalStream(H + 8 * (index * tasks + i), 0) for i in range(tasks)]

        async def main() -> None:
            await asyncio.gather(*(task(s) for s in streams))

        asyncio.run(main())

    previous = extstream.set_debug_checks(False)
    workers = [threading.Thread(target=thread, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    extstream.set_debug_checks(previous)
    # Real streams, and callbacks reading the current stream of their launch.
    seen: list[bool] = []
    real = [extstream.Stream() for _ in range(8)]

    def check(stream: extstream.ExternalStream) -> None:
        seen.append(extstream.get_current_stream(0) is stream)

    for stream in real:
        with stream:
            stream.launch_host_func(check, stream)
            stream.launch_host_func(check, stream, hold_stream=False)
    for stream in real:
        stream.synchronize()
    _wait_until(lambda: len(seen) == 16)
    wrong[0] += seen.count(False) + (16 - len(seen))
    return {
        "reads": reads[0] + len(seen),
        "wrong": wrong[0],
        "ok": wrong[0] == 0,
        "figure": f"{threads} threads x {tasks} tasks, and callbacks: "
        f"{reads[0] + len(seen)} reads, {wrong[0]} wrong",
    }


@scenario("callbacks: memory", "RSS growth < 50 MB, 0 arguments leaked", 1200)
def callback_memory(quick: bool) -> dict[str, Any]:
    import extstream

    count = 50_000 if quick else 1_000_000
    stream = extstream.Stream()
    figures: dict[str, Any] = {}
    ok = True
    for hold in (True, False):

        class Payload:
            pass

        alive: list[weakref.ref[Payload]] = []
        done = [0]

        def count_one(_: object, done: list[int] = done) -> None:
            done[0] += 1

        stream.synchronize()
        gc.collect()
        start = _rss_mb()
        for i in range(count):
            payload = Payload()
            if i % 1000 == 0:
                alive.append(weakref.ref(payload))
            stream.launch_host_func(count_one, payload, hold_stream=hold)
            del payload
            if i % 10_000 == 0:
                stream.synchronize()
        stream.synchronize()
        _wait_until(lambda done=done: done[0] == count, 120)  # type: ignore[misc]
        gc.collect()
        growth = _rss_mb() - start
        leaked = sum(ref() is not None for ref in alive)
        mode = "held" if hold else "notify"
        figures[mode] = {"rss_mb": round(growth, 1), "leaked": leaked, "ran": done[0]}
        ok = ok and growth < 50 and leaked == 0 and done[0] == count
    return {
        **figures,
        "ok": ok,
        "figure": ", ".join(
            f"{mode}: {f['ran']} ran, +{f['rss_mb']} MB, {f['leaked']} leaked"
            for mode, f in figures.items()
        ),
    }


@scenario("callbacks: raising", "all reported, later callbacks and awaits run", 600)
def raising_callbacks(quick: bool) -> dict[str, Any]:
    import extstream

    count = 1000 if quick else 10_000
    stream = extstream.Stream()
    reports: list[Any] = []
    sys.unraisablehook = reports.append

    def boom(_: object) -> None:
        raise ValueError("raised by a callback")

    ran: list[int] = []
    for i in range(count):
        stream.launch_host_func(boom, None, hold_stream=i % 2 == 0)
    stream.launch_host_func(ran.append, 1)
    stream.launch_host_func(ran.append, 2, hold_stream=False)
    stream.synchronize()
    _wait_until(lambda: len(ran) == 2 and len(reports) == count)
    reported = len(reports)

    def raising_hook(report: Any) -> None:
        raise RuntimeError("the hook raises too")

    sys.unraisablehook = raising_hook
    for _ in range(100):
        stream.launch_host_func(boom, None, hold_stream=False)
        stream.launch_host_func(boom, None)

    async def awaited() -> bool:
        await stream
        return True

    later: list[int] = []
    stream.launch_host_func(later.append, 1, hold_stream=False)
    stream.launch_host_func(later.append, 2)
    awaited_ok = asyncio.run(asyncio.wait_for(awaited(), 30))
    _wait_until(lambda: len(later) == 2)
    ok = reported == count and ran and len(later) == 2 and awaited_ok
    return {
        "reported": reported,
        "ok": bool(ok),
        "figure": f"{reported}/{count} reported, later callbacks ran: {sorted(ran)}; "
        f"with a raising hook: later {sorted(later)}, await {'ran' if awaited_ok else 'hung'}",
    }


EXIT_CODE = """
import time, extstream
from extstream import testing
stream = extstream.Stream()
testing.busy(stream, {busy})
for i in range({count}):
    stream.launch_host_func(print, i, hold_stream=i % 2 == 0)
print("exiting", flush=True)
"""


@scenario("exit with callbacks pending", "exit 0 within 3 s; slow GPU: exit 1, no hang", 300)
def exit_pending(quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    normal = _python(EXIT_CODE.format(busy=1.0, count=1000), timeout=60)
    normal_seconds = time.monotonic() - started
    dropped = re.search(r"dropped (\d+) host callback", normal.stderr)
    started = time.monotonic()
    slow = _python(
        EXIT_CODE.format(busy=5.0, count=10), env={"EXTSTREAM_EXIT_TIMEOUT": "0.5"}, timeout=60
    )
    slow_seconds = time.monotonic() - started
    ok = (
        normal.returncode == 0
        and normal_seconds < 3 + 2  # + the interpreter's start and import
        and bool(dropped)
        and int(dropped[1] if dropped else 0) == 1000
        and slow.returncode == 1
        and "EXTSTREAM_EXIT_TIMEOUT" in slow.stderr
        and slow_seconds < 4
    )
    return {
        "exit_seconds": round(normal_seconds, 2),
        "dropped": int(dropped[1]) if dropped else None,
        "slow_exit": slow.returncode,
        "slow_seconds": round(slow_seconds, 2),
        "ok": ok,
        "figure": f"exit {normal.returncode} after {normal_seconds:.2f} s, "
        f"{dropped[1] if dropped else '?'} dropped; GPU slower than the timeout: "
        f"exit {slow.returncode} after {slow_seconds:.2f} s",
    }


@scenario("fork", "0 hangs in forks under load; the child gets the documented error", 600)
def forks(quick: bool) -> dict[str, Any]:
    import warnings

    import extstream
    from extstream import testing

    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
    count = 30 if quick else 100
    stream = extstream.Stream()
    testing.busy(stream, 0.2)
    for i in range(100):
        stream.launch_host_func(len, (), hold_stream=i % 2 == 0)  # pending at the forks
    stop: list[bool] = []

    def load() -> None:
        while not stop:
            _ = extstream.ExternalStream(stream.ptr).done
            stream.launch_host_func(len, (), hold_stream=False)
            extstream.Event().close()

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    hangs, codes = 0, []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                assert extstream.ExternalStream(H, 0).ptr == H  # pure Python still works
                _ = extstream.ExternalStream(stream.ptr).done
            except extstream.CudaError as exc:
                code = 0 if exc.name == "cudaErrorInitializationError" else 2
            os._exit(code)
        deadline = time.monotonic() + 10
        while True:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                codes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                hangs += 1
            time.sleep(0.001)
    stop.append(True)
    for worker in workers:
        worker.join()
    stream.synchronize()
    wrong = sum(code not in (0, -signal.SIGKILL) for code in codes)
    return {
        "forks": count,
        "hangs": hangs,
        "wrong_errors": wrong,
        "ok": hangs == 0 and wrong == 0,
        "figure": f"{count} forks under load: {hangs} hangs, {wrong} without the documented error",
    }


FAULT_CODE = """
import asyncio, threading, time, warnings
import extstream
from extstream import testing
warnings.simplefilter("ignore", DeprecationWarning)
fault = testing.prepare_fault()
stream = extstream.Stream()
warm = extstream.Stream()
for _ in range(3):  # other work first: the bad cases depended on what ran before
    testing.busy(warm, 0.01)
    warm.launch_host_func(len, ())
    warm.synchronize()
event = extstream.Event()
faulted = []
timing = extstream.timed(stream)
with timing:
    testing.busy(stream, 0.5)
    stream.launch_host_func(lambda _: faulted.append(time.monotonic()), None, hold_stream=False)
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

try:
    WAIT
    print("no error")
except extstream.CudaError as exc:
    raised = time.monotonic()
    time.sleep(0.05)  # the notification before the fault has surely run
    print(exc.name, round(raised - faulted[0], 4), flush=True)
"""

FAULT_WAITS = {
    "synchronize": "stream.synchronize()",
    "synchronize(timeout)": "stream.synchronize(timeout=20)",
    "synchronize, thread": "in_a_thread(stream.synchronize)",
    "await stream": "asyncio.run(awaiting(stream))",
    "await event": "asyncio.run(awaiting(event))",
    "Event.synchronize": "event.synchronize()",
    "Event.synchronize, thread": "in_a_thread(event.synchronize)",
    "elapsed_time": "timing.ms",
}


@scenario("kernel fault during each wait", "CudaError within 100 ms, exit after, 5x each", 1800)
def fault_during_waits(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    worst: dict[str, float] = {}
    failures: list[str] = []
    for name, wait in FAULT_WAITS.items():
        for _ in range(rounds):
            started = time.monotonic()
            result = _python(
                FAULT_CODE.replace("WAIT", wait), env={"EXTSTREAM_EXIT_TIMEOUT": "20"}, timeout=60
            )
            seconds = time.monotonic() - started  # far below the exit timeout: no wait at exit
            words = result.stdout.split()
            dropped = re.search(r"dropped (\d+) host callback", result.stderr)
            if (
                result.returncode
                or len(words) < 2
                or words[0] != "cudaErrorIllegalAddress"
                or "ran" in result.stdout  # CUDA runs no host function after a fault
                or not dropped
                or int(dropped[1]) < 2  # the held and the notified callback (an await's too)
                or seconds > 15
            ):
                failures.append(
                    f"{name}: exit {result.returncode} after {seconds:.1f} s, "
                    f"{result.stdout!r}, {result.stderr[-300:]!r}"
                )
                continue
            worst[name] = max(worst.get(name, 0.0), float(words[1]))
    slow = {name: s for name, s in worst.items() if s > 0.1}
    return {
        "worst_latency_s": worst,
        "failures": failures,
        "ok": not failures and not slow,
        "figure": f"{len(FAULT_WAITS)} wait kinds x {rounds}: worst latency "
        f"{max(worst.values(), default=float('nan')) * 1000:.0f} ms"
        + (f", {len(failures)} failed" if failures else ""),
    }


TWO_DEVICE_FAULT_CODE = """
import asyncio, json, threading, time, warnings
import extstream
from extstream import _device, testing
warnings.simplefilter("ignore", DeprecationWarning)
if _device.device_count() < 2:
    print(json.dumps({"not_run": f"needs 2 devices, this process sees {_device.device_count()}"}))
    raise SystemExit
fault = testing.prepare_fault()
s0, s1 = extstream.Stream(device_id=0), extstream.Stream(device_id=1)
e0 = extstream.Event(device_id=0)
ran = []
testing.busy(s0, 1.0)  # device 0 works on while device 1 faults
s0.launch_host_func(ran.append, "held")
s0.launch_host_func(ran.append, "notified", hold_stream=False)
s0.record(e0)
testing.busy(s1, 0.2)
fault(s1)
outcomes = {}

def outcome(name, wait):
    try:
        wait()
        outcomes[name] = "ok"
    except extstream.CudaError as exc:
        outcomes[name] = exc.name

async def awaiting(target):
    await target

waits = {
    "device 0 synchronize, thread": s0.synchronize,
    "device 0 Event.synchronize, thread": e0.synchronize,
}
threads = [threading.Thread(target=outcome, args=item) for item in waits.items()]
for thread in threads:
    thread.start()
outcome("device 1 synchronize", s1.synchronize)
outcome("device 0 await", lambda: asyncio.run(awaiting(s0)))
for thread in threads:
    thread.join(30)
time.sleep(0.05)  # the notification has run
after = extstream.Stream(device_id=0)
testing.busy(after, 0.01)
outcome("device 0 new work after the fault", after.synchronize)
print(json.dumps({"outcomes": outcomes, "callbacks": sorted(ran)}))
"""


@scenario("two devices: a fault on device 1", "device 0's waits and callbacks unaffected", 300)
def fault_on_the_other_device(quick: bool) -> dict[str, Any]:
    env = {"EXTSTREAM_EXIT_TIMEOUT": "20"}
    if os.environ.get("EXTSTREAM_BACKEND") == "sim":
        env["EXTSTREAM_SIM_DEVICES"] = "2"
    result = _python(TWO_DEVICE_FAULT_CODE, env=env, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        return {"ok": False, "figure": f"exit {result.returncode}", "stderr": result.stderr[-2000:]}
    figures: dict[str, Any] = json.loads(lines[-1])
    if "not_run" in figures:
        return {
            "ok": True,
            "not_run": figures["not_run"],
            "figure": f"not run: {figures['not_run']}",
        }
    outcomes = figures["outcomes"]
    expected = {name: "ok" for name in outcomes} | {
        "device 1 synchronize": "cudaErrorIllegalAddress"
    }
    wrong = {name: got for name, got in outcomes.items() if got != expected[name]}
    complete = len(outcomes) == 5 and figures["callbacks"] == ["held", "notified"]
    return {
        **figures,
        "ok": not wrong and complete,
        "figure": f"device 1 raised {outcomes.get('device 1 synchronize')}; device 0: "
        f"{sum(got == 'ok' for name, got in outcomes.items() if name.startswith('device 0'))} "
        f"of 4 waits fine, callbacks {figures['callbacks']}"
        + (f", wrong: {wrong}" if wrong else ""),
    }


def _framework_makers() -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(name, make a stream, make an event) for each framework on the GPU."""
    import importlib.util

    makers: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    if importlib.util.find_spec("torch"):
        import torch

        makers.append(("torch", torch.cuda.Stream, torch.cuda.Event))
    if importlib.util.find_spec("cupy"):
        import cupy

        makers.append(("cupy", lambda: cupy.cuda.Stream(non_blocking=True), cupy.cuda.Event))
    if importlib.util.find_spec("numba"):
        from numba import cuda as numba_cuda

        makers.append(("numba", numba_cuda.stream, numba_cuda.event))
    if importlib.util.find_spec("cuda.core"):
        from cuda import core

        device = core.Device(0)
        device.set_current()
        makers.append(("cuda.core", device.create_stream, device.create_event))
    return makers


@scenario("GC churn", "0 errors, RSS flat, threads bounded", 1800)
def gc_churn(quick: bool) -> dict[str, Any]:
    import extstream
    from extstream import sim

    count = 5000 if quick else 100_000
    makers = [] if sim.active() else _framework_makers()
    makers.append(("extstream", extstream.Stream, extstream.Event))
    errors, wrapped = 0, 0
    anchor = extstream.Stream()
    start = _rss_mb()
    for i in range(count):
        name, make_stream, make_event = makers[i % len(makers)]
        try:
            stream = extstream.as_stream(make_stream())
            event = make_event()
            if name == "torch":
                event.record(make_stream())
            stream.wait_event(anchor.record())
            anchor.wait_event(stream.record())
            stream.record(event)
            stream.wait_event(event)
            wrapped += 1
        except Exception:
            errors += 1
        if i % 1000 == 0:
            anchor.synchronize()
            gc.collect()
    anchor.synchronize()
    gc.collect()
    growth = _rss_mb() - start
    threads_before = threading.active_count()
    short = 2000 if quick else 20_000
    seen = [0]
    start = _rss_mb()
    for _ in range(short):
        stream = extstream.Stream()
        stream.launch_host_func(lambda _: seen.__setitem__(0, seen[0] + 1), None, hold_stream=False)
        stream.close()
    _wait_until(lambda: seen[0] == short, 120)
    _wait_until(lambda: threading.active_count() <= threads_before + 2, 30)
    threads = threading.active_count() - threads_before
    short_growth = _rss_mb() - start
    ok = errors == 0 and growth < 50 and short_growth < 50 and threads <= 2 and seen[0] == short
    return {
        "wrapped": wrapped,
        "errors": errors,
        "rss_mb": round(growth, 1),
        "short_lived_rss_mb": round(short_growth, 1),
        "extra_threads": threads,
        "ok": ok,
        "figure": f"{wrapped} temporary {'/'.join(m[0] for m in makers)} objects: "
        f"{errors} errors, +{growth:.1f} MB; {short} short-lived streams: {threads:+d} threads, "
        f"+{short_growth:.1f} MB",
    }


@scenario("concurrent callbacks, waits and GC", "0 hangs, 0 wrong orders, 0 leaked", 900)
def concurrent(quick: bool) -> dict[str, Any]:
    import extstream
    from extstream._backend import cuda as backend

    seconds = 3.0 if quick else 20.0
    counts = _count_successes(
        backend,
        {
            "cudaStreamCreateWithPriority": "created",
            "cudaEventCreateWithFlags": "created",
            "cudaStreamDestroy": "destroyed",
            "cudaEventDestroy": "destroyed",
        },
    )
    deadline = time.monotonic() + seconds
    wrong = [0]
    launched = [0]

    def launcher() -> None:
        # Held callbacks keep their order, and so do notifications; between the
        # two kinds there is none (a held one may pass a notification queued before).
        stream = extstream.Stream()
        orders: dict[bool, list[int]] = {True: [], False: []}
        i = 0
        while time.monotonic() < deadline:
            hold = i % 3 == 0
            stream.launch_host_func(orders[hold].append, i, hold_stream=hold)
            i += 1
            if i % 50 == 0:
                stream.synchronize(timeout=30)
                _wait_until(lambda n=i: sum(map(len, orders.values())) == n, 30)  # type: ignore[misc]
                for hold, order in orders.items():
                    wrong[0] += order != [k for k in range(i) if (k % 3 == 0) == hold]
        stream.synchronize(timeout=30)
        launched[0] += i
        stream.close()

    def collector(on_cuda_thread: bool) -> None:
        stream = extstream.Stream()
        while time.monotonic() < deadline:
            cycle: list[Any] = [extstream.Stream(), extstream.Event()]
            cycle.append(cycle)
            del cycle
            if on_cuda_thread:
                stream.launch_host_func(lambda _: gc.collect(), None)
                stream.synchronize(timeout=30)
            else:
                gc.collect()
        stream.close()

    threads = [threading.Thread(target=launcher) for _ in range(16)]
    threads += [threading.Thread(target=collector, args=(flag,)) for flag in (False, True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    hung = sum(thread.is_alive() for thread in threads)
    gc.collect()
    _wait_until(lambda: counts["created"] == counts["destroyed"], 30)
    leaked = counts["created"] - counts["destroyed"]
    return {
        "launched": launched[0],
        "wrong_orders": wrong[0],
        "hung_threads": hung,
        "leaked": leaked,
        "ok": hung == 0 and wrong[0] == 0 and leaked == 0,
        "figure": f"{launched[0]} callbacks from 16 threads in {seconds:.0f} s: {hung} hangs, "
        f"{wrong[0]} wrong orders, {leaked} of {counts['created']} streams/events leaked",
    }


@scenario("waits that time out", "no stream or semaphore left per timed-out wait", 600)
def timed_out_waits(quick: bool) -> dict[str, Any]:
    import extstream
    from extstream import _native, testing
    from extstream._backend import cuda as backend

    rounds, busy = (2, 0.3) if quick else (10, 1.0)
    stream = extstream.Stream()
    counts = _count_successes(
        backend, {"cudaStreamCreateWithPriority": "made", "cudaStreamDestroy": "destroyed"}
    )
    new_semaphore = _native.new_semaphore
    semaphores, blocking_phase = [0], [False]

    def counted_semaphore() -> int:  # the blocking waits' (awaits' notifications use others)
        semaphores[0] += blocking_phase[0]
        return new_semaphore()

    _native.new_semaphore = counted_semaphore

    async def await_with_timeouts(event: Any) -> int:
        timeouts = 0
        while not event.done:
            try:
                await asyncio.wait_for(event, 0.001)
            except asyncio.TimeoutError:
                timeouts += 1
        return timeouts

    timeouts, most, start = 0, 0, _rss_mb()
    for _ in range(rounds):
        testing.busy(stream, busy)
        event = stream.record()
        half, blocking = time.monotonic() + busy / 2, 0
        blocking_phase[0] = True
        while time.monotonic() < half:  # polling: each kind of blocking wait in turn
            for target in (event, stream):
                try:
                    target.synchronize(timeout=0.001)
                except TimeoutError:
                    blocking += 1
        blocking_phase[0] = False
        timeouts += blocking + asyncio.run(await_with_timeouts(event))
        most = max(most, blocking)
        stream.synchronize()
    left = counts["made"] - counts["destroyed"]  # at most an idle waiter kept for reuse
    growth = _rss_mb() - start
    # A semaphore waits for its late post while others serve; then it serves again, so
    # no more are made than the most blocking waits abandoned in one round.
    ok = timeouts > 100 * rounds and left <= 1 and semaphores[0] <= most + 2 and growth < 50
    return {
        "timeouts": timeouts,
        "waiters_left": left,
        "semaphores": semaphores[0],
        "most_abandoned_at_once": most,
        "rss_mb": round(growth, 1),
        "ok": ok,
        "figure": f"{timeouts} timed-out waits in {rounds} rounds: {left} waiter streams left; "
        f"{semaphores[0]} semaphores for up to {most} abandoned at once; +{growth:.1f} MB",
    }


CTRL_C_CODE = """
import asyncio, signal, time, extstream
from extstream import testing
# Python's Ctrl-C handler even where SIGINT came ignored (a shell's background job)
signal.signal(signal.SIGINT, signal.default_int_handler)
stream = extstream.Stream()
event = extstream.Event()
testing.busy(stream, 3)  # the exit after the interrupt waits for it: keep it short
stream.record(event)
async def awaiting(target):
    await target
print("waiting", flush=True)
try:
    WAIT
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
"""

CTRL_C_WAITS = {
    "synchronize": "stream.synchronize()",
    "synchronize(timeout)": "stream.synchronize(timeout=60)",
    "Event.synchronize": "event.synchronize()",
    "await stream": "asyncio.run(awaiting(stream))",
    "await event": "asyncio.run(awaiting(event))",
}


@scenario("Ctrl-C during each wait", "KeyboardInterrupt < 100 ms, clean exit", 600)
def ctrl_c(quick: bool) -> dict[str, Any]:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    worst, failures = 0.0, []
    for name, wait in CTRL_C_WAITS.items():
        child = subprocess.Popen(
            [sys.executable, "-c", CTRL_C_CODE.replace("WAIT", wait)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path, "EXTSTREAM_EXIT_TIMEOUT": "1"},
        )
        assert child.stdout is not None
        child.stdout.readline()  # "waiting"
        time.sleep(0.3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            failures.append(f"{name}: no KeyboardInterrupt")
            continue
        words = out.split()
        if len(words) != 2 or words[0] != "interrupted" or child.returncode != 0:
            failures.append(f"{name}: exit {child.returncode}, {out!r} {err[-200:]!r}")
            continue
        worst = max(worst, float(words[1]) - sent)
    return {
        "worst_s": round(worst, 4),
        "failures": failures,
        "ok": not failures and worst < 0.1,
        "figure": f"{len(CTRL_C_WAITS)} wait kinds: worst {worst * 1000:.1f} ms to "
        "KeyboardInterrupt" + (f", {len(failures)} failed" if failures else ""),
    }


NOISE_CODE = """
import gc, extstream
try:
    extstream.Event(True)
except TypeError:
    pass
class Early(extstream.Stream):
    def __init__(self):
        raise RuntimeError("before super().__init__()")
for _ in range(10):
    try:
        Early()
    except RuntimeError:
        pass
gc.collect()
alive = [extstream.Stream(), extstream.Event(), extstream.Stream().record()]
"""


@scenario("__del__ noise", "0 lines", 120)
def del_noise(quick: bool) -> dict[str, Any]:
    result = _python(NOISE_CODE)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return {
        "lines": len(lines),
        "ok": not lines and result.returncode == 0,
        "figure": f"{len(lines)} lines printed" + (f": {lines[0]!r}" if lines else ""),
    }


# -- the parent: one child per scenario ---------------------------------------------


def _child(name: str, quick: bool) -> None:
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks on a hang
    figures = SCENARIOS[name].run(quick)
    print("RESULT " + json.dumps(figures, default=str), flush=True)


def _run_in_child(entry: Scenario, quick: bool) -> dict[str, Any]:
    limit = max(60.0, entry.limit / 3) if quick else entry.limit
    command = [sys.executable, str(Path(__file__).resolve()), "--child", entry.name]
    if quick:
        command.append("--quick")
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGUSR1)  # every thread's stack to stderr
        time.sleep(2)
        child.kill()
        out, err = child.communicate()
        return {
            "ok": False,
            "status": "hang",
            "figure": f"hung (killed after {limit:.0f} s)",
            "stacks": err[-4000:],
        }
    seconds = round(time.monotonic() - started, 1)
    if child.returncode < 0:
        return {
            "ok": False,
            "status": "crash",
            "seconds": seconds,
            "figure": f"crashed (signal {-child.returncode})",
            "stderr": err[-2000:],
        }
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if child.returncode or not results:
        return {
            "ok": False,
            "status": "error",
            "seconds": seconds,
            "figure": f"exit {child.returncode}",
            "stderr": err[-2000:],
        }
    figures = dict(json.loads(results[-1][len("RESULT ") :]))
    figures.update(status="ok" if figures["ok"] else "missed", seconds=seconds)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", action="store_true", help="run on extstream's CPU simulator")
    parser.add_argument("--quick", action="store_true", help="smaller counts (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="a scenario")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.quick)
        return 0
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    )
    if args.sim:
        os.environ["EXTSTREAM_BACKEND"] = "sim"
    names = args.only or list(SCENARIOS)
    report: dict[str, Any] = {
        "backend": os.environ.get("EXTSTREAM_BACKEND", "cuda"),
        "quick": args.quick,
        "scenarios": {},
    }
    for name in names:
        entry = SCENARIOS[name]
        result = _run_in_child(entry, args.quick)
        report["scenarios"][name] = {"goal": entry.goal, **result}
        if not args.json:
            verdict = "SKIP" if result.get("not_run") else "PASS" if result["ok"] else "FAIL"
            print(f"{verdict}  {name:<36} {result['figure']}   [goal: {entry.goal}]", flush=True)
            for key in ("stacks", "stderr", "failures", "examples"):
                if result.get(key) and not result["ok"]:
                    print(f"      {key}: {result[key]}")
    results = report["scenarios"].values()
    not_run = sum(bool(result.get("not_run")) for result in results)
    met = sum(result["ok"] and not result.get("not_run") for result in results)
    report["met"], report["not_run"] = met, not_run
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        skipped = f" ({not_run} not run on this machine)" if not_run else ""
        print(f"stress summary: {met} of {len(names) - not_run} scenarios met their goals{skipped}")
    return 0 if met + not_run == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
