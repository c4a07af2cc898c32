"""What a receiving library must honour: framework current streams, arrays that arrive
with a stream (CUDA Array Interface v3, DLPack), events across processes, keep-alive,
and parity with the peers' stream objects. Framework modules are stand-ins here (put
in sys.modules as a caller's import would); the real ones are tested on a GPU below."""

from __future__ import annotations

import contextlib
import gc
import pickle
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import extstream
import extstream.testing
from extstream import CudaError, Event, ExternalStream, Stream, sim

from .conftest import run_python
from .gpu_helpers import sleep_on, torch_or_skip, wait_until

pytestmark = pytest.mark.gpu
H = 0x7F00_0000_1000  # a handle that never reaches CUDA here


class Array:
    """Anything with a CUDA Array Interface v3 (only ``stream`` matters here)."""

    def __init__(self, stream: object) -> None:
        self.__cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "version": 3}
        self.__cuda_array_interface__["stream"] = stream


def busy_marker(stream: ExternalStream) -> Event:
    """An event recorded on *stream* now: done once the work queued before it is."""
    return stream.record()


# -- parity with the peers' stream objects ----------------------------------------------


def test_event_wait_makes_a_stream_wait(stream: Stream) -> None:
    consumer = Stream()
    event = Event()
    sleep_on(stream, 0.2)
    event.record(stream)
    event.wait(consumer)
    marker = busy_marker(consumer)
    assert not marker.done  # the consumer waits for the producer's sleep
    marker.synchronize()
    assert event.done
    consumer.close()


def test_event_flags_read_back() -> None:
    timing, shared = Event(timing=True, blocking=True), Event(interprocess=True)
    assert (timing.timing, timing.blocking, timing.interprocess) == (True, True, False)
    assert (shared.timing, shared.blocking, shared.interprocess) == (False, False, True)
    foreign = Event.from_handle(timing.ptr, 0)
    assert (foreign.timing, foreign.blocking, foreign.interprocess) == (None, None, None)
    timing.close()
    shared.close()


def test_priority_range_gives_least_then_greatest() -> None:
    least, greatest = ExternalStream.priority_range()
    assert least >= greatest  # lower numbers run first
    high = Stream(priority=greatest)
    assert high.priority == greatest
    assert ExternalStream.priority_range(0) == (least, greatest)
    high.close()


def test_add_callback_arg_is_optional(stream: Stream) -> None:
    seen: list[tuple[Any, ...]] = []
    stream.add_callback(lambda s, status, arg: seen.append((s, status, arg)))
    stream.synchronize()
    assert seen == [(stream, 0, None)]


