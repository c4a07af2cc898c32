"""``python -m extstream bench``: host cost per call, extstream beside raw cuda-python and peers.

What it measures: nanoseconds per call of the stream operations extstream
wraps -- ``done`` (stream query), ``synchronize``, ``record(ev)``,
``wait_event(ev)``, ``Event.done``, ``with s: pass``, ``get_current_stream()`` and
construction -- for extstream, raw ``cuda.bindings`` runtime and driver calls
on prebuilt handles, CuPy, PyTorch and cuda.core, whichever are installed; then
host callbacks (microseconds): per callback in a burst of ``--n`` launched back
to back, until the last one ran, and the wake-up from one launch on an idle
stream until its callback runs, for extstream's two modes and CuPy's
``launch_host_func``, and ``await stream`` on an idle stream.
Everything runs in one process against ONE idle non-blocking stream; every
implementation wraps its integer handle (with device 0 unless a row says
otherwise), so only the wrapper cost differs. Callables are bound to plain
names beforehand, so attribute look-ups are not part of the numbers.

How: each cell is a ``timeit`` loop with the statement inlined (timer
``time.perf_counter_ns``, GC off while a batch runs). After one warm-up batch,
``--batches`` batches of ``--n`` calls are timed, the batches of one operation
interleaved across implementations so that drift (clock boost, other load) hits
them alike; the stream is synchronized between batches, outside the timed
region. Raw calls are checked once for a CUDA error before they are timed,
since a failing call would otherwise just look fast.

Why medians: batch times are skewed -- interrupts, page faults or a descheduled
thread add rare, large, one-sided delays that drag a mean, while the minimum
rewards one lucky batch. The median is the typical cost; min and max across
batches show the spread. All numbers include the bare timing loop's cost,
printed in the header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import importlib
import importlib.util
import json
import platform
import statistics
import threading
import time
import timeit
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from . import _device, _stream
from ._backend import NAME as BACKEND
from ._backend import cuda as _cuda
from ._device import device_name, versions
from ._errors import call
from ._stream import Event, ExternalStream, get_current_stream
from ._version import __version__

# The raw columns' modules; None on the simulator, where there is nothing to measure.
runtime: Any = _cuda.runtime_module
driver: Any = _cuda.driver_module

EXT, RT, DRV, CUPY, TORCH, CORE = (
    "extstream",
    "raw runtime",
    "raw driver",
    "CuPy",
    "torch",
    "cuda.core",
)
COLUMNS: Final = (EXT, RT, DRV, CUPY, TORCH, CORE)
RAW: Final = (RT, DRV)
WITH: Final = "with s:\n    pass"

Namespace = dict[str, Any]


@dataclass(frozen=True)
class Op:
    """One table row: the statement each column times, in its own namespace."""

    name: str
    stmts: dict[str, str]
    ratio_vs: tuple[str, ...] = ()  # extstream / fastest of these columns
    unsupported: dict[str, str] = field(default_factory=dict)  # column -> why
    several_devices: bool = False  # extstream timed as if the process saw several devices


def _get_current_stream(arg: str, several_devices: bool = False) -> Op:
    return Op(
        f"get_current_stream({arg})" + (" [several devices]" if several_devices else ""),
        {
            EXT: f"get_current_stream({arg})",
            RT: "var.get()",
            CUPY: f"get_current_stream({arg})",
            TORCH: f"current_stream({arg})",
        },
        (CUPY,),
        {CORE: "cuda.core has no current stream"},
        several_devices,
    )


def _construct(args: str, torch_args: str) -> Op:
    return Op(
        f"construct({args})",
        {
            EXT: f"ExternalStream({args})",
            RT: "cudaStream_t(ptr)",
            DRV: "CUstream(ptr)",
            CUPY: f"ExternalStream({args})",
            TORCH: f"ExternalStream({torch_args})",
            CORE: "Stream.from_handle(ptr)",
        },
        (RT,),
    )


# record(ev) runs before wait_event(ev), so the event waited on has been
# recorded (waiting on a never-recorded event is a legal but unrepresentative no-op).
OPS: Final = (
    Op(
        "done",
        {
            EXT: "s.done",
            RT: "cudaStreamQuery(h)",
            DRV: "cuStreamQuery(h)",
            CUPY: "s.done",
            TORCH: "s.query()",
        },
        RAW,
        {CORE: "cuda.core Stream has no query"},
    ),
    Op("done [int handle]", {RT: "cudaStreamQuery(ptr)"}),
    Op(
        "synchronize",
        {
            EXT: "s.synchronize()",
            RT: "cudaStreamSynchronize(h)",
            DRV: "cuStreamSynchronize(h)",
            CUPY: "s.synchronize()",
            TORCH: "s.synchronize()",
            CORE: "s.sync()",
        },
        RAW,
    ),
    Op(
        "record(ev)",
        {
            EXT: "s.record(ev)",
            RT: "cudaEventRecord(ev, h)",
            DRV: "cuEventRecord(ev, h)",
            CUPY: "s.record(ev)",
            TORCH: "s.record_event(ev)",
            CORE: "s.record(ev)",
        },
        RAW,
    ),
    Op(
        "wait_event(ev)",
        {
            EXT: "s.wait_event(ev)",
            RT: "cudaStreamWaitEvent(h, ev, 0)",
            DRV: "cuStreamWaitEvent(h, ev, 0)",
            CUPY: "s.wait_event(ev)",
            TORCH: "s.wait_event(ev)",
            CORE: "s.wait(ev)",
        },
        RAW,
    ),
    Op(
        "Event.done",
        {
            EXT: "ev.done",
            RT: "cudaEventQuery(ev)",
            DRV: "cuEventQuery(ev)",
            CUPY: "ev.done",
            TORCH: "ev.query()",
            CORE: "ev.is_done",
        },
        (CUPY,),
    ),
    Op(
        "with s: pass",
        {EXT: WITH, CUPY: WITH, TORCH: "with stream(s):\n    pass"},
        (CUPY,),
        {CORE: "cuda.core Stream is not a context manager"},
    ),
    _get_current_stream(""),
    _get_current_stream("", several_devices=True),
    _get_current_stream("0"),
    _construct("ptr, 0", "ptr, device=0"),
    _construct("ptr", "ptr"),
)

LEGEND: Final = """\
ns per call, median of the batches ('n/a': implementation lacks it, '-': not compared).
raw runtime/driver: cuda.bindings calls on a prebuilt cudaStream_t / CUstream (and event);
  'done [int handle]' passes the plain int instead; get_current_stream rows show
  contextvars.ContextVar.get() as a floor; construct rows show cudaStream_t(ptr) / CUstream(ptr).
