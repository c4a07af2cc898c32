"""ExternalStream and Event without CUDA: arguments, identity, comparisons, repr, pickling."""

from __future__ import annotations

import copy
import ctypes
import gc
import pickle
import weakref
from typing import Any

import numpy as np
import pytest

import extstream
from extstream import Event, ExternalStream, as_stream

H = 0x7F00_0000_1000  # a handle that never reaches CUDA in these tests
pytestmark = pytest.mark.usefixtures("no_debug_checks")


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (True, TypeError),
        (1.0, TypeError),
        ("0x1000", TypeError),
        (None, TypeError),
        (object(), TypeError),
        (-5, ValueError),
        (2**64, ValueError),
    ],
)
def test_bad_handles_are_refused_naming_the_value(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        ExternalStream(bad, 0)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("bad", "error"), [(True, TypeError), (0.0, TypeError), ("0", TypeError), (-2, ValueError)]
)
def test_bad_device_ids_are_refused(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="device_id"):
        ExternalStream(H, bad)  # type: ignore[arg-type]


def test_known_device_needs_no_cuda() -> None:
    s = ExternalStream(H, 3)
    assert (s.ptr, s.device_id, s.kind) == (H, 3, "ordinary")
    assert s.__cuda_stream__() == (0, H)


def test_integer_like_handles_are_accepted() -> None:
    assert ExternalStream(np.uint64(H), 0).ptr == H
    assert ExternalStream(2**64 - 1, 0).ptr == 2**64 - 1


def test_comparisons_use_the_handle_then_the_device_of_special_handles() -> None:
    a, a2, b = ExternalStream(H, 0), ExternalStream(H, 0), ExternalStream(H + 8, 0)
    claimed_elsewhere = ExternalStream(H, 1)  # one handle is one stream, whatever is claimed
    legacy0, legacy1 = ExternalStream(0, 0), ExternalStream(0, 1)
    assert a == a2 and hash(a) == hash(a2) and a is not a2
    assert a != b
    assert a == claimed_elsewhere and hash(a) == hash(claimed_elsewhere)
    assert legacy0 < legacy1 < a < b
    assert a <= a2 <= b
    assert b > a >= a2
    assert len({a, a2, b, claimed_elsewhere, legacy0, legacy1}) == 4
    assert sorted([b, legacy1, a, legacy0]) == [legacy0, legacy1, a, b]


def test_comparing_and_hashing_never_call_cuda() -> None:
    # The device of H is unknown and H names no stream: asking CUDA would raise.
    unknown, other = ExternalStream(H), ExternalStream(H + 8)
    assert hash(unknown) == hash(ExternalStream(H, 0))
    assert unknown == ExternalStream(H, 3) and unknown != other and unknown < other
    with pytest.raises(extstream.CudaError):
        _ = unknown.device_id


def test_legacy_stream_of_two_devices_differ() -> None:
    assert ExternalStream(0, 0) != ExternalStream(0, 1)
    assert hash(ExternalStream(0, 0)) != hash(ExternalStream(0, 1))


def test_comparing_with_non_streams() -> None:
    s = ExternalStream(H, 0)
    assert s != H
    assert (s == H) is False
    assert s.__eq__(H) is NotImplemented
    with pytest.raises(TypeError):
        _ = s < H


@pytest.mark.parametrize(
    ("ptr", "kind"),
    [(0, "legacy default"), (1, "legacy"), (2, "per-thread default"), (H, "ordinary")],
)
def test_repr_shows_handle_device_and_kind(ptr: int, kind: str) -> None:
    text = repr(ExternalStream(ptr, 2))
    assert text == f"<extstream.ExternalStream {ptr:#x} on device 2, {kind}>"


def test_repr_of_an_unusable_handle_does_not_raise() -> None:
    assert repr(ExternalStream(0x10)) == "<extstream.ExternalStream 0x10 on device ?, ordinary>"


def test_pickling_is_refused_and_copies_are_the_same_object() -> None:
    s = ExternalStream(H, 0)
    with pytest.raises(TypeError, match="another process"):
        pickle.dumps(s)
    assert copy.copy(s) is s and copy.deepcopy(s) is s


class _ProtocolStream:
    def __init__(self, value: Any, device_index: int | None = None) -> None:
        self.value = value
        if device_index is not None:
            self.device_index = device_index

    def __cuda_stream__(self) -> Any:
        return self.value


def test_cuda_stream_protocol_objects_are_wrapped_with_their_device() -> None:
    s = ExternalStream(_ProtocolStream((0, H), device_index=5))
    assert (s.ptr, s.device_id) == (H, 5)
    assert as_stream(_ProtocolStream((0, H)), 1).device_id == 1


def test_a_device_property_that_fails_is_no_hint() -> None:
    # cuda.core's Stream.device asks the driver, and raises without one: the wrapper
    # must still be made, its device asked from CUDA when needed.
    class CoreLikeStream(_ProtocolStream):
        @property
        def device(self) -> Any:
            raise RuntimeError("no driver library")

    s = ExternalStream(CoreLikeStream((0, H)), 3)
    assert (s.ptr, s.device_id) == (H, 3)
    assert ExternalStream(CoreLikeStream((0, H + 8))).ptr == H + 8  # device: asked later


