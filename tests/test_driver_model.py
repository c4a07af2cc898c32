"""extstream's real backend against the driver model of tests/driver/.

Each test runs a child process whose ``libcuda.so.1`` is the model: a driver
whose calls wait while a host function of their context runs, that refuses
the special handles where no context is current, keeps a per-thread default
stream per thread lifetime, refuses "potentially unsafe" calls during another
thread's global-mode capture (invalidating it), and returns 800 to calls made
from a host function (counting them). Each scenario hung, failed or counted a
forbidden call on the code before its fix.
"""

from __future__ import annotations

from pathlib import Path

from .driver_helpers import run_on_model


def test_spinning_on_done_while_held_callbacks_run_does_not_hang(fake_driver: Path) -> None:
    # Before: the queries kept the GIL inside cuStreamQuery, which waits for the
    # host function, which waits for the GIL: a hang Ctrl-C could not break.
    out = run_on_model(
        fake_driver,
        """
stream = extstream.ExternalStream(lib.fake_stream(0), 0)
event = extstream.Event.from_handle(lib.fake_event(0), 0)
ran = []
for i in range(1000):
    stream.launch_host_func(ran.append, i)
stream.record(event)
started = time.perf_counter()
while not stream.done:
    pass
while not event.done:
    pass
out["ran"] = ran == list(range(1000))
out["seconds"] = time.perf_counter() - started
out["from host function"] = calls("from host function")
""",
    )
    assert out["ran"] and out["seconds"] < 30
    assert out["from host function"] == 0


SPECIAL = """
def use(handle, results):
    stream = extstream.ExternalStream(handle, 0)
    seen = threading.Event()
    stream.launch_host_func(lambda _: seen.set(), None, hold_stream=False)
    stream.launch_host_func(results.append, handle)
    stream.synchronize(timeout=10)
    results.append(stream.done and seen.wait(10))
    event = extstream.Event(device_id=0)
    stream.record(event)
    stream.wait_event(event)
    event.synchronize(timeout=10)
    results.append(event.done)

for handle in (0, 1, 2):
    results = []
    # A fresh thread has no current context: the driver refuses the special handles
    # until one is made current, as the runtime would at its first call.
    worker = threading.Thread(target=use, args=(handle, results))
    worker.start()
    worker.join(30)
    out[f"fresh thread, handle {handle}"] = results
    results = []
    use(handle, results)  # a thread that has a context now
    out[f"main thread, handle {handle}"] = results
out["context depth"] = lib.fake_context_depth()
"""


def test_special_handles_from_threads_with_and_without_a_current_context(
    fake_driver: Path,
) -> None:
    # Before: the driver's CUDA_ERROR_INVALID_CONTEXT sent every call to the runtime.
    out = run_on_model(fake_driver, SPECIAL, CUDA_VISIBLE_DEVICES="0")
    for handle in (0, 1, 2):
        for where in ("fresh thread", "main thread"):
            assert out[f"{where}, handle {handle}"] == [handle, True, True], (where, handle)


def test_per_thread_default_stream_under_cuda_pythons_setting(fake_driver: Path) -> None:
    # With CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM=1 cuda.bindings makes handle 0 the
    # per-thread stream; extstream's own entry points must mean the same stream.
    code = """
zero = extstream.ExternalStream(0, 0)
zero.done  # makes a context current
lib.fake_busy(2, 300)  # the per-thread stream busy, the legacy one idle
out["0 busy"] = not zero.done
zero.synchronize(timeout=5)
out["0 idle"] = zero.done
"""
    out = run_on_model(
        fake_driver, code, CUDA_VISIBLE_DEVICES="0", CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM="1"
    )
    assert out == {"0 busy": True, "0 idle": True}


def test_handle_2_belongs_to_a_thread_lifetime_not_its_id(fake_driver: Path) -> None:
    # A notification on handle 2 from a new thread that got an ended thread's id
    # used to share that thread's queue: its post fired at once and ran the ended
    # thread's notification before the GPU got there.
    code = """
early, reused, idents = [], 0, set()
def first(ran):
    own = extstream.ExternalStream(2, 0)
    own.done
    lib.fake_busy(2, 200)
    finish = time.monotonic() + 0.2
    own.launch_host_func(lambda _: ran.append(time.monotonic() >= finish - 0.01), None,
                         hold_stream=False)
    idents.add(threading.get_ident())
def second(ran):
    reused_id = threading.get_ident() in idents
    own = extstream.ExternalStream(2, 0)
    own.launch_host_func(ran.append, reused_id, hold_stream=False)
for _ in range(5):
    ran_first, ran_second = [], []
    for target, ran in ((first, ran_first), (second, ran_second)):
        thread = threading.Thread(target=target, args=(ran,))
        thread.start()
        thread.join()
    deadline = time.monotonic() + 5
    while not (ran_first and ran_second) and time.monotonic() < deadline:
        time.sleep(0.005)
    early.append(ran_first != [True])
    reused += bool(ran_second and ran_second[0])
out["early"] = sum(early)
out["reused ids"] = reused
"""
    out = run_on_model(fake_driver, code, CUDA_VISIBLE_DEVICES="0")
    assert out["early"] == 0, out