construct(ptr) leaves the device unknown (extstream/CuPy -1, torch None).
'[several devices]': extstream as with several devices visible (one cudaGetDevice a call).
ratio = extstream / fastest raw runtime|driver (done .. wait_event),
        / CuPy (Event.done, with, get_current_stream), / cudaStream_t(ptr) (construct).
host callbacks: us per callback in a burst launched back to back (until the last ran)
  and from one launch on an idle stream until its callback starts; extstream held =
  hold_stream=True, notify = hold_stream=False, CuPy = ExternalStream.launch_host_func."""


@dataclass(frozen=True)
class Stats:
    """Median, min and max ns per call across the batches of one cell."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        """The median, min and max of one cell's batches."""
        return cls(statistics.median(samples), min(samples), max(samples))


@dataclass(frozen=True)
class Row:
    """One operation's measured cells and, per column left out, why."""

    op: Op
    stats: dict[str, Stats]
    failed: dict[str, str]

    @property
    def ratio(self) -> float | None:
        """extstream's median over the fastest of ``op.ratio_vs``; None if either is missing."""
        refs = [self.stats[col].median for col in self.op.ratio_vs if col in self.stats]
        if EXT not in self.stats or not refs:
            return None
        return self.stats[EXT].median / min(refs)


@dataclass(frozen=True)
class Result:
    """A whole run: the machine, the settings and one row per operation."""

    machine: dict[str, str]
    n: int
    batches: int
    loop_overhead_ns: float
    rows: list[Row]
    callbacks: list[CallbackRow] = field(default_factory=list)
    await_idle_us: Stats | None = None


