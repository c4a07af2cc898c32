"""Handles from other frameworks' stream and event objects.

Streams: the ``__cuda_stream__()`` protocol (torch, CuPy, numba-cuda and
cuda.core all export it) is the one path; older framework versions without it
are read by attribute, recognised by the module of their type. Frameworks are
never imported here: an object is only inspected. A ground-floor module: it
knows no extstream class (extstream's own streams are unwrapped by ``_stream``).
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Sequence
from typing import Any, Final

from ._short import short_repr

MAX_HANDLE: Final = 2**64 - 1

_STREAM_INPUTS: Final = (
    "an int handle in [0, 2**64), an object with __cuda_stream__(), "
    "or a torch / CuPy / numba / cuda.core stream"
)
_EVENT_INPUTS: Final = (
    "an extstream.Event, an int event handle, or a torch / CuPy / numba / cuda.core event"
)

# Stream attributes of framework versions that predate __cuda_stream__.
_LEGACY_STREAM_ATTRIBUTES: Final = {
    "torch": "cuda_stream",
    "cupy": "ptr",
    "numba": "handle",
    "numba_cuda": "handle",
}
# Event attributes: events have no common protocol. (torch 2's device-generic
# torch.Event has event_id instead of cuda_event.)
_EVENT_ATTRIBUTES: Final = {
    "torch": "cuda_event",
    "cupy": "ptr",
    "cuda": "handle",
    "numba": "handle",
    "numba_cuda": "handle",
}


def _framework(obj: object) -> str:
    return type(obj).__module__.partition(".")[0]


# Values that int() would turn into a number but that are no handle.
_NOT_HANDLES: Final = (float, complex, str, bytes, bytearray)


def _as_int_handle(value: object, source: object, what: str) -> int:
    """An int from an int (or ``__index__``), a ctypes pointer (``.value``) or a
    cuda.bindings handle (``int()``); floats, strings and bytes are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{what} handle from {short_repr(source)} is a bool, not a handle")
    handle = value if isinstance(value, int) else _convert(value, source, what)
    if not 0 <= handle <= MAX_HANDLE:
        raise ValueError(
            f"{what} handle {short_repr(value)} from {short_repr(source)} "
            "is out of range [0, 2**64)"
        )
    return handle


def _convert(value: object, source: object, what: str) -> int:
    raw: Any = getattr(value, "value", value)  # ctypes.c_void_p; None is NULL
    if value is None or isinstance(raw, _NOT_HANDLES):
        raise TypeError(
            f"{what} handle {short_repr(value)} from {short_repr(source)} is not an int"
        )
    if raw is None:
        return 0
    try:
        return operator.index(raw)
    except TypeError:
        pass
    try:  # cuda.bindings' CUstream and friends convert with int()
        return int(raw)
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} handle {short_repr(value)} from {short_repr(source)} is not an int"
        ) from None


def _hint(obj: object, name: str) -> Any:
    """``obj.name``, or None when it is missing or its property fails: a hint is
    optional (cuda.core's ``Stream.device`` calls the driver, and raises without one)."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _device_hint(obj: object) -> int:
    """The device a framework's stream object says it is on, or -1 (ask CUDA later)."""
    for name in ("device_index", "device_id"):  # torch, CuPy
        value = _hint(obj, name)
        if type(value) is int and value >= 0:
            return value
    device = _hint(obj, "device")  # cuda.core Device, torch.device
    if device is None:
        device = _hint(_hint(obj, "context"), "device")  # numba
    for name in ("device_id", "index", "id"):
        value = _hint(device, name)
        if type(value) is int and value >= 0:
            return value
    return -1


