"""Host callbacks and waits: extstream side by side with CuPy, in one process.

Measures, on one idle non-blocking stream made by CuPy and wrapped by extstream:

- burst and wake-up per callback, and ``await stream`` on an idle stream, with
  the functions ``python -m extstream bench`` uses for its callback table;
- ``synchronize()`` on a stream that is busy for 1 ms (the interruptible wait's
  overhead), in microseconds;
- memory: RSS growth over 1,000,000 callbacks (launched in chunks of 10,000).

Medians of several batches. Run on a GPU machine:
``PYTHONPATH=src python3 benchmarks/callbacks.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator

import cupy
import torch
from cuda.bindings import runtime

import extstream
from extstream import _callbacks
from extstream._bench import Launch, await_idle_us, burst_us, wake_up_us

NO_CAPTURE_QUERY = "held, no capture query"


@contextlib.contextmanager
def capture_query_skipped(skip: bool) -> Iterator[None]:
    """Launch as if no stream were ever captured (what a capture-query-free design gives)."""
    if not skip:
        yield
        return
    names = vars(_callbacks)  # the name launch() looks up
    saved = names["is_capturing"]
    names["is_capturing"] = lambda ptr, direct: False
    try:
        yield
    finally:
        names["is_capturing"] = saved


def busy_synchronize_us(stream: extstream.ExternalStream, repeats: int) -> tuple[float, float]:
    """Median time of extstream's and the raw cudaStreamSynchronize on a stream busy ~1 ms."""
    torch_stream = torch.cuda.ExternalStream(stream.ptr)
    handle = runtime.cudaStream_t(stream.ptr)

    def raw() -> None:
        runtime.cudaStreamSynchronize(handle)

    ways: dict[str, Callable[[], None]] = {"extstream": stream.synchronize, "raw": raw}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, wait in ways.items():
            with torch.cuda.stream(torch_stream):
                torch.cuda._sleep(int(1e-3 * 1.98e9))
            started = time.perf_counter()
            wait()
            samples[name].append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples["extstream"]), statistics.median(samples["raw"])


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def rss_growth_mb(launch: Launch, stream: extstream.ExternalStream, total: int) -> float:
    def callback(_: object) -> None:
        pass

    chunk = 10_000
    launch(callback, None)
    stream.synchronize()
    time.sleep(0.1)
    gc.collect()
    before = rss_mb()
    for _ in range(total // chunk):
        for i in range(chunk):
            launch(callback, i)
        stream.synchronize()
    time.sleep(0.2)  # let the dispatcher finish the last notifications
    gc.collect()
    return rss_mb() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--million", type=int, default=1_000_000)
    args = parser.parse_args()

    native = cupy.cuda.Stream(non_blocking=True)
    stream = extstream.ExternalStream(native.ptr)
    ways: dict[str, Launch] = {
        "extstream hold_stream=True": stream.launch_host_func,
        NO_CAPTURE_QUERY: stream.launch_host_func,
        "extstream hold_stream=False": lambda cb, arg: stream.launch_host_func(
            cb, arg, hold_stream=False
        ),
        "CuPy launch_host_func": native.launch_host_func,
    }
    print(f"extstream {extstream.__version__}, CuPy {cupy.__version__}, torch {torch.__version__}")
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"({NO_CAPTURE_QUERY}: unsafe for graphs, it shows what the per-launch query costs)")
    burst = {name: [] for name in ways}  # type: dict[str, list[float]]
    for _ in range(args.batches):
        for name, launch in ways.items():  # interleaved, so drift hits every way alike
            with capture_query_skipped(name == NO_CAPTURE_QUERY):
                burst[name].append(burst_us(launch, args.n))
            stream.synchronize()
    wake = {}
    for name, launch in ways.items():
        with capture_query_skipped(name == NO_CAPTURE_QUERY):
            wake[name] = wake_up_us(launch, stream.synchronize, 300)
    cupy_burst = statistics.median(burst["CuPy launch_host_func"])
    cupy_wake = wake["CuPy launch_host_func"]
    print(
        f"\nper callback in a {args.n}-callback burst (median of {args.batches}), wake-up latency:"
    )
    print(f"{'':<30}{'burst us':>10}{'x CuPy':>8}{'wake us':>10}{'x CuPy':>8}")
    for name in ways:
        b, w = statistics.median(burst[name]), wake[name]
        print(f"{name:<30}{b:>10.2f}{b / cupy_burst:>8.2f}{w:>10.1f}{w / cupy_wake:>8.2f}")
    print(f"\nawait idle stream: {await_idle_us(stream, 2000):.2f} us")
    ours, raw = busy_synchronize_us(stream, 50)
    print(f"synchronize() of ~1 ms of work: {ours:.0f} us, raw cudaStreamSynchronize {raw:.0f} us")
    for name in ("extstream hold_stream=True", "extstream hold_stream=False"):
        growth = rss_growth_mb(ways[name], stream, args.million)
        print(f"RSS growth over {args.million} callbacks, {name}: {growth:+.1f} MB")


if __name__ == "__main__":
    main()