# --- one namespace per column; a set-up that raises marks the column n/a ---


def _raw_runtime_ns(ptr: int, h: Any, ev: Any) -> Namespace:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("current_stream")
    var.set(ptr)
    return {
        "h": h,
        "ev": ev,
        "ptr": ptr,
        "var": var,
        "cudaStream_t": runtime.cudaStream_t,
        "cudaStreamQuery": runtime.cudaStreamQuery,
        "cudaStreamSynchronize": runtime.cudaStreamSynchronize,
        "cudaEventRecord": runtime.cudaEventRecord,
        "cudaStreamWaitEvent": runtime.cudaStreamWaitEvent,
        "cudaEventQuery": runtime.cudaEventQuery,
    }


def _raw_driver_ns(ptr: int, ev: Any) -> Namespace:
    return {
        "h": driver.CUstream(ptr),
        "ev": driver.CUevent(int(ev)),
        "ptr": ptr,
        "CUstream": driver.CUstream,
        "cuStreamQuery": driver.cuStreamQuery,
        "cuStreamSynchronize": driver.cuStreamSynchronize,
        "cuEventRecord": driver.cuEventRecord,
        "cuStreamWaitEvent": driver.cuStreamWaitEvent,
        "cuEventQuery": driver.cuEventQuery,
    }


# Peers are imported only here: any of them may be missing or broken.


def _extstream_ns(ptr: int) -> tuple[Namespace, str]:
    namespace = {
        "s": ExternalStream(ptr, 0),
        "ev": Event(),
        "ptr": ptr,
        "ExternalStream": ExternalStream,
        "get_current_stream": get_current_stream,
    }
    return namespace, __version__


def _cupy_ns(ptr: int) -> tuple[Namespace, str]:
    cupy = importlib.import_module("cupy")
    namespace = {
        "s": cupy.cuda.ExternalStream(ptr, 0),
        "ev": cupy.cuda.Event(disable_timing=True),
        "ptr": ptr,
        "ExternalStream": cupy.cuda.ExternalStream,
        "get_current_stream": cupy.cuda.get_current_stream,
    }
    return namespace, str(cupy.__version__)


def _torch_ns(ptr: int) -> tuple[Namespace, str]:
    torch = importlib.import_module("torch")
    namespace = {
        "s": torch.cuda.ExternalStream(ptr, device=0),
        "ev": torch.cuda.Event(),
        "ptr": ptr,
        "ExternalStream": torch.cuda.ExternalStream,
        "stream": torch.cuda.stream,
        "current_stream": torch.cuda.current_stream,
    }
    return namespace, f"{torch.__version__} (CUDA {torch.version.cuda})"


def _cuda_core_ns(ptr: int) -> tuple[Namespace, str]:
    core = importlib.import_module("cuda.core")
    device = core.Device(0)
    device.set_current()
    namespace = {
        "s": core.Stream.from_handle(ptr),
        "ev": device.create_event(),
        "ptr": ptr,
        "Stream": core.Stream,
    }
    return namespace, str(core.__version__)


PEERS: Final[dict[str, Callable[[int], tuple[Namespace, str]]]] = {
    EXT: _extstream_ns,
    CUPY: _cupy_ns,
    TORCH: _torch_ns,
    CORE: _cuda_core_ns,
}


# --- host callbacks, in microseconds ---

