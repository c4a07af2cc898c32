"""The current stream: one ``ContextVar`` per device, and the rules for setting it.

Context variables give every thread and every asyncio task its own current
stream, and a task started inside ``with s:`` inherits ``s`` without leaking its
own changes back.

A device's variable holds a *binding*, a list ``[stream, token, block]``:
``with s:`` sets ``[s, token, None]`` and keeps the token that restores what was
current before; ``s.use()`` sets ``[s, None, block]``, where *block* is the
binding of the innermost open ``with`` (None outside any), so that leaving that
block restores what was current before it, and an exit that does not match the
innermost block is detected. Lists, not objects: one allocation, no cycles.

This module knows no stream class: ``_stream`` makes each device's default
stream and hands it in, and enters ``with`` blocks itself (``[s, token, None]``;
leaving the innermost block is its fast path too, a hot path kept free of calls).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final, NoReturn

from . import _config

#: Handle of the stream that is current where nothing was made current.
DEFAULT_HANDLE: Final = 2 if _config.PER_THREAD_DEFAULT_STREAM else 0

Variable = ContextVar[list[Any]]

#: Each device's variable, by device number.
variables: dict[int, Variable] = {}
_defaults: dict[Variable, list[Any]] = {}  # each variable's binding where nothing was set


def make_variable(device_id: int, default: object) -> Variable:
    """The variable of *device_id*, made with *default* as its stream if there is none yet."""
    name = f"extstream.current_stream[{device_id}]"
    binding: list[Any] = [default, None, None]
    made = ContextVar(name, default=binding)
    _defaults[made] = binding
    return variables.setdefault(device_id, made)  # atomic: of two racing threads, one wins


def was_set(var: Variable) -> bool:
    """Whether a ``with`` block or ``use()`` made a stream current in this context."""
    return var.get() is not _defaults[var]


def use(var: Variable, stream: object) -> None:
    """Make *stream* current until changed, or until the innermost open ``with`` ends."""
    binding = var.get()
    var.set([stream, None, binding if binding[1] is not None else binding[2]])


def leave(var: Variable, stream: object) -> None:
    """``with stream:`` ends: restore what was current before it, or raise if out of order."""
    binding = var.get()
    if binding[1] is None:  # made current by use() inside the block
        binding = binding[2]
    if binding is None or binding[0] is not stream:
        _raise_out_of_order(stream, binding)
    try:
        var.reset(binding[1])
    except ValueError:  # entered in another context (thread, task, generator)
        _raise_out_of_order(stream, None)


def _raise_out_of_order(stream: object, binding: list[Any] | None) -> NoReturn:
    innermost = "none" if binding is None else repr(binding[0])
    raise RuntimeError(
        f"leaving 'with {stream!r}' out of order: the innermost open 'with' block "
        f"of its device in this context is {innermost}; the current stream was left unchanged"
    )
