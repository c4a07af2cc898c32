"""Streams and events of torch, CuPy, numba and cuda.core, wrapped on a real GPU."""

from __future__ import annotations

import gc
import os
import warnings

import pytest

import extstream
from extstream import Event, ExternalStream, Stream, as_stream

from .gpu_helpers import sleep_on, torch_or_skip

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _real_gpu_only() -> None:
    torch_or_skip()  # other frameworks' streams exist only on a real GPU


def _check_wrapped(native: object, ptr: int) -> None:
    wrapped = as_stream(native)
    assert (wrapped.ptr, wrapped.device_id) == (ptr, 0)
    assert ExternalStream(native) == wrapped
    sleep_on(wrapped, 0.05)
    assert not wrapped.done
    wrapped.synchronize()
    assert wrapped.done


def test_torch_streams_and_events() -> None:
    torch = pytest.importorskip("torch")
    native = torch.cuda.Stream()
    _check_wrapped(native, native.cuda_stream)
    _check_wrapped(torch.cuda.ExternalStream(native.cuda_stream), native.cuda_stream)
    default = as_stream(torch.cuda.default_stream())
    assert (default.ptr, default.device_id) == (0, 0)
    event = torch.cuda.Event()
    event.record(native)
    mine = Stream()
    mine.wait_event(event)
    mine.wait(event)
    assert mine.record(event).ptr == event.cuda_event
    mine.synchronize()
    mine.close()