HELD, NOTIFY, CUPY_HOST_FUNC = "extstream held", "extstream notify", "CuPy"
CALLBACK_WAYS: Final = (HELD, NOTIFY, CUPY_HOST_FUNC)
WAKE_UPS: Final = 300  # wake-ups timed per way and batch
AWAITS: Final = 2000  # awaits of an idle stream timed per batch
Launch = Callable[[Callable[[Any], object], object], None]


@dataclass(frozen=True)
class CallbackRow:
    """One callback measurement: µs per way (median, min, max of the batches)."""

    name: str
    stats: dict[str, Stats]
    failed: dict[str, str]

    def ratio(self, way: str) -> float | None:
        """*way*'s median over CuPy's; None if either is missing."""
        if way not in self.stats or CUPY_HOST_FUNC not in self.stats:
            return None
        return self.stats[way].median / self.stats[CUPY_HOST_FUNC].median


def _callback_launchers(stream: ExternalStream, cupy_stream: Any) -> dict[str, Launch]:
    def notify(callback: Callable[[Any], object], arg: object) -> None:
        stream.launch_host_func(callback, arg, hold_stream=False)

    launchers: dict[str, Launch] = {HELD: stream.launch_host_func, NOTIFY: notify}
    if cupy_stream is not None:
        launchers[CUPY_HOST_FUNC] = cupy_stream.launch_host_func
    return launchers


def burst_us(launch: Launch, n: int) -> float:
    """µs per callback: *n* launched back to back, from the first launch until the last ran."""
    finished = threading.Event()
    last = n - 1

    def callback(i: object) -> None:
        if i == last:
            finished.set()

    started = time.perf_counter()
    for i in range(n):
        launch(callback, i)
    if not finished.wait(_CALLBACK_PATIENCE):
        raise RuntimeError(f"{n} callbacks did not all run within {_CALLBACK_PATIENCE} s")
    return (time.perf_counter() - started) / n * 1e6


def wake_up_us(launch: Launch, wait_idle: Callable[[], None], repeats: int) -> float:
    """Median µs from one launch on an idle stream until its callback starts."""
    samples = []
    ran = threading.Event()
    stamp = [0.0]

    def callback(_: object) -> None:
        stamp[0] = time.perf_counter()
        ran.set()

    for _ in range(repeats):
        wait_idle()
        ran.clear()
        started = time.perf_counter()
        launch(callback, None)
        if not ran.wait(_CALLBACK_PATIENCE):
            raise RuntimeError(f"a callback did not run within {_CALLBACK_PATIENCE} s")
        samples.append((stamp[0] - started) * 1e6)
    return statistics.median(samples)


def await_idle_us(stream: ExternalStream, repeats: int) -> float:
    """µs per ``await stream`` on an idle stream (one event loop for all of them)."""

    async def awaits() -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            await stream
        return (time.perf_counter() - started) / repeats * 1e6

    return asyncio.run(awaits())


_CALLBACK_PATIENCE: Final = 120.0  # seconds: a GPU that never calls back fails the run


def measure_callbacks(
    stream: ExternalStream, cupy_stream: Any, n: int, batches: int
) -> list[CallbackRow]:
    """The burst, wake-up and await rows; each batch interleaves the ways."""
    launchers = _callback_launchers(stream, cupy_stream)
    missing = {} if cupy_stream is not None else {CUPY_HOST_FUNC: "peer unavailable"}
    measurements: dict[str, Callable[[Launch], float]] = {
        f"burst of {n} (per callback)": lambda launch: burst_us(launch, n),
        "wake-up (idle stream)": lambda launch: wake_up_us(launch, stream.synchronize, WAKE_UPS),
    }
    rows = []
    for name, measurement in measurements.items():
        samples: dict[str, list[float]] = {way: [] for way in launchers}
        for launch in launchers.values():  # warm-up: threads started, code paths taken
            measurement(launch)
            stream.synchronize()
        for _ in range(batches):
            for way, launch in launchers.items():
                samples[way].append(measurement(launch))
                stream.synchronize()
        stats = {way: Stats.of(v) for way, v in samples.items()}
        rows.append(CallbackRow(name, stats, dict(missing)))
    return rows


