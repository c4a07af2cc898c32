"""What a library that receives streams does with its caller's frameworks.

``current_stream_of`` reads a framework's current stream, ``resolve_stream`` is
the one rule for ``stream=None``, ``activate`` makes a stream current in
extstream and in frameworks for a block, and ``dlpack_exchange`` is the
producer's side of ``__dlpack__(stream=...)``. A framework is only used where
the caller has imported it: extstream never imports one.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Final

from . import _current, _device
from ._public import public
from ._short import short_repr
from ._stream import ExternalStream, as_stream, get_current_stream

# The module each framework's current stream is read from, once the caller imported it.
_MODULES: Final = {"torch": "torch", "cupy": "cupy", "numba": "numba.cuda"}
_ACTIVATABLE: Final = ("torch", "cupy")  # numba has no current stream to set


def _imported(framework: str) -> ModuleType | None:
    if not isinstance(framework, str) or framework not in _MODULES:
        raise ValueError(
            f"unknown framework {short_repr(framework)}: expected one of {sorted(_MODULES)}"
        )
    return sys.modules.get(_MODULES[framework])


def without_cuda(framework: str, module: Any) -> str | None:
    """Why an imported *framework* has no CUDA streams (None: it has): a CPU-only or
    ROCm build of torch (``torch.version.cuda`` is None), a ROCm build of CuPy."""
    if framework == "torch" and getattr(getattr(module, "version", None), "cuda", "") is None:
        return "this torch is built without CUDA (torch.version.cuda is None)"
    runtime = getattr(getattr(module, "cuda", None), "runtime", None)
    if framework == "cupy" and getattr(runtime, "is_hip", False):
        return "this CuPy is a ROCm (HIP) build"
    return None


def _cuda_framework(framework: str) -> Any:
    """The imported module of *framework*; ``ValueError`` if not imported or without CUDA."""
    module = _imported(framework)
    if module is None:
        raise ValueError(
            f"{framework} is not imported: extstream uses a framework only where the "
            "caller has imported it"
        )
    reason = without_cuda(framework, module)
    if reason is not None:
        raise ValueError(f"{framework} has no CUDA streams: {reason}")
    return module


@public
def current_stream_of(framework: str, device_id: int | None = None) -> ExternalStream:
    """*framework*'s current stream on *device_id* (None: the current device).

    ``"torch"`` (``torch.cuda.current_stream``), ``"cupy"`` (its current stream of
    that device) or ``"numba"``, which has no current stream: its default stream.
    ``ValueError`` if the caller has not imported the framework, or if it is built
    without CUDA (a CPU-only torch); ``RuntimeError`` (from the framework's error)
    if it cannot reach CUDA here, e.g. on a machine without a GPU.
    """
    module = _cuda_framework(framework)
    device = _device.device_or_current(device_id)
    try:
        native = _native_current(framework, module, device)
    except Exception as exc:  # the framework's own error: it cannot reach CUDA here
        raise RuntimeError(
            f"{framework} cannot give its current stream of device {device} here "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return as_stream(native, device)


def _native_current(framework: str, module: Any, device: int) -> Any:
    """*framework*'s own current-stream object of *device*, by its own calls."""
    if framework == "torch":
        return module.cuda.current_stream(device)
    if framework == "cupy":
        with module.cuda.Device(device):
            return module.cuda.get_current_stream()
    with module.gpus[device]:
        return module.default_stream()


@public
def resolve_stream(
    stream: object = None,
    *,
    follow: tuple[str, ...] = ("torch", "cupy"),
    device_id: int | None = None,
) -> ExternalStream:
    """The stream a library function should use for ``stream=stream``.

    1. *stream* itself, when given (anything :func:`as_stream` takes);
    2. else the stream made current with extstream's ``with`` or ``use()``;
    3. else the current stream of the first framework in *follow* that the caller
       has imported, that can tell it here (a CPU-only torch, or a framework that
       finds no GPU, as under the simulator, is passed over) and whose current
       stream is not its default;
    4. else extstream's current stream (the default stream).

    All on *device_id* (None: the current device).
    """
    if stream is not None:
        return as_stream(stream)
    device = _device.device_or_current(device_id)
    current = get_current_stream(device)
    if _current.was_set(_current.variables[device]):
        return current
    for framework in follow:
        module = _imported(framework)
        if module is None or without_cuda(framework, module) is not None:
            continue
        try:
            native = _native_current(framework, module, device)
        except Exception:  # noqa: S112 - it cannot reach CUDA here (no GPU for it; the simulator)
            continue
        theirs = as_stream(native, device)
        if theirs.ptr > 2:  # 0, 1, 2: the framework's default stream
            return theirs
    return current


@public
@contextlib.contextmanager
def activate(stream: object, *frameworks: str) -> Iterator[ExternalStream]:
    """``with extstream.activate(s, "torch", "cupy"):`` makes *s* the current stream
    of its device in extstream and in each framework named, for the block; on exit
    each gets back exactly what was current, also when the block raises.

    torch through ``torch.cuda.get_stream_from_external`` (torch 2.7+; before,
    ``torch.cuda.ExternalStream``) and ``torch.cuda.stream``; CuPy through
    ``cupy.cuda.Stream.from_external`` (CuPy 14; before, ``cupy.cuda.ExternalStream``)
    in a ``with`` block on the stream's device. The frameworks must be imported by
    the caller, with CUDA (``ValueError`` otherwise, before anything is made
    current); a framework that fails (no GPU for it here) raises ``RuntimeError``
    after what was made current is restored.
    """
    target = as_stream(stream)
    for framework in frameworks:
        if framework not in _ACTIVATABLE:
            raise ValueError(
                f"cannot make a stream current in {framework!r}: "
                f"only {' and '.join(_ACTIVATABLE)} have a current stream"
            )
    modules = {framework: _cuda_framework(framework) for framework in frameworks}
    device = target.device_id  # extstream's own errors stay its own, outside the try
    with contextlib.ExitStack() as blocks:
        blocks.enter_context(target)
        for framework, module in modules.items():
            try:
                _enter_framework(blocks, framework, module, target, device)
            except Exception as exc:  # the framework's own error; what was entered is left
                raise RuntimeError(
                    f"{framework} cannot make {target!r} current here ({type(exc).__name__}: {exc})"
                ) from exc
        yield target


def _enter_framework(
    blocks: contextlib.ExitStack, framework: str, module: Any, target: ExternalStream, device: int
) -> None:
    """Make *target* (of *device*) current in *framework* until *blocks* closes."""
    if framework == "torch":
        blocks.enter_context(module.cuda.stream(torch_stream(module, target.ptr, device)))
        return
    blocks.enter_context(module.cuda.Device(device))
    from_external = getattr(module.cuda.Stream, "from_external", None)
    if from_external is not None:  # CuPy 14
        blocks.enter_context(from_external(target))
    else:
        blocks.enter_context(module.cuda.ExternalStream(target.ptr, device))


def torch_stream(torch: Any, ptr: int, device: int) -> Any:
    """torch's stream object for the handle *ptr* of *device*.

    ``torch.cuda.get_stream_from_external`` (torch 2.7+) where it exists: for handle 0
    it gives the legacy default stream, where ``torch.cuda.ExternalStream(0)`` gives
    a stream of torch's pool instead (pytorch#182960).
    """
    wrap = getattr(torch.cuda, "get_stream_from_external", None)
    if wrap is not None:
        return wrap(ptr, device)
    return torch.cuda.ExternalStream(ptr, device=device)


@public
def dlpack_exchange(producer: object, requested: int | None) -> ExternalStream | None:
    """The producer's duty in ``__dlpack__(stream=requested)``: order the work queued
    on *producer* before the consumer's stream, and return that stream.

    *requested*: None or 1 (the legacy default stream), 2 (per-thread default), a
    stream handle, or -1 (the consumer asks for no ordering: returns None). 0 is
    disallowed by the DLPack specification (``ValueError``).
    """
    source = as_stream(producer)
    if requested is None:
        requested = 1
    if type(requested) is not int:
        raise TypeError(f"stream must be an int or None, not {short_repr(requested)}")
    if requested == -1:
        return None
    if requested == 0:
        raise ValueError(
            "__dlpack__(stream=0) is disallowed by the DLPack specification for CUDA: "
            "pass 1 for the legacy default stream, 2 for the per-thread one"
        )
    consumer = ExternalStream(requested, source.device_id if requested <= 2 else -1)
    if consumer != source:
        consumer.wait(source)
    return consumer