def test_the_wrapper_keeps_the_framework_object_alive() -> None:
    # CuPy and cuda.core destroy a stream with its Python object: wrapping a
    # temporary must not leave a dangling handle.
    owner = _ProtocolStream((0, H), device_index=0)
    alive = weakref.ref(owner)
    wrapped = as_stream(owner)
    del owner
    gc.collect()
    assert alive() is not None
    del wrapped
    gc.collect()
    assert alive() is None


def test_an_explicit_device_wins_over_the_framework_hint() -> None:
    assert ExternalStream(_ProtocolStream((0, H), device_index=5), 2).device_id == 2


@pytest.mark.parametrize("value", [(1, H), (H,), H, (0, "x"), (0, -1)])
def test_bad_protocol_results_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        ExternalStream(_ProtocolStream(value), 0)


@pytest.mark.parametrize("handle", [1.9, 16.0, "16", b"2", bytearray(b"2"), None, 1j])
def test_protocol_handles_must_be_ints(handle: object) -> None:
    # int() would make 1, 16 or 2 of these: a handle is an int (as CuPy requires).
    with pytest.raises(TypeError, match="is not an int"):
        ExternalStream(_ProtocolStream((0, handle)), 0)


def test_any_version_0_sequence_is_taken_from_the_protocol() -> None:
    assert ExternalStream(_ProtocolStream([0, H]), 0).ptr == H  # as cuda.core takes
    for other in ([1, H], (False, H), "0x", (0.0, H), [0, H, 1]):
        with pytest.raises(TypeError, match="expected \\(0, handle\\)"):
            ExternalStream(_ProtocolStream(other), 0)


def test_protocol_handles_may_be_index_types_and_ctypes_pointers() -> None:
    assert ExternalStream(_ProtocolStream((0, np.uint64(H))), 0).ptr == H
    assert ExternalStream(_ProtocolStream((0, ctypes.c_void_p(H))), 0).ptr == H
    assert ExternalStream(_ProtocolStream((0, ctypes.c_void_p(None))), 0).ptr == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: extstream.Stream(priority=2**40), "priority"),
        (lambda: extstream.Stream(device_id=2**40), "device_id"),
        (lambda: extstream.Event(device_id=2**40), "device_id"),
        (lambda: extstream.get_current_stream(2**100), "device_id"),
        (lambda: ExternalStream(H, 2**31), "device_id"),
        (lambda: ExternalStream(H, -2), "device_id"),
    ],
)
def test_numbers_out_of_c_int_range_are_value_errors(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_legacy_framework_attribute_is_read_by_module() -> None:
    old_torch_stream = type("Stream", (), {"__module__": "torch.cuda.streams"})()
    old_torch_stream.cuda_stream = H
    old_torch_stream.device_index = 1
    s = as_stream(old_torch_stream)
    assert (s.ptr, s.device_id) == (H, 1)


def test_as_stream_returns_streams_as_they_are_and_lists_inputs_on_error() -> None:
    s = ExternalStream(H, 0)
    assert as_stream(s) is s
    assert as_stream(s, 1) == ExternalStream(H, 1)
    with pytest.raises(TypeError, match="__cuda_stream__"):
        as_stream("stream")


def test_event_from_handle_validation_and_identity() -> None:
    e = Event.from_handle(H)
    assert (e.ptr, e.device_id, e.closed) == (H, -1, False)
    assert e == Event.from_handle(H, 0) and hash(e) == hash(Event.from_handle(H))
    assert repr(e) == f"<extstream.Event {H:#x} on unknown device, foreign>"
    for bad, error in [(True, TypeError), (0, ValueError), (-1, ValueError), (1.5, TypeError)]:
        with pytest.raises(error):
            Event.from_handle(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="another process"):
        pickle.dumps(e)


def test_closed_foreign_event_refuses_use() -> None:
    e = Event.from_handle(H, 0)
    e.close()
    e.close()
    with pytest.raises(ValueError, match="closed event"):
        _ = e.done


def test_wait_event_refuses_streams_and_unknown_objects() -> None:
    s = ExternalStream(H, 0)
    with pytest.raises(TypeError, match="is a stream"):
        s.wait_event(ExternalStream(H + 8, 0))
    with pytest.raises(TypeError, match="CUDA event"):
        s.wait_event("event")
    with pytest.raises(ValueError, match="NULL"):
        s.wait_event(0)
    unrecorded_torch_event = type(
        "Event", (), {"__module__": "torch.cuda.streams", "cuda_event": 0}
    )()
    with pytest.raises(ValueError, match="no CUDA event yet"):
        s.wait_event(unrecorded_torch_event)


@pytest.mark.parametrize(
    ("timeout", "error"), [("1", TypeError), (True, TypeError), (-1, ValueError)]
)
def test_bad_timeouts_are_refused_before_any_wait(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        ExternalStream(H, 0).synchronize(timeout=timeout)  # type: ignore[arg-type]


def test_debug_checks_switch() -> None:
    previous = extstream.set_debug_checks(True)
    try:
        assert extstream.debug_checks_enabled() is True
        assert extstream.set_debug_checks(False) is True
        assert extstream.debug_checks_enabled() is False
    finally:
        extstream.set_debug_checks(previous)
    with pytest.raises(TypeError):
        extstream.set_debug_checks(1)  # type: ignore[arg-type]