def test_cupy_streams_and_events() -> None:
    cupy = pytest.importorskip("cupy")
    native = cupy.cuda.Stream(non_blocking=True)
    _check_wrapped(native, native.ptr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        external = cupy.cuda.ExternalStream(native.ptr)
    _check_wrapped(external, native.ptr)
    event = cupy.cuda.Event()
    event.record(native)
    as_stream(native).wait_event(event)
    assert as_stream(native).record(event).ptr == event.ptr


def test_numba_streams_and_events() -> None:
    cuda = pytest.importorskip("numba.cuda")
    native = cuda.stream()
    ptr = as_stream(native).ptr
    assert ptr not in (0, 1, 2)
    _check_wrapped(native, ptr)
    event = cuda.event()
    event.record(native)
    as_stream(native).wait_event(event)


def test_cuda_core_streams_and_events() -> None:
    core = pytest.importorskip("cuda.core")
    device = core.Device(0)
    device.set_current()
    native = device.create_stream()
    _check_wrapped(native, int(native.handle))
    event = native.record()
    mine = Stream()
    mine.wait_event(event)
    mine.synchronize()
    mine.close()
    native.close()


def test_temporary_framework_streams_and_events_stay_alive_while_used() -> None:
    # CuPy and cuda.core destroy their stream or event with the Python object.
    cupy = pytest.importorskip("cupy")
    core = pytest.importorskip("cuda.core")
    stream = as_stream(cupy.cuda.Stream(non_blocking=True))  # its only reference
    gc.collect()
    sleep_on(stream, 0.05)
    stream.wait_event(cupy.cuda.Event())  # a temporary event, too
    stream.synchronize()
    assert stream.done
    device = core.Device(0)
    device.set_current()
    owner = device.create_stream()
    stream.wait_event(owner.record())  # freed at once by cuda.core without the wrapper's hold
    stream.synchronize()
    owner.close()


def test_extstream_objects_are_accepted_by_the_frameworks() -> None:
    torch = pytest.importorskip("torch")
    mine = Stream()
    torch_view = torch.cuda.ExternalStream(mine.ptr)
    assert torch_view.cuda_stream == mine.ptr
    event = Event()
    event.record(mine)
    assert Event.from_handle(event.ptr, 0) == event
    mine.close()


def test_current_stream_of_and_activate_with_torch_and_cupy() -> None:
    torch = pytest.importorskip("torch")
    cupy = pytest.importorskip("cupy")
    native = torch.cuda.Stream()
    with torch.cuda.stream(native):
        assert extstream.current_stream_of("torch").ptr == native.cuda_stream
        assert extstream.resolve_stream().ptr == native.cuda_stream  # torch's, not default
    mine = Stream()
    torch_before = torch.cuda.current_stream().cuda_stream
    cupy_before = cupy.cuda.get_current_stream().ptr
    with extstream.activate(mine, "torch", "cupy"):
        assert torch.cuda.current_stream().cuda_stream == mine.ptr
        assert cupy.cuda.get_current_stream().ptr == mine.ptr
        assert extstream.current_stream_of("cupy") == mine
        assert extstream.get_current_stream() is mine
    assert torch.cuda.current_stream().cuda_stream == torch_before
    assert cupy.cuda.get_current_stream().ptr == cupy_before
    mine.close()


def test_a_torch_generic_stream_is_wrapped() -> None:
    torch = pytest.importorskip("torch")
    native = torch.cuda.Stream()
    generic = torch.Stream(
        stream_id=native.stream_id, device_index=native.device_index, device_type=1
    )  # torch 2's device-generic class: no __cuda_stream__
    assert ExternalStream(generic).ptr == native.cuda_stream


def test_a_torch_generic_event_orders_work() -> None:
    torch = pytest.importorskip("torch")
    event = torch.Event(device="cuda")  # no cuda_event: its event_id is the handle
    producer, consumer = Stream(), Stream()
    sleep_on(producer, 0.3)
    with torch.cuda.stream(torch.cuda.ExternalStream(producer.ptr)):
        event.record()
    consumer.wait_event(event)
    assert not consumer.record().done  # waits behind the producer's sleep
    consumer.synchronize()
    assert producer.done
    producer.close()
    consumer.close()


# -- data handed between frameworks' streams, checked by its values -------------------

N = 1 << 22  # elements: long enough that a read racing the write would see the old data


def _fresh_value() -> int:
    # A value no earlier test left in recycled pool memory.
    return int.from_bytes(os.urandom(4), "little") | 1


def test_a_consumer_reads_a_cupy_producers_data_after_wait_for_array() -> None:
    cupy = pytest.importorskip("cupy")
    value = _fresh_value()
    producer = cupy.cuda.Stream(non_blocking=True)
    consumer = Stream()
    with producer:  # CuPy exports its current stream in the CAI (v3)
        sleep_on(as_stream(producer), 0.3)
        x = cupy.full(N, value, dtype=cupy.int64)  # written only after the sleep
        assert x.__cuda_array_interface__["stream"] == producer.ptr
        consumer.wait_for_array(x)
    with cupy.cuda.Stream.from_external(consumer):
        complete = (x == value).all()  # CuPy itself does not wait: only the stream order
    consumer.synchronize()
    assert bool(complete)
    consumer.close()


def test_a_consumer_reads_a_numba_producers_data_after_wait_for_array() -> None:
    cupy = pytest.importorskip("cupy")
    numba_cuda = pytest.importorskip("numba.cuda")
    numpy = pytest.importorskip("numpy")
    value = _fresh_value()
    producer = numba_cuda.stream()
    consumer = Stream()
    device_array = numba_cuda.device_array(N, dtype=numpy.int64, stream=producer)
    host = numba_cuda.pinned_array(N, dtype=numpy.int64)  # pinned: the copy is truly async
    host[:] = value
    sleep_on(as_stream(producer), 0.3)
    device_array.copy_to_device(host, stream=producer)  # runs only after the sleep
    interface = device_array.__cuda_array_interface__
    assert interface["stream"] == as_stream(producer).ptr
    consumer.wait_for_array(device_array)
    # A CuPy view of the raw memory: cupy.asarray would wait for the producer itself.
    memory = cupy.cuda.UnownedMemory(interface["data"][0], N * 8, device_array)
    view = cupy.ndarray((N,), cupy.int64, cupy.cuda.MemoryPointer(memory, 0))
    with cupy.cuda.Stream.from_external(consumer):
        complete = (view == value).all()
    consumer.synchronize()
    assert bool(complete)
    consumer.close()


def test_the_producer_overwrites_only_after_the_consumer_read_in_using_array() -> None:
    cupy = pytest.importorskip("cupy")
    old, new = _fresh_value(), _fresh_value() + 2
    producer = cupy.cuda.Stream(non_blocking=True)
    consumer = Stream()
    with producer:
        x = cupy.full(N, old, dtype=cupy.int64)
    # using_array reads the CAI, which names CuPy's current stream: the producer.
    with producer, consumer.using_array(x), cupy.cuda.Stream.from_external(consumer):
        sleep_on(consumer, 0.3)  # the consumer is slow to read
        saw_old = (x == old).all()
    with producer:
        x.fill(new)  # queued at once, run only after the consumer's read
    producer.synchronize()
    consumer.synchronize()
    assert bool(saw_old)
    assert bool((x == new).all())
    consumer.close()