def measure_await(stream: ExternalStream, batches: int) -> Stats:
    """µs per ``await stream`` on an idle stream (CuPy's streams cannot be awaited)."""
    samples = [await_idle_us(stream, AWAITS) for _ in range(batches)]
    return Stats.of(samples)


# --- measurement ---


def _check_raw(result: Any, stmt: str) -> None:
    """Fail on a raw call whose first return value is a CUDA error code."""
    if isinstance(result, tuple) and result[0] != 0:  # cudaSuccess / CUDA_SUCCESS
        raise RuntimeError(f"{stmt} returned {result[0]!r}")


def measure(
    op: Op, namespaces: dict[str, Namespace], n: int, batches: int, reset: Callable[[], None]
) -> Row:
    """Time every available cell of *op*, its columns' batches interleaved."""
    failed = dict(op.unsupported)
    timers: dict[str, timeit.Timer] = {}
    for col, stmt in op.stmts.items():
        if col not in namespaces:
            failed[col] = "peer unavailable"
            continue
        namespace = namespaces[col]
        timer = timeit.Timer(stmt, timer=time.perf_counter_ns, globals=namespace)
        try:
            if col in RAW:
                _check_raw(eval(stmt, namespace), stmt)  # noqa: S307 - our own statements
            timer.timeit(n)  # warm-up batch, and proof the API exists
        except Exception as exc:  # a missing attribute, a changed signature ...
            failed[col] = f"{type(exc).__name__}: {exc}"
        else:
            timers[col] = timer
        reset()
    samples: dict[str, list[float]] = {col: [] for col in timers}
    for _ in range(batches):
        for col, timer in timers.items():
            samples[col].append(timer.timeit(n) / n)
            reset()
    stats = {col: Stats.of(v) for col, v in samples.items()}
    return Row(op, stats, failed)


