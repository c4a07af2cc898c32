"""Error messages that name what the caller gave: a device the process does not see,
and a user's object (a short description, never its full repr); the API's small
conveniences (``launch_host_func`` without ``arg``, ``dir(extstream)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import extstream
from extstream import Event, ExternalStream, Stream, sim, testing
from extstream._short import LIMIT, short_repr

BIG = list(range(3000))  # its full repr is 17,036 characters


def _devices() -> int:
    count, reason = testing.devices()
    assert reason is None, reason
    return count


@pytest.mark.extstream_gpu
@pytest.mark.parametrize(
    "make",
    [
        lambda device: Stream(device_id=device),
        lambda device: Event(device_id=device),
        lambda device: Event.from_ipc_handle(bytes(64), device_id=device),
        Stream.priority_range,
    ],
    ids=["Stream", "Event", "Event.from_ipc_handle", "priority_range"],
)
def test_a_device_this_process_does_not_see_is_named_with_the_count(
    make: Callable[[int], object],
) -> None:
    count = _devices()
    # Not "cudaErrorInvalidDevice ... (in cudaSetDevice)", a call the caller never made.
    with pytest.raises(ValueError, match=rf"^device_id=7, but this process sees {count} device"):
        make(7)
    with pytest.raises(ValueError, match=rf"^device_id={count}, but this process sees {count} "):
        make(count)


class _Array:
    """A GPU array stand-in: its repr would copy the data from the device."""

    shape = (1000, 1000)
    dtype = "float32"
    __cuda_array_interface__ = {"shape": (1000, 1000), "stream": 12345}  # noqa: RUF012

    def __repr__(self) -> str:
        raise AssertionError("the array's repr was asked")


class _Loud:
    def __repr__(self) -> str:
        return "<Loud " + "x" * 5000 + ">"


class _Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_short_repr_is_bounded_and_never_raises() -> None:
    assert short_repr(7) == "7"
    assert short_repr("dev") == "'dev'"
    assert short_repr(None) == "None"
    assert short_repr(BIG) == "[0, 1, 2, 3, 4, 5, ...]"
    assert short_repr(_Array()) == f"<{__name__}._Array shape=(1000, 1000) dtype=float32>"
    loud = short_repr(_Loud())
    assert loud.startswith(f"<{__name__}._Loud: <Loud xxx") and loud.endswith("...>")
    assert short_repr(_Broken()) == f"<{__name__}._Broken object>"
    for value in (BIG, "x" * 10_000, b"y" * 10_000, _Loud(), {i: BIG for i in range(50)}):
        assert len(short_repr(value)) <= LIMIT + 60


def _stream() -> ExternalStream:
    return ExternalStream(0x7F00_0000_1000, 0)  # never reaches CUDA here


def _owned() -> Stream:
    return Stream()  # destroyed when collected


CALLS: list[tuple[str, Callable[[Any], object]]] = [
    ("as_stream", extstream.as_stream),
    ("ExternalStream device_id", lambda bad: ExternalStream(0x7F00_0000_1000, bad)),
    ("Stream priority", lambda bad: Stream(priority=bad)),
    ("Stream nonblocking", lambda bad: Stream(nonblocking=bad)),
    ("Event.from_handle", Event.from_handle),
    ("Event.from_ipc_handle", Event.from_ipc_handle),
    ("Event.elapsed_time", lambda bad: Event().elapsed_time(bad)),
    ("record", lambda bad: _stream().record(bad)),
    ("synchronize timeout", lambda bad: _stream().synchronize(timeout=bad)),
    ("launch_host_func", lambda bad: _owned().launch_host_func(bad, None)),
    ("add_callback hold_stream", lambda bad: _owned().add_callback(print, hold_stream=bad)),
    ("set_debug_checks", extstream.set_debug_checks),
    ("dlpack_exchange", lambda bad: extstream.dlpack_exchange(_stream(), bad)),
    ("current_stream_of", extstream.current_stream_of),
    ("sim.busy", lambda bad: sim.busy(_stream(), bad)),
    ("sim.inject_error", lambda bad: sim.inject_error(_stream(), bad)),
]


@pytest.mark.extstream_gpu
@pytest.mark.usefixtures("no_debug_checks")
@pytest.mark.parametrize("bad", [BIG, "x" * 10_000, _Array()], ids=["list", "str", "array"])
@pytest.mark.parametrize(("name", "call"), CALLS, ids=[name for name, _ in CALLS])
def test_a_message_names_a_users_object_in_short(
    name: str, call: Callable[[Any], object], bad: object
) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        call(bad)
    message = str(caught.value)
    assert len(message) < 1000, (name, len(message))  # the full repr: 10,000+
    assert short_repr(bad) in message, message


@pytest.mark.extstream_gpu
def test_launch_host_func_needs_no_arg(extstream_stream: Stream) -> None:
    seen: list[object] = []
    extstream_stream.launch_host_func(seen.append)  # as add_callback: arg=None
    extstream_stream.synchronize(timeout=10)
    assert seen == [None]


def test_dir_lists_the_public_api_only() -> None:
    names = dir(extstream)
    assert set(extstream.__all__) <= set(names)
    assert set(names) - set(extstream.__all__) <= {"sim", "testing"}  # imported submodules
    for private in ("Any", "Final", "TYPE_CHECKING", "annotations", "importlib", "_LAZY"):
        assert private not in names
