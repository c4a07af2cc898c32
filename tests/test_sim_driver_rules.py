"""Driver rules as the simulator models them, the same way tests/driver/ does: each
test failed on the code before its fix (the commit says which)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import extstream
from extstream import CudaError, ExternalStream, Stream, _callbacks, _native, _sim, sim
from extstream._backend import cuda as backend

from .conftest import run_python
from .gpu_helpers import wait_until

on_sim = pytest.mark.skipif(not sim.active(), reason="the session does not run on the simulator")


@on_sim
def test_handle_2_of_a_new_thread_is_a_new_stream_even_with_an_ended_threads_id() -> None:
    # Before: queues of handle 2 were keyed by threading.get_ident(), which the OS
    # reuses: a new thread's notification fired at once and ran the ended thread's
    # pending one before the GPU got there.
    early, reused, idents = 0, 0, set()
    for _ in range(5):
        first_ran: list[bool] = []
        second_ran: list[bool] = []

        def first(first_ran: list[bool] = first_ran) -> None:
            own = ExternalStream(2, 0)
            sim.busy(own, 0.2)
            finish = time.monotonic() + 0.2
            own.launch_host_func(
                lambda _: first_ran.append(time.monotonic() >= finish - 0.01),
                None,
                hold_stream=False,
            )
            idents.add(threading.get_ident())

        def second(second_ran: list[bool] = second_ran) -> None:
            ExternalStream(2, 0).launch_host_func(
                second_ran.append, threading.get_ident() in idents, hold_stream=False
            )

        for target in (first, second):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        assert wait_until(lambda: bool(first_ran and second_ran))  # noqa: B023
        early += first_ran != [True]
        reused += second_ran[0]
    assert early == 0, (early, reused)


@on_sim
def test_a_launch_into_an_invalidated_capture_gets_cudas_error_and_keeps_nothing() -> None:
    # Before: an invalidated capture (status 2) took the capture path and kept an entry.
    stream = Stream()
    captured = _callbacks.captured_count()
    with pytest.raises(CudaError), sim.capture(stream):
        with pytest.raises(CudaError) as refused:
            _ = stream.done  # querying a capturing stream invalidates its capture
        assert refused.value.status == 900
        with pytest.raises(CudaError) as launch:
            stream.launch_host_func(print, "never")
        assert launch.value.status == 901  # cudaErrorStreamCaptureInvalidated
    assert _callbacks.captured_count() == captured
    stream.close()


@on_sim
def test_a_refused_captured_launch_reports_cudas_own_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: every refusal read 801 (cudaErrorNotSupported), whatever CUDA said.
    stream = Stream()
    monkeypatch.setattr(backend, "launch_host_func", lambda *args: 1)
    with sim.capture(stream) as graphs, pytest.raises(CudaError) as info:
        stream.launch_host_func(print, "refused")
    assert info.value.status == 1 and info.value.call == "cuLaunchHostFunc"
    graphs[0].destroy()
    stream.close()


@on_sim
def test_a_failed_retain_releases_the_user_object(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the user object made for the entry was never released.
    released: list[Any] = []
    real_release = backend.cudaUserObjectRelease

    def release(user_object: Any, count: int) -> Any:
        released.append(user_object)
        return real_release(user_object, count)

    monkeypatch.setattr(backend, "cudaGraphRetainUserObject", lambda *a: (sim_error(1),))
    monkeypatch.setattr(backend, "cudaUserObjectRelease", release)
    stream = Stream()
    with sim.capture(stream) as graphs, pytest.raises(CudaError):
        stream.launch_host_func(print, "not captured")
    assert len(released) == 1
    graphs[0].destroy()
    stream.close()


def sim_error(status: int) -> Any:
    return _sim.cudaError_t(status)


@on_sim
def test_captured_launches_reuse_semaphores_and_look_at_few_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: each captured launch made a semaphore for good, and every launch
    # asked every captured entry's semaphore.
    stream = Stream()
    made: list[int] = []
    real_new = _native.new_semaphore

    def new_semaphore() -> int:
        made.append(1)
        return real_new()

    def capture_round() -> Any:
        with sim.capture(stream) as graphs:
            for _ in range(50):
                stream.launch_host_func(print, "replayed", hold_stream=False)
        return graphs[0]

    capture_round().destroy()
    _callbacks.captured_count()  # lets the destroyed graph's entries go
    monkeypatch.setattr(_native, "new_semaphore", new_semaphore)
    graph = capture_round()
    assert made == []  # the first round's 50 semaphores served again
    looks: list[int] = []
    real_take = _native.try_take

    def try_take(semaphore: int) -> bool:
        looks.append(semaphore)
        return real_take(semaphore)

    monkeypatch.setattr(_native, "try_take", try_take)
    other = Stream()
    other.launch_host_func(lambda _: None, None)
    assert len(looks) <= 4  # not one per captured entry (50 alive)
    other.synchronize()
    graph.destroy()
    other.close()
    stream.close()


EXIT_WITH_A_FAULT_ON_DEVICE_1 = """
import extstream
from extstream import sim
healthy = extstream.Stream(0)
faulted = extstream.Stream(1)
sim.busy(faulted, 0.3)  # the fault comes after the launch below
sim.inject_error(faulted, "cudaErrorIllegalAddress")
faulted.launch_host_func(print, "never runs after the fault")
print("exiting", flush=True)
"""


@on_sim
def test_exit_drops_held_callbacks_of_a_faulted_device_at_once() -> None:
    # Before: the exit asked only the current device (0, healthy) whether its context
    # had failed, so it waited the whole timeout, then said "not reached" and exit 1.
    started = time.perf_counter()
    result = run_python(
        EXIT_WITH_A_FAULT_ON_DEVICE_1,
        env={"EXTSTREAM_SIM_DEVICES": "2", "EXTSTREAM_EXIT_TIMEOUT": "5"},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 4
    assert "dropped 1 host callback" in result.stderr
    assert "not reached" not in result.stderr


EXIT_WITH_A_GRAPH_REPLAYING = """
import extstream
from extstream import sim
stream = extstream.Stream()
with sim.capture(stream) as graphs:
    stream.launch_host_func(print, "replayed")