@contextlib.contextmanager
def _as_if_several_devices() -> Iterator[None]:
    """Make extstream take its several-device path on a one-GPU machine: the device
    count says 2, so the current device is asked from CUDA on every call."""
    saved = _device._count, _stream._only_device_var, _stream._several_devices
    _device._count, _stream._only_device_var, _stream._several_devices = 2, None, True
    try:
        yield
    finally:
        _device._count, _stream._only_device_var, _stream._several_devices = saved


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_info() -> dict[str, str]:
    driver_version, runtime_version = versions()
    return {
        "GPU": device_name(0),
        "devices": str(call(runtime.cudaGetDeviceCount)),
        "CPU": _cpu_model(),
        "driver": driver_version,
        "cuda runtime (bindings)": runtime_version,
        "cuda-bindings": _cuda.BINDINGS_VERSION,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def no_gpu_reason() -> str | None:
    """Why no real CUDA device can be measured, or None when one can."""
    if BACKEND != "cuda":
        return f"EXTSTREAM_BACKEND={BACKEND}: the simulator has no CUDA calls to time"
    try:
        err, count = runtime.cudaGetDeviceCount()
    except Exception as exc:  # e.g. the driver library cannot be loaded
        return f"{type(exc).__name__}: {exc}"
    if err != runtime.cudaError_t.cudaSuccess:
        return f"{_cuda.error_name(int(err))}: {_cuda.error_string(int(err))}"
    return None if count else "the device count is 0"


def run(n: int, batches: int, progress: Callable[[str], None] = print) -> Result:
    """Measure every operation; *progress* gets the header and one line per cell."""
    info = _machine_info()
    h = call(runtime.cudaStreamCreateWithFlags, runtime.cudaStreamNonBlocking)
    ev = call(runtime.cudaEventCreateWithFlags, runtime.cudaEventDisableTiming)
    ptr = int(h)

    def reset() -> None:
        call(runtime.cudaStreamSynchronize, h)

    rows: list[Row] = []
    callbacks: list[CallbackRow] = []
    await_idle: Stats | None = None
    try:
        with warnings.catch_warnings():
            # CuPy 14 deprecates ExternalStream and warns on every construction.
            warnings.filterwarnings(
                "ignore", message="ExternalStream is deprecated", category=DeprecationWarning
            )
            namespaces = {RT: _raw_runtime_ns(ptr, h, ev), DRV: _raw_driver_ns(ptr, ev)}
            for col, set_up in PEERS.items():
                try:
                    namespaces[col], info[col] = set_up(ptr)
                except Exception as exc:  # a missing or broken peer: its column is n/a
                    info[col] = f"unavailable ({type(exc).__name__}: {exc})"
            reset()
            loop = timeit.Timer("pass", timer=time.perf_counter_ns)
            loop_ns = statistics.median(loop.repeat(batches, n)) / n
            for key, value in info.items():
                progress(f"{key + ':':26}{value}")
            progress(f"{'timing loop overhead:':26}{loop_ns:.1f} ns/call (included below)")
            progress(f"{'batches x calls:':26}{batches} x {n} (+1 warm-up batch)\n")
            for op in OPS:
                with _as_if_several_devices() if op.several_devices else contextlib.nullcontext():
                    row = measure(op, namespaces, n, batches, reset)
                rows.append(row)
                for col in COLUMNS:
                    if col in row.stats:
                        st = row.stats[col]
                        progress(
                            f"{op.name:24}{col:12}{st.median:9.1f} ns"
                            f"  (min {st.min:.1f}, max {st.max:.1f})"
                        )
                    elif col in row.failed:
                        progress(f"{op.name:24}{col:12}      n/a  ({row.failed[col]})")
            if EXT in namespaces:
                stream, cupy_stream = namespaces[EXT]["s"], namespaces.get(CUPY, {}).get("s")
                callbacks = measure_callbacks(stream, cupy_stream, n, batches)
                for callback_row in callbacks:
                    for way, st in callback_row.stats.items():
                        progress(
                            f"{callback_row.name:30}{way:18}{st.median:8.2f} us"
                            f"  (min {st.min:.2f}, max {st.max:.2f})"
                        )
                await_idle = measure_await(stream, batches)
                progress(f"{'await idle stream':30}{EXT:18}{await_idle.median:8.2f} us")
    finally:
        call(runtime.cudaEventDestroy, ev)
        call(runtime.cudaStreamDestroy, h)
    return Result(info, n, batches, loop_ns, rows, callbacks, await_idle)


# --- reporting ---


def table(rows: list[Row]) -> str:
    """The summary table: median ns per cell and extstream's ratio."""
    widths = (24, *(max(11, len(c)) for c in COLUMNS), 7)

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(["operation", *COLUMNS, "ratio"])]
    lines.append("-" * len(lines[0]))
    for row in rows:
        cells = [row.op.name]
        for col in COLUMNS:
            if col in row.stats:
                cells.append(f"{row.stats[col].median:.1f}")
            else:
                cells.append("n/a" if col in row.failed else "-")
        ratio = row.ratio
        cells.append("-" if ratio is None else f"{ratio:.2f}x")
        lines.append(line(cells))
    return "\n".join(lines)


def callback_table(result: Result) -> str:
    """The host-callback table: median µs per way and each extstream way over CuPy."""
    header = f"{'host callbacks (us)':30}" + "".join(f"{way:>18}" for way in CALLBACK_WAYS)
    lines = [header + f"{'held/CuPy':>11}{'notify/CuPy':>13}", "-" * (len(header) + 24)]
    for row in result.callbacks:
        cells = [
            f"{row.stats[way].median:.2f}" if way in row.stats else "n/a" for way in CALLBACK_WAYS
        ]
        ratios = [row.ratio(way) for way in (HELD, NOTIFY)]
        lines.append(
            f"{row.name:30}"
            + "".join(f"{cell:>18}" for cell in cells)
            + "".join(
                f"{'-' if r is None else f'{r:.2f}x':>{w}}"
                for r, w in zip(ratios, (11, 13), strict=True)
            )
        )
    if result.await_idle_us is not None:
        lines.append(f"{'await idle stream':30}{result.await_idle_us.median:>18.2f}")
    return "\n".join(lines)