@pytest.mark.usefixtures("no_debug_checks")
def test_torch_generic_stream_and_event_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch 2's device-generic torch.Stream and torch.Event have no __cuda_stream__
    # and no cuda_event: their ids are read, through torch (imported: they exist).
    cuda = types.SimpleNamespace(
        Stream=lambda stream_id, device_index, device_type: types.SimpleNamespace(
            cuda_stream=H + stream_id
        )
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    generic_stream = type("Stream", (), {"__module__": "torch"})()
    generic_stream.stream_id, generic_stream.device_index, generic_stream.device_type = 8, 0, 1
    assert (ExternalStream(generic_stream).ptr, ExternalStream(generic_stream).device_id) == (
        H + 8,
        0,
    )
    generic_stream.device_type = 0  # a CPU stream
    with pytest.raises(TypeError, match="not a CUDA stream"):
        ExternalStream(generic_stream)
    generic_event = type("Event", (), {"__module__": "torch"})()
    generic_event.event_id, generic_event.device = 0, types.SimpleNamespace(type="cuda")
    with pytest.raises(ValueError, match="no CUDA event yet"):
        ExternalStream(H, 0).wait_event(generic_event)
    generic_event.event_id, generic_event.device = H, types.SimpleNamespace(type="xpu")
    with pytest.raises(TypeError, match="not a CUDA event"):  # an id of another backend
        ExternalStream(H, 0).wait_event(generic_event)


# -- keep-alive ---------------------------------------------------------------------------


def test_keep_alive_lets_go_once_the_gpu_passed(stream: Stream) -> None:
    class Buffer:
        pass

    buffer = Buffer()
    alive = weakref.ref(buffer)
    sleep_on(stream, 0.2)
    stream.keep_alive(buffer, "and more")
    del buffer
    gc.collect()
    assert alive() is not None  # the stream has not got there yet
    stream.synchronize()
    assert wait_until(lambda: gc.collect() >= 0 and alive() is None)


# -- CUDA Array Interface and DLPack --------------------------------------------------------


@pytest.mark.usefixtures("no_debug_checks")
def test_stream_numbers_for_arrays_are_never_zero() -> None:
    for ptr, number in [(0, 1), (1, 1), (2, 2), (H, H)]:
        stream = ExternalStream(ptr, 0)
        assert stream.cai_stream == stream.dlpack_stream == number


@pytest.mark.usefixtures("no_debug_checks")
@pytest.mark.parametrize(
    ("entry", "error", "match"),
    [(0, ValueError, "disallows"), ("1", TypeError, "not an int"), (1.0, TypeError, "not an int")],
)
def test_bad_array_streams_are_refused(entry: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ExternalStream(H, 0).wait_for_array(Array(entry))
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        ExternalStream(H, 0).wait_for_array(object())


def test_an_array_without_a_stream_needs_no_wait(stream: Stream) -> None:
    sleep_on(stream, 1.0)
    consumer = Stream()
    consumer.wait_for_array(Array(None))
    with consumer.using_array(Array(None)) as same:
        assert same is consumer
    busy_marker(consumer).synchronize(timeout=0.5)  # long before the producer's sleep ends
    assert not stream.done
    consumer.close()


def test_wait_for_array_orders_after_the_producer(stream: Stream) -> None:
    consumer = Stream()
    sleep_on(stream, 0.2)
    consumer.wait_for_array(Array(stream.cai_stream))
    marker = busy_marker(consumer)
    assert not marker.done
    marker.synchronize()
    assert stream.done
    consumer.close()


def test_using_array_makes_the_producer_wait_for_the_consumer_after(stream: Stream) -> None:
    consumer = Stream()
    with (
        pytest.raises(RuntimeError, match="in the block"),
        consumer.using_array(Array(stream.cai_stream)),
    ):
        sleep_on(consumer, 0.2)  # the consumer's work on the array
        raise RuntimeError("raised in the block")
    marker = busy_marker(stream)  # the producer's next work
    assert not marker.done  # waits for the consumer's, even after an error
    marker.synchronize()
    assert consumer.done
    consumer.close()


def test_dlpack_exchange_orders_the_producer_before_the_consumer(stream: Stream) -> None:
    consumer = Stream()
    sleep_on(stream, 0.2)
    assert extstream.dlpack_exchange(stream, consumer.dlpack_stream) == consumer
    marker = busy_marker(consumer)
    assert not marker.done
    marker.synchronize()
    assert extstream.dlpack_exchange(stream, -1) is None  # no ordering asked
    legacy = extstream.dlpack_exchange(stream, None)
    assert legacy is not None and legacy.ptr == 1
    with pytest.raises(ValueError, match="DLPack"):
        extstream.dlpack_exchange(stream, 0)
    with pytest.raises(TypeError):
        extstream.dlpack_exchange(stream, "1")  # type: ignore[arg-type]
    consumer.close()


# -- framework current streams ----------------------------------------------------------


class FrameworkStream:
    def __init__(self, ptr: int, device: int) -> None:
        self.ptr, self.device_index = ptr, device

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.ptr)


@contextlib.contextmanager
def recorded(log: list[str], name: str) -> Iterator[None]:
    log.append(f"enter {name}")
    try:
        yield
    finally:
        log.append(f"exit {name}")


def fake_torch(current: int, log: list[str]) -> Any:
    cuda = types.SimpleNamespace(
        current_stream=lambda device: FrameworkStream(current, device),
        ExternalStream=lambda ptr, device: ("torch stream", ptr, device),
        stream=lambda native: recorded(log, f"torch {native[1]:#x}"),
    )
    return types.SimpleNamespace(cuda=cuda)


def fake_cupy(current: int, log: list[str]) -> Any:
    class Stream:
        @staticmethod
        def from_external(target: ExternalStream) -> Any:
            return recorded(log, f"cupy {target.ptr:#x}")

    cuda = types.SimpleNamespace(
        Device=lambda device: recorded(log, f"cupy device {device}"),
        get_current_stream=lambda: FrameworkStream(current, 0),
        Stream=Stream,
    )
    return types.SimpleNamespace(cuda=cuda)


@pytest.fixture
def frameworks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """torch and CuPy stand-ins, imported as a caller would; the log of their blocks."""
    log: list[str] = []
    monkeypatch.setitem(sys.modules, "torch", fake_torch(H, log))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(H + 8, log))
    previous = extstream.set_debug_checks(False)
    yield log
    extstream.set_debug_checks(previous)