def stream_handle(obj: object) -> tuple[int, int]:
    """``(handle, device or -1)`` of any stream input other than a plain int or an
    extstream stream."""
    if isinstance(obj, bool) or obj is None:
        raise TypeError(f"cannot use {short_repr(obj)} as a CUDA stream: expected {_STREAM_INPUTS}")
    protocol = getattr(obj, "__cuda_stream__", None)
    if protocol is not None:
        value = protocol() if callable(protocol) else protocol
        # Any (version, handle) sequence, as cuda.core takes; version 0 is the only one.
        if not (
            isinstance(value, Sequence)
            and not isinstance(value, (str, bytes))
            and len(value) == 2
            and type(value[0]) is int
            and value[0] == 0
        ):
            raise TypeError(
                f"{type(obj).__name__}.__cuda_stream__() returned {short_repr(value)}; "
                "expected (0, handle)"
            )
        return _as_int_handle(value[1], obj, "stream"), _device_hint(obj)
    if _framework(obj) == "torch" and type(obj).__name__ == "Stream" and hasattr(obj, "stream_id"):
        return _torch_generic_stream(obj)
    attribute = _LEGACY_STREAM_ATTRIBUTES.get(_framework(obj))
    if attribute is not None and hasattr(obj, attribute):
        return _as_int_handle(getattr(obj, attribute), obj, "stream"), _device_hint(obj)
    try:
        ptr = operator.index(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"cannot use {short_repr(obj)} as a CUDA stream: expected {_STREAM_INPUTS}"
        ) from None
    return _as_int_handle(ptr, obj, "stream"), -1


def _torch_generic_stream(obj: Any) -> tuple[int, int]:
    """A torch 2 device-generic ``torch.Stream``: no ``__cuda_stream__``, but torch (already
    imported: the object exists) rebuilds its ``torch.cuda.Stream`` from the ids."""
    if getattr(obj, "device_type", None) != 1:  # torch's DeviceType CUDA
        raise TypeError(f"{short_repr(obj)} is not a CUDA stream")
    torch: Any = sys.modules["torch"]
    cuda_stream = torch.cuda.Stream(
        stream_id=obj.stream_id, device_index=obj.device_index, device_type=obj.device_type
    )
    return _as_int_handle(cuda_stream.cuda_stream, obj, "stream"), int(obj.device_index)


def is_event(obj: object) -> bool:
    """Whether *obj* is a framework's event object (not an int, not a stream)."""
    return (
        not hasattr(obj, "__cuda_stream__")
        and "Event" in type(obj).__name__
        and _framework(obj) in _EVENT_ATTRIBUTES
    )


def event_handle(obj: object) -> tuple[int, int]:
    """``(handle, device or -1)`` of an int event handle or a framework's event object."""
    if isinstance(obj, bool):
        raise TypeError(f"cannot use {short_repr(obj)} as a CUDA event: expected {_EVENT_INPUTS}")
    if isinstance(obj, int):
        if obj == 0:
            raise ValueError("event handle 0 is NULL, not a CUDA event")
        return _as_int_handle(obj, obj, "event"), -1
    if hasattr(obj, "__cuda_stream__"):
        raise TypeError(
            f"{short_repr(obj)} is a stream, not an event: use stream.wait(other) for streams"
        )
    if not is_event(obj):
        raise TypeError(f"cannot use {short_repr(obj)} as a CUDA event: expected {_EVENT_INPUTS}")
    framework = _framework(obj)
    attribute = _EVENT_ATTRIBUTES[framework]
    if framework == "torch" and not hasattr(obj, attribute):
        # torch 2's device-generic torch.Event: its event_id is a CUDA event only
        # for a CUDA device (other backends have ids of their own kind).
        if getattr(getattr(obj, "device", None), "type", None) != "cuda":
            raise TypeError(f"{short_repr(obj)} is not a CUDA event")
        attribute = "event_id"
    ptr = _as_int_handle(getattr(obj, attribute, None), obj, "event")
    if ptr == 0:
        raise ValueError(
            f"{short_repr(obj)} has no CUDA event yet (torch creates it at the first record())"
        )
    return ptr, _device_hint(obj)


def array_stream(array: object) -> int | None:
    """The stream an array's producer queued its work on, from its CUDA Array Interface
    (v3 ``stream``): None (nothing to wait for), 1 (legacy default), 2 (per-thread
    default) or a handle; these numbers are extstream handles as they are."""
    interface = getattr(array, "__cuda_array_interface__", None)
    if not isinstance(interface, dict):
        raise TypeError(f"{short_repr(array)} has no __cuda_array_interface__ (a dict)")
    stream = interface.get("stream")
    if stream is None:
        return None
    if type(stream) is not int:
        raise TypeError(
            f"the CUDA Array Interface stream of {short_repr(array)} is {short_repr(stream)}, "
            "not an int"
        )
    if stream == 0:
        raise ValueError(
            f"the CUDA Array Interface stream of {short_repr(array)} is 0, which the interface "
            "disallows (ambiguous: 1 is the legacy default stream, 2 the per-thread one)"
        )
    return _as_int_handle(stream, array, "stream")