def to_json(result: Result) -> dict[str, Any]:
    """Every cell's statement and median/min/max ns, the ratios and the machine."""
    return {
        "machine": result.machine,
        "n": result.n,
        "batches": result.batches,
        "loop_overhead_ns": result.loop_overhead_ns,
        "ops": {
            row.op.name: {
                "cells": {
                    col: (
                        {
                            "stmt": row.op.stmts[col],
                            "median_ns": row.stats[col].median,
                            "min_ns": row.stats[col].min,
                            "max_ns": row.stats[col].max,
                        }
                        if col in row.stats
                        else {"na": row.failed[col]}
                    )
                    for col in COLUMNS
                    if col in row.stats or col in row.failed
                },
                "ratio_vs": list(row.op.ratio_vs),
                "ratio": row.ratio,
            }
            for row in result.rows
        },
        "callbacks_us": {
            row.name: {
                "cells": {
                    way: (
                        dataclasses.asdict(row.stats[way])
                        if way in row.stats
                        else {"na": row.failed.get(way, "not measured")}
                    )
                    for way in CALLBACK_WAYS
                },
                "vs_cupy": {way: row.ratio(way) for way in (HELD, NOTIFY)},
            }
            for row in result.callbacks
        },
        "await_idle_us": None
        if result.await_idle_us is None
        else dataclasses.asdict(result.await_idle_us),
    }


def plot(result: Result, path: str) -> None:
    """A bar chart PNG: ns per call per operation, one bar per implementation, log scale."""
    import matplotlib  # noqa: PLC0415 - an optional extra, needed only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [row for row in result.rows if EXT in row.stats and len(row.stats) > 1]
    columns = [col for col in COLUMNS if any(col in row.stats for row in rows)]
    width = 0.8 / len(columns)
    figure, axes = plt.subplots(figsize=(11, 4.8))
    for i, col in enumerate(columns):
        offset = (i - (len(columns) - 1) / 2) * width
        cells = [(x, row.stats[col].median) for x, row in enumerate(rows) if col in row.stats]
        axes.bar([x + offset for x, _ in cells], [ns for _, ns in cells], width, label=col)
    axes.set_yscale("log")
    axes.set_ylabel("ns per call (log scale; lower is better)")
    axes.set_xticks(range(len(rows)), [row.op.name for row in rows], rotation=20, ha="right")
    axes.set_title(
        f"extstream {__version__}, {result.machine.get('GPU', '?')}: host cost per call "
        f"(median of {result.batches} x {result.n} calls)",
        fontsize="medium",
    )
    axes.legend(ncols=3, fontsize="small")
    axes.grid(axis="y", which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench subcommand's options."""
    parser.add_argument("--n", type=_positive, default=20000, help="calls per batch")
    parser.add_argument(
        "--batches", type=_positive, default=7, help="timed batches per cell (at least 5)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON")
    parser.add_argument(
        "--plot", metavar="FILE", help="also draw a bar chart PNG (needs extstream[plot])"
    )


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the benchmark for parsed *args*; the exit status (1: nothing could be measured)."""
    if args.batches < 5:
        parser.error(f"--batches must be at least 5 for a median, not {args.batches}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'extstream[plot]'")
    reason = no_gpu_reason()
    if reason is not None:
        print(f"python -m extstream bench needs a CUDA GPU: {reason}")
        return 1
    result = run(args.n, args.batches)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(to_json(result), out, indent=2)
    if args.plot:
        plot(result, args.plot)
    print(f"\n{LEGEND}\n\n{table(result.rows)}\n\n{callback_table(result)}")
    if args.plot:
        print(f"\nchart: {args.plot}")
    return 0