sim.busy(stream, 0.5)
graphs[0].replay(stream)  # its node runs Python on CUDA's thread after the busy work
print("exiting", flush=True)
"""


@on_sim
def test_exit_lets_queued_graph_replays_pass_before_finalizing() -> None:
    # Before: the exit waited for held callbacks only; a graph node still queued ran
    # Python on CUDA's thread during or after finalization.
    result = run_python(EXIT_WITH_A_GRAPH_REPLAYING, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["exiting"]  # dropped, not run
    assert "dropped 1 host callback" in result.stderr


@on_sim
def test_relaxed_capture_lets_another_threads_queries_leave_a_global_capture_valid() -> None:
    capturing, other = Stream(), Stream()
    answers: list[object] = []

    def query(guarded: bool) -> None:
        try:
            if guarded:
                with extstream.relaxed_capture(), extstream.relaxed_capture():
                    answers.append(other.done)
                answers.append(_sim._current.mode)  # restored after the nested blocks
            else:
                answers.append(other.done)
        except CudaError as exc:
            answers.append(exc.status)

    for guarded in (True, False):
        ended: list[int] = []
        try:
            with sim.capture(capturing):
                thread = threading.Thread(target=query, args=(guarded,))
                thread.start()
                thread.join()
        except CudaError as exc:
            ended.append(exc.status)
        answers.append(ended)
    # guarded: answered, mode back to global, capture valid; unguarded: refused (900),
    # and the capture invalidated (901), as CUDA does in global mode
    assert answers == [True, 0, [], 900, [901]]
    capturing.close()
    other.close()
