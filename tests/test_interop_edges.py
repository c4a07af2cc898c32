"""Interop edges against stand-in framework modules (put in sys.modules as a caller's
import would): torch's handle 0, CuPy 13 (no Stream.from_external), the clock rate
that testing.busy sleeps by."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import extstream
import extstream.sim
from extstream import ExternalStream, testing

H = 0x7F00_0000_1000  # a handle that never reaches CUDA here
pytestmark = [pytest.mark.extstream_gpu, pytest.mark.usefixtures("no_debug_checks")]


def _recorder(log: list[Any], what: str) -> Any:
    @contextlib.contextmanager
    def enter(*args: Any, **kwargs: Any) -> Iterator[None]:
        log.append((what, *args, *kwargs.values()))
        yield

    return enter


def fake_torch(log: list[Any], *, get_stream_from_external: bool, clock_khz: int = 0) -> Any:
    """A torch whose ExternalStream(0) answers with a stream of its pool (pytorch#182960)."""

    def external(ptr: int, device: int) -> Any:
        return ("pooled stream", 0xB00) if ptr == 0 else ("external", ptr, device)

    cuda = types.SimpleNamespace(
        ExternalStream=external,
        stream=_recorder(log, "torch.cuda.stream"),
        device=_recorder(log, "torch.cuda.device"),
        _sleep=lambda cycles: log.append(("sleep", cycles)),
        get_device_properties=lambda device: types.SimpleNamespace(
            **({"clock_rate": clock_khz} if clock_khz else {})
        ),
    )
    if get_stream_from_external:  # torch 2.7+
        cuda.get_stream_from_external = lambda ptr, device: ("wrapped", ptr, device)
    return types.SimpleNamespace(cuda=cuda, version=types.SimpleNamespace(cuda="12.8"))


def fake_cupy(log: list[Any], *, version: int) -> Any:
    members: dict[str, Any] = {}
    if version >= 14:
        members["from_external"] = staticmethod(_recorder(log, "cupy.cuda.Stream.from_external"))
    stream = type("Stream", (), members)

    class Kernel:
        def __init__(self, source: str, name: str) -> None:
            pass

        def compile(self) -> None:
            log.append("compiled")

        def __call__(self, *args: Any) -> None:
            log.append(("kernel", *args))

    cuda = types.SimpleNamespace(
        Device=_recorder(log, "cupy.cuda.Device"),
        Stream=stream,
        ExternalStream=_recorder(log, "cupy.cuda.ExternalStream"),  # CuPy 14 deprecates it
    )
    return types.SimpleNamespace(cuda=cuda, RawKernel=Kernel, uint64=int)


@pytest.mark.parametrize(
    ("has_it", "made_current"),
    [(True, ("wrapped", 0, 0)), (False, ("pooled stream", 0xB00))],
    ids=["torch 2.7+", "older torch"],
)
def test_activate_wraps_handle_0_with_get_stream_from_external(
    monkeypatch: pytest.MonkeyPatch, has_it: bool, made_current: tuple[Any, ...]
) -> None:
    log: list[Any] = []
    monkeypatch.setitem(sys.modules, "torch", fake_torch(log, get_stream_from_external=has_it))
    with extstream.activate(ExternalStream(0, 0), "torch"):
        pass
    # torch 2.7+: the legacy default stream itself, not the pooled one ExternalStream(0)
    # gives; an older torch has only ExternalStream (the fallback).
    assert log == [("torch.cuda.stream", made_current)]
    log.clear()
    with extstream.activate(ExternalStream(H, 0), "torch"):
        pass
    assert log == [("torch.cuda.stream", ("wrapped" if has_it else "external", H, 0))]


@pytest.mark.parametrize("version", [13, 14])
def test_activate_and_prepare_fault_with_cupy_13_and_14(
    monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    log: list[Any] = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(log, version=version))
    target = ExternalStream(H, 0)
    with extstream.activate(target, "cupy"):
        pass
    entered = (
        ("cupy.cuda.Stream.from_external", target)
        if version >= 14
        else ("cupy.cuda.ExternalStream", H, 0)
    )
    assert log == [("cupy.cuda.Device", 0), entered]
    log.clear()
    monkeypatch.setattr(extstream.sim, "active", lambda: False)  # as on a GPU
    fault = testing.prepare_fault()
    fault(target)
    assert log == ["compiled", ("cupy.cuda.Device", 0), entered, ("kernel", (1,), (1,), (0,))]


class _Runtime(types.SimpleNamespace):
    """A cuda.bindings.runtime stand-in that answers cudaDevAttrClockRate."""

    def __init__(self, status: int, khz: int | None) -> None:
        super().__init__(cudaDeviceAttr=types.SimpleNamespace(cudaDevAttrClockRate=13))
        self.answer = (status, khz)

    def cudaDeviceGetAttribute(self, attribute: int, device: int) -> tuple[int, int | None]:
        assert (attribute, device) == (13, 0)
        return self.answer


@pytest.mark.parametrize(
    ("runtime", "torch_khz", "hz"),
    [
        (_Runtime(0, 1_755_000), 1_410_000, 1.755e9),  # CUDA's attribute first
        (_Runtime(35, None), 1_410_000, 1.41e9),  # no CUDA runtime here: torch's properties
        (_Runtime(35, None), 0, 1.98e9),  # neither: the default
    ],
    ids=["cudaDeviceGetAttribute", "torch properties", "default"],
)
def test_busy_sleeps_by_the_devices_clock_rate(
    monkeypatch: pytest.MonkeyPatch, runtime: _Runtime, torch_khz: int, hz: float
) -> None:
    log: list[Any] = []
    torch = fake_torch(log, get_stream_from_external=True, clock_khz=torch_khz)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    monkeypatch.setattr(extstream.sim, "active", lambda: False)  # as on a GPU
    testing.busy(ExternalStream(H, 0), 0.5)
    assert log == [
        ("torch.cuda.device", 0),
        ("torch.cuda.stream", ("wrapped", H, 0)),
        ("sleep", int(0.5 * hz)),
    ]