CAPTURE = """
CAPTURING = 5
capturing = lib.fake_stream(CAPTURING)
others = [extstream.ExternalStream(lib.fake_stream(i), i % 2) for i in range(6, 10)]
mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL
began, finish, ended = threading.Event(), threading.Event(), []

def capture():
    err, = driver.cuStreamBeginCapture(driver.CUstream(capturing), mode)
    began.set()
    finish.wait(30)
    err, graph = driver.cuStreamEndCapture(driver.CUstream(capturing))
    ended.append(int(err))

capturer = threading.Thread(target=capture)
capturer.start()
began.wait(10)

# Work the user queues from this thread is the user's business: inside the guard.
queried, collected = [], []
with extstream.relaxed_capture():
    for stream in others:
        for k in range(50):
            # the dispatcher runs these, and each queries a stream
            stream.launch_host_func(lambda s: queried.append(s.done), stream, hold_stream=False)
    doomed = extstream.Stream(0)
    box = [doomed]
    del doomed
    # the last reference dies on CUDA's thread: the reaper destroys it
    others[0].launch_host_func(lambda _: (box.clear(), collected.append(1)), None)

polls = []
def poll():
    with extstream.relaxed_capture():
        while len(polls) < 500:
            polls.append(others[1].done and others[2].done)
poller = threading.Thread(target=poll)
poller.start()
poller.join(30)
deadline = time.monotonic() + 10
while (len(queried) < 200 or not collected or calls("cuStreamDestroy") < 1) and (
    time.monotonic() < deadline
):
    time.sleep(0.01)
finish.set()
capturer.join(30)
out["capture"] = list(ended)
out["queried"] = len(queried)
out["polls"] = len(polls)
out["destroyed"] = calls("cuStreamDestroy")
out["refused"] = calls("refused in capture")
out["from host function"] = calls("from host function")

# The model refuses: a plain query from another thread breaks a global capture.
began.clear(); finish.clear(); ended.clear()
capturer = threading.Thread(target=capture)
capturer.start()
began.wait(10)
try:
    others[1].done
    out["plain query"] = "allowed"
except extstream.CudaError as exc:
    out["plain query"] = exc.status
finish.set()
capturer.join(30)
out["capture after a plain query"] = list(ended)
"""


def test_a_global_capture_survives_extstreams_threads_and_guarded_pollers(
    fake_driver: Path,
) -> None:
    # Before: the dispatcher (running callbacks that query) and the reaper (destroying)
    # were in global mode, so each call was refused and invalidated the capture.
    out = run_on_model(fake_driver, CAPTURE)
    assert out["capture"] == [0], out  # CUDA_SUCCESS: still valid at its end
    assert out["refused"] == 0 and out["from host function"] == 0, out
    assert out["queried"] == 200 and out["polls"] == 500 and out["destroyed"] >= 1, out
    # and the model does refuse what CUDA refuses
    assert out["plain query"] == 900 and out["capture after a plain query"] == [901], out


def test_a_collection_on_cudas_thread_makes_no_cuda_call_there(fake_driver: Path) -> None:
    # Before: the destroy ran on CUDA's thread and was deferred only after the
    # driver refused it; a driver that waits instead would have hung.
    code = """
stream = extstream.ExternalStream(lib.fake_stream(0), 0)
owned = [extstream.Stream(0) for _ in range(3)] + [extstream.Event(device_id=0)]
stream.launch_host_func(lambda _: owned.clear(), None)
stream.synchronize(timeout=10)
deadline = time.monotonic() + 10
while calls("cuStreamDestroy") + calls("cuEventDestroy") < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
out["destroyed"] = calls("cuStreamDestroy") + calls("cuEventDestroy")
out["from host function"] = calls("from host function")
"""
    out = run_on_model(fake_driver, code)
    assert out == {"destroyed": 4, "from host function": 0}