def test_current_stream_of_a_framework(frameworks: list[str], monkeypatch: Any) -> None:
    assert extstream.current_stream_of("torch").ptr == H
    assert extstream.current_stream_of("cupy", 0).ptr == H + 8
    with pytest.raises(ValueError, match="unknown framework"):
        extstream.current_stream_of("jax")
    monkeypatch.delitem(sys.modules, "torch")
    with pytest.raises(ValueError, match="torch is not imported"):
        extstream.current_stream_of("torch")


def test_a_framework_without_cuda_is_refused_or_passed_over(
    frameworks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU-only torch (torch.version.cuda is None) raises on any torch.cuda call;
    # a ROCm CuPy's streams are HIP streams.
    cpu_torch = fake_torch(H, frameworks)
    cpu_torch.version = types.SimpleNamespace(cuda=None)
    cpu_torch.cuda.current_stream = None  # calling it would fail the test
    monkeypatch.setitem(sys.modules, "torch", cpu_torch)
    with pytest.raises(ValueError, match=r"torch has no CUDA streams.*version.cuda is None"):
        extstream.current_stream_of("torch")
    target = ExternalStream(H + 48, 0)
    with pytest.raises(ValueError, match="torch has no CUDA streams"):
        extstream.activate(target, "cupy", "torch").__enter__()
    assert frameworks == [] and extstream.get_current_stream(0) is not target  # nothing entered
    assert extstream.resolve_stream().ptr == H + 8  # torch passed over: CuPy's is followed
    hip_cupy = fake_cupy(H + 8, frameworks)
    hip_cupy.cuda.runtime = types.SimpleNamespace(is_hip=True)
    monkeypatch.setitem(sys.modules, "cupy", hip_cupy)
    with pytest.raises(ValueError, match="ROCm"):
        extstream.current_stream_of("cupy")
    assert extstream.resolve_stream() == extstream.get_current_stream()


def test_a_framework_that_finds_no_gpu_is_passed_over_or_named(
    frameworks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CUDA build on a machine without a GPU (a CI runner on the simulator, say):
    # its own calls raise its own errors.
    def no_gpu(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("No CUDA GPUs are available")

    sys.modules["torch"].cuda.current_stream = no_gpu
    sys.modules["torch"].cuda.ExternalStream = no_gpu
    assert extstream.resolve_stream().ptr == H + 8  # torch passed over: CuPy's is followed
    with pytest.raises(RuntimeError, match=r"torch cannot give its current stream.*No CUDA GPUs"):
        extstream.current_stream_of("torch")
    target = ExternalStream(H + 56, 0)
    frameworks.clear()  # resolve_stream entered CuPy's device block too
    with (
        pytest.raises(RuntimeError, match=r"torch cannot make .* current here.*No CUDA GPUs"),
        extstream.activate(target, "cupy", "torch"),
    ):
        pass
    # CuPy's block was entered, then left again; extstream's current stream is back.
    assert frameworks == [
        "enter cupy device 0",
        f"enter cupy {H + 56:#x}",
        f"exit cupy {H + 56:#x}",
        "exit cupy device 0",
    ]
    assert extstream.get_current_stream(0) is not target


def test_resolve_stream_follows_the_documented_rule(
    frameworks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = ExternalStream(H + 16, 0)
    assert extstream.resolve_stream(explicit) is explicit  # 1. given
    assert extstream.resolve_stream(H + 24).ptr == H + 24
    mine = ExternalStream(H + 32, 0)
    with mine:
        assert extstream.resolve_stream() is mine  # 2. made current with extstream
    assert extstream.resolve_stream().ptr == H  # 3. the first framework followed
    assert extstream.resolve_stream(follow=("cupy", "torch")).ptr == H + 8
    monkeypatch.setitem(sys.modules, "torch", fake_torch(0, frameworks))  # torch's default
    assert extstream.resolve_stream().ptr == H + 8
    assert extstream.resolve_stream(follow=("torch",)) == extstream.get_current_stream()  # 4.


def test_activate_sets_and_restores_every_framework(frameworks: list[str]) -> None:
    target = ExternalStream(H + 40, 0)
    with pytest.raises(KeyError), extstream.activate(target, "torch", "cupy") as active:
        assert active is target and extstream.get_current_stream(0) is target
        raise KeyError("raised in the block")
    assert frameworks == [
        f"enter torch {H + 40:#x}",
        "enter cupy device 0",
        f"enter cupy {H + 40:#x}",
        f"exit cupy {H + 40:#x}",
        "exit cupy device 0",
        f"exit torch {H + 40:#x}",
    ]
    assert extstream.get_current_stream(0) is not target
    with pytest.raises(ValueError, match="only torch and cupy"):
        extstream.activate(target, "numba").__enter__()


# -- events across processes ---------------------------------------------------------------


def test_interprocess_events_refuse_what_cuda_forbids() -> None:
    timing = Event(timing=True)
    with pytest.raises(ValueError, match="interprocess=True"):
        timing.ipc_handle()
    with pytest.raises(TypeError, match="interprocess=True"):
        pickle.dumps(timing)
    with pytest.raises(TypeError, match="64 bytes"):
        Event.from_ipc_handle("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bytes"):
        Event.from_ipc_handle(b"short")
    closed = Event(interprocess=True)
    closed.close()
    with pytest.raises(ValueError, match="closed event"):
        closed.ipc_handle()
    timing.close()


def test_the_simulator_refuses_interprocess_events_clearly() -> None:
    if not sim.active():
        pytest.skip("the simulator's answer")
    shared = Event(interprocess=True)
    with pytest.raises(CudaError, match="cudaErrorNotSupported"):
        shared.ipc_handle()
    shared.close()


def ipc_child(shared: Event, tensor: Any, round_: int) -> None:
    """In a ``spawn`` child: fill the shared tensor after some GPU work, then record the
    shared event there."""
    import torch  # noqa: PLC0415 - a GPU-only test's framework

    stream = Stream()
    extstream.testing.busy(stream, 0.05)
    with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):
        tensor.fill_(round_)
    shared.record(stream)
    stream.synchronize()


def test_an_event_orders_work_across_processes_20_of_20() -> None:
    torch_or_skip()
    code = (
        "import torch, torch.multiprocessing as mp, extstream\n"
        "from tests.test_gpu_protocols import ipc_child\n"
        "ctx = mp.get_context('spawn')\n"
        "ok = 0\n"
        "for round_ in range(1, 21):\n"
        "    shared = extstream.Event(interprocess=True)\n"
        "    tensor = torch.zeros(1 << 20, device='cuda')\n"
        "    worker = ctx.Process(target=ipc_child, args=(shared, tensor, round_))\n"
        "    worker.start()\n"
        "    worker.join(60)\n"
        "    reader = extstream.Stream()\n"
        "    reader.wait_event(shared)\n"
        "    with torch.cuda.stream(torch.cuda.ExternalStream(reader.ptr)):\n"
        "        seen = tensor.min().item(), tensor.max().item()\n"
        "    ok += seen == (round_, round_) and worker.exitcode == 0\n"
        "print('rounds', ok)\n"
    )
    result = run_python(code, timeout=600)
    assert result.stdout.split()[-2:] == ["rounds", "20"], result.stdout + result.stderr
