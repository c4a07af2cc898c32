"""The current stream: one ``ContextVar`` per device.

Context variables give every thread and every asyncio task its own current
stream, and a task started inside ``with s:`` inherits ``s`` without leaking its
own changes back.

A device's variable holds a *binding*, a list ``[stream, token, block]``:
``with s:`` sets ``[s, token, None]`` and keeps the token that restores what was
current before; ``s.use()`` sets ``[s, None, block]``, where *block* is the
binding of the innermost open ``with`` (None outside any), so that leaving that
block restores what was current before it, and an exit that does not match the
innermost block is detected. Lists, not objects: one allocation, no cycles.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import _config, _device, _stream

if TYPE_CHECKING:
    from ._stream import ExternalStream

# Handle of the stream that is current where nothing was made current.
DEFAULT_HANDLE = 2 if _config.PER_THREAD_DEFAULT_STREAM else 0

_vars: dict[int, ContextVar[list[Any]]] = {}
_vars_lock = threading.Lock()
_current_device = _device.current_device
# Device 0's variable once the process is known to have one device, so that
# get_current_stream() needs neither a CUDA call nor a dict look-up.
_only_device_var: ContextVar[list[Any]] | None = None


def current_var(device_id: int) -> ContextVar[list[Any]]:
    """The current-stream variable of *device_id*, made on first use."""
    var = _vars.get(device_id)
    if var is None:
        with _vars_lock:
            var = _vars.get(device_id)
            if var is None:
                default = _stream.ExternalStream(DEFAULT_HANDLE, device_id)
                name = f"extstream.current_stream[{device_id}]"
                var = ContextVar(name, default=[default, None, None])  # noqa: B039 - never mutated
                _vars[device_id] = var
    return var


def get_current_stream(device_id: int | None = None) -> ExternalStream:
    """The stream current in this thread or task for *device_id* (None: the current device).

    Where nothing was made current: the legacy default stream (handle 0), or the
    per-thread default stream (handle 2) with ``EXTSTREAM_PER_THREAD_DEFAULT_STREAM=1``.
    Costs no CUDA call when the device is given or only one device exists.
    """
    global _only_device_var
    if device_id is None:
        var = _only_device_var
        if var is not None:
            stream: ExternalStream = var.get()[0]
            return stream
        device_id = _current_device()  # one cudaGetDevice with several devices
        if _device.device_count() == 1:
            _only_device_var = current_var(0)
    elif type(device_id) is not int:
        device_id = _device.device_index(device_id)
    try:
        stream = _vars[device_id].get()[0]
    except KeyError:
        stream = current_var(_device.device_index(device_id)).get()[0]
    return stream
