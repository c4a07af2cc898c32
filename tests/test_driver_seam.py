"""extstream's driver path, run on a CPU against the driver model (tests/driver/).

CI has no driver, so neither cuda.bindings' driver calls nor extstream's ctypes
entry points run there, and the simulator replaces both. ``tests/driver/fake_libcuda.c``
gives them the driver functions extstream calls, with CUDA's C signatures: the
test then runs extstream's real backend on them in a child process, so that
``cuInit``, ``cuGetProcAddress``, the queries, the launch, the
context-based device lookup, records and waits through cuda.bindings, and host
functions called from a foreign C thread are exercised with every cuda-bindings
version CI installs. What CUDA itself does is for the GPU run to show.
"""

from __future__ import annotations

from pathlib import Path

from .conftest import stress_scenario
from .driver_helpers import run_on_model

CHILD = r"""
from extstream import _backend
import asyncio

h = [lib.fake_stream(i) for i in range(4)]
stream = extstream.ExternalStream(h[0], 0)
out["done idle"] = stream.done
out["direct"] = _backend.cuda.direct_driver_calls
# The device from the stream's context, not from the runtime (which has no driver here).
out["devices"] = [extstream.ExternalStream(p).device_id for p in h]
out["context calls"] = [calls(n) for n in ("cuStreamGetCtx", "cuCtxPushCurrent", "cuCtxPopCurrent")]
out["context depth"] = lib.fake_context_depth()

event = extstream.Event.from_handle(lib.fake_event(0), 0)
main = threading.get_ident()
held_ran, notified_ran, held_threads = [], [], set()
def held(i):
    held_threads.add(threading.get_ident())
    held_ran.append(i)
lib.fake_busy(h[0], 300)
out["done busy"] = stream.done
stream.record(event)
out["event done busy"] = event.done
for i in range(0, 400, 2):
    stream.launch_host_func(held, i)
    stream.launch_host_func(notified_ran.append, i + 1, hold_stream=False)
stream.wait_event(event)
started = time.perf_counter()
stream.synchronize()
out["synchronize waited"] = time.perf_counter() - started
out["held ran before synchronize returned"] = len(held_ran) == 200
deadline = time.monotonic() + 10
while len(notified_ran) < 200 and time.monotonic() < deadline:
    time.sleep(0.01)
# Each kind in launch order (a notification runs on extstream's dispatcher, later).
out["in order"] = held_ran == list(range(0, 400, 2)) and notified_ran == list(range(1, 400, 2))
out["held ran off the main thread"] = bool(held_threads) and main not in held_threads
out["event done"] = event.done
out["capturing"] = stream.is_capturing

lib.fake_busy(h[3], 500)
fourth = extstream.ExternalStream(h[3], 0)
started = time.perf_counter()
try:
    fourth.synchronize(timeout=0.05)
    out["timeout"] = "none"
except TimeoutError:
    out["timeout"] = round(time.perf_counter() - started, 2)
fourth.synchronize()

# Threads launching on their own streams while CUDA's thread (here: the stand-in's)
# runs the held callbacks, and a thread polling the GIL-keeping queries meanwhile.
seen = {i: [] for i in range(4, 8)}
def launch_on(i):
    own = extstream.ExternalStream(lib.fake_stream(i), 0)
    for k in range(300):
        own.launch_host_func(seen[i].append, k, hold_stream=k % 3 != 0)
    own.synchronize()
polls = []
def poll():
    while len(polls) < 2000:
        polls.append(stream.done and event.done)
threads = [threading.Thread(target=launch_on, args=(i,)) for i in seen]
threads.append(threading.Thread(target=poll))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(30)
deadline = time.monotonic() + 10
while any(len(v) < 300 for v in seen.values()) and time.monotonic() < deadline:
    time.sleep(0.01)
# each stream's callbacks all ran, the held ones in launch order, as did the notified ones
out["threads"] = not any(thread.is_alive() for thread in threads) and all(
    sorted(v) == list(range(300))
    and [k for k in v if k % 3] == [k for k in range(300) if k % 3]
    and [k for k in v if not k % 3] == list(range(0, 300, 3))
    for v in seen.values()
) and len(polls) == 2000 and all(polls)

async def awaits():
    lib.fake_busy(h[2], 100)
    third = extstream.ExternalStream(h[2], 0)
    await third
    return third.done
out["awaited"] = asyncio.run(awaits())

# A readable address that the driver does not know: its error, then the runtime's.
not_a_stream = ctypes.create_string_buffer(64)
try:
    extstream.ExternalStream(ctypes.addressof(not_a_stream), 0).done
    out["unknown handle"] = "accepted"
except extstream.CudaError:
    out["unknown handle"] = "CudaError"
out["calls"] = {
    n: calls(n)
    for n in ("cuInit", "cuStreamQuery", "cuEventQuery", "cuEventRecord", "cuStreamWaitEvent",
              "cuLaunchHostFunc", "cuStreamIsCapturing")
}
"""


def test_the_driver_path_against_a_stand_in_driver(fake_driver: Path) -> None:
    out = run_on_model(fake_driver, CHILD)
    assert out["done idle"] is True and out["direct"] is True
    assert out["devices"] == [0, 1, 0, 1]
    # one context lookup per stream, each push popped again on this thread
    assert out["context calls"] == [4, 4, 4] and out["context depth"] == 0
    assert out["done busy"] is False and out["event done busy"] is False
    assert out["synchronize waited"] > 0.2  # for the busy work and the held callbacks
    assert out["held ran before synchronize returned"]
    assert out["in order"] and out["held ran off the main thread"]
    assert out["event done"] and out["capturing"] is False
    assert out["awaited"]
    assert 0.05 <= out["timeout"] < 0.4  # TimeoutError while the stream is still busy
    assert out["threads"]
    assert out["unknown handle"] == "CudaError"
    counted = out["calls"]
    assert counted["cuInit"] >= 1
    assert counted["cuLaunchHostFunc"] >= 400  # each callback one launch (notifications two)
    assert counted["cuStreamIsCapturing"] >= 400  # a capture query per launch
    assert min(counted.values()) > 0, counted  # every entry point was used


def test_the_fuzz_on_the_driver_path_meets_only_documented_errors(fake_driver: Path) -> None:
    # The stress suite's fuzz with a driver that initialises: readable non-handles
    # now take the ctypes entry points (the stand-in refuses what it did not make,
    # where a real driver could crash), then the runtime, and every public call
    # still raises only extstream's documented errors.
    report = stress_scenario(
        "fuzz",
        env={"EXTSTREAM_BACKEND": "cuda", "LD_LIBRARY_PATH": str(fake_driver.parent)},
        timeout=300,
    )
    assert report["ok"] and report["unexpected"] == 0 and report["cases"] >= 3000, report
