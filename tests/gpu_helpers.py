"""Helpers for CUDA-behaviour tests that run on a GPU and on the simulator alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

import extstream
from extstream import sim, testing


def torch_or_skip() -> ModuleType:
    """torch, for tests that need a real GPU's data; skipped on the simulator."""
    if sim.active():
        pytest.skip("needs torch on a real GPU (the simulator has no device memory)")
    torch: ModuleType = pytest.importorskip("torch")
    return torch


def sleep_on(stream: extstream.ExternalStream, seconds: float) -> None:
    """Queue work on *stream* that keeps it busy for about *seconds*."""
    if not sim.active():
        pytest.importorskip("torch")
    testing.busy(stream, seconds)


SLEEP_CODE = "from tests.gpu_helpers import sleep_on\n"


class Captured:
    """A graph captured from a stream: replay it, then destroy it."""

    def __init__(self, replay: Callable[[], None], destroy: Callable[[], None]) -> None:
        self.replay = replay
        self.destroy = destroy


_torch_streams: list[Any] = []  # torch's allocator may use them after a test: never freed


@contextmanager
def capture(device: int = 0) -> Iterator[tuple[extstream.ExternalStream, list[Captured]]]:
    """A stream of *device*, and capture of what the block queues on it (torch on a GPU,
    extstream.sim otherwise); after the block, the list holds the graph. The current
    device stays as it was."""
    graphs: list[Captured] = []
    if sim.active():
        stream = extstream.Stream(device)
        with sim.capture(stream) as captured:
            yield stream, graphs
        graph = captured[0]
        graphs.append(Captured(lambda: graph.replay(stream), graph.destroy))
        return
    torch = pytest.importorskip("torch")
    with torch.cuda.device(device):
        torch_stream = torch.cuda.Stream()
        torch_graph: Any = torch.cuda.CUDAGraph()
    _torch_streams.append(torch_stream)
    with torch.cuda.graph(torch_graph, stream=torch_stream):  # makes its device current
        torch.zeros(4, device=f"cuda:{device}").add_(1)  # a graph needs a kernel node too
        with torch.cuda.device(0):  # the caller's view: device 0 current
            yield extstream.ExternalStream(torch_stream), graphs
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
