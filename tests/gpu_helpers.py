"""Helpers for CUDA-behaviour tests that run on a GPU and on the simulator alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

import extstream
from extstream import sim


def torch_or_skip() -> ModuleType:
    """torch, for tests that need a real GPU's data; skipped on the simulator."""
    if sim.active():
        pytest.skip("needs torch on a real GPU (the simulator has no device memory)")
    torch: ModuleType = pytest.importorskip("torch")
    return torch


def sleep_on(stream: extstream.ExternalStream, seconds: float) -> None:
    """Queue work on *stream* that keeps it busy for about *seconds*."""
    if sim.active():
        sim.busy(stream, seconds)
        return
    torch = pytest.importorskip("torch")
    with torch.cuda.device(stream.device_id):
        torch_stream = torch.cuda.ExternalStream(stream.ptr, device=stream.device_id)
        with torch.cuda.stream(torch_stream):
            torch.cuda._sleep(int(seconds * 2.0e9))


SLEEP_CODE = "from tests.gpu_helpers import sleep_on\n"


class Captured:
    """A graph captured from a stream: replay it, then destroy it."""

    def __init__(self, replay: Callable[[], None], destroy: Callable[[], None]) -> None:
        self.replay = replay
        self.destroy = destroy


@contextmanager
def capture(stream: extstream.ExternalStream) -> Iterator[list[Captured]]:
    """Capture what the block queues on *stream* (torch on a GPU, extstream.sim otherwise)."""
    graphs: list[Captured] = []
    if sim.active():
        with sim.capture(stream) as captured:
            yield graphs
        graph = captured[0]
        graphs.append(Captured(lambda: graph.replay(stream), graph.destroy))
        return
    torch = pytest.importorskip("torch")
    torch_stream = torch.cuda.ExternalStream(stream.ptr)
    torch_graph: Any = torch.cuda.CUDAGraph()
    with torch.cuda.graph(torch_graph, stream=torch_stream):
        torch.zeros(4, device="cuda").add_(1)  # a graph needs a kernel node too
        yield graphs
    holder = [torch_graph]
    graphs.append(Captured(torch_graph.replay, holder.clear))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll *predicate* until it holds or *timeout* seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
