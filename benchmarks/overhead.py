#!/usr/bin/env python3
"""Per-call host overhead of extstream next to raw cuda.bindings and its peers.

What it measures: nanoseconds per call of the stream operations extstream
wraps -- ``done`` (stream query), ``synchronize``, ``record(ev)``,
``wait_event(ev)``, ``with s: pass``, ``get_current_stream()`` and
construction -- for extstream, raw ``cuda.bindings`` runtime and driver calls
on prebuilt handles, CuPy, PyTorch and cuda.core.  Everything runs in one
process against ONE idle non-blocking stream created with
``cudaStreamCreateWithFlags``; every implementation wraps its integer handle
(with device 0 unless a row says otherwise), so only the wrapper cost
differs.  Callables are bound to plain names beforehand, so attribute lookups
such as ``cupy.cuda.`` are not part of the numbers.

How: each cell is a ``timeit`` loop with the statement inlined (timer
``time.perf_counter_ns``, GC off while a batch runs).  After one warm-up
batch, ``--batches`` batches of ``--n`` calls are timed, the batches of one
operation interleaved across implementations so that drift (clock boost,
other load) hits them alike; the stream is synchronized between batches,
outside the timed region.  Raw calls are checked once for a CUDA error code
before they are timed, since a failing call would otherwise just look fast.

Why medians: batch times are skewed -- interrupts, page faults or a
descheduled thread add rare, large, one-sided delays that drag a mean, while
the minimum rewards one lucky batch.  The median is the typical cost; min and
max across batches show the spread.  All numbers include the cost of the bare
timing loop, printed in the header.

Run: PYTHONPATH=src python3 benchmarks/overhead.py [--json FILE] [--batches 7] [--n 20000]
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import json
import platform
import statistics
import sys
import time
import timeit
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cuda.bindings
from cuda.bindings import driver, runtime

EXT, RT, DRV, CUPY, TORCH, CORE = (
    "extstream",
    "raw runtime",
    "raw driver",
    "CuPy",
    "torch",
    "cuda.core",
)
COLUMNS = (EXT, RT, DRV, CUPY, TORCH, CORE)
RAW = (RT, DRV)
WITH = "with s:\n    pass"

Namespace = dict[str, Any]


@dataclass(frozen=True)
class Op:
    """One table row: the statement each column times, in its own namespace."""

    name: str
    stmts: dict[str, str]
    ratio_vs: tuple[str, ...] = ()  # extstream / fastest of these columns
    unsupported: dict[str, str] = field(default_factory=dict)  # column -> why


def _get_current_stream(arg: str) -> Op:
    return Op(
        f"get_current_stream({arg})",
        {
            EXT: f"get_current_stream({arg})",
            RT: "var.get()",
            CUPY: f"get_current_stream({arg})",
            TORCH: f"current_stream({arg})",
        },
        (CUPY,),
        {CORE: "cuda.core has no current stream"},
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


# Order matters only in that record(ev) runs before wait_event(ev), so the
# events waited on have been recorded (waiting on a never-recorded one is a
# legal no-op, which would flatter nobody but is less representative).
OPS = (
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
        "with s: pass",
        {EXT: WITH, CUPY: WITH, TORCH: "with stream(s):\n    pass"},
        (CUPY,),
        {CORE: "cuda.core Stream is not a context manager"},
    ),
    _get_current_stream(""),
    _get_current_stream("0"),
    _construct("ptr, 0", "ptr, device=0"),
    _construct("ptr", "ptr"),
)

LEGEND = """\
ns per call, median of the batches ('n/a': implementation lacks it, '-': not compared).
raw runtime/driver: cuda.bindings calls on a prebuilt cudaStream_t / CUstream (and event);
  'done [int handle]' passes the plain int instead; get_current_stream rows show
  contextvars.ContextVar.get() as a floor; construct rows show cudaStream_t(ptr) / CUstream(ptr).
construct(ptr) leaves the device unknown (extstream/CuPy -1, torch None).
ratio = extstream / fastest raw runtime|driver (done .. wait_event),
        / CuPy (with, get_current_stream), / cudaStream_t(ptr) (construct)."""


@dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float


Row = tuple[Op, dict[str, Stats], dict[str, str]]  # op, measured cells, n/a reasons


def check(result: tuple[Any, ...]) -> Any:
    """Return the payload of a cuda.bindings call, raising on a CUDA error."""
    err, *payload = result
    if err != runtime.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {err!r}")
    return payload[0] if payload else None


# --- one namespace per column; a setup that raises marks the column n/a -----


def raw_runtime_ns(ptr: int, h: Any, ev: Any) -> Namespace:
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
    }


def raw_driver_ns(ptr: int, ev: Any) -> Namespace:
    return {
        "h": driver.CUstream(ptr),
        "ev": driver.CUevent(int(ev)),
        "ptr": ptr,
        "CUstream": driver.CUstream,
        "cuStreamQuery": driver.cuStreamQuery,
        "cuStreamSynchronize": driver.cuStreamSynchronize,
        "cuEventRecord": driver.cuEventRecord,
        "cuStreamWaitEvent": driver.cuStreamWaitEvent,
    }


# Peers are imported here, not at the top: any of them may be missing or broken.


def extstream_ns(ptr: int) -> tuple[Namespace, str]:
    extstream = importlib.import_module("extstream")
    ns = {
        "s": extstream.ExternalStream(ptr, 0),
        "ev": extstream.Event(),
        "ptr": ptr,
        "ExternalStream": extstream.ExternalStream,
        "get_current_stream": extstream.get_current_stream,
    }
    return ns, getattr(extstream, "__version__", "unknown version")


def cupy_ns(ptr: int) -> tuple[Namespace, str]:
    cupy = importlib.import_module("cupy")
    ns = {
        "s": cupy.cuda.ExternalStream(ptr, 0),
        "ev": cupy.cuda.Event(disable_timing=True),
        "ptr": ptr,
        "ExternalStream": cupy.cuda.ExternalStream,
        "get_current_stream": cupy.cuda.get_current_stream,
    }
    return ns, cupy.__version__


def torch_ns(ptr: int) -> tuple[Namespace, str]:
    torch = importlib.import_module("torch")
    ns = {
        "s": torch.cuda.ExternalStream(ptr, device=0),
        "ev": torch.cuda.Event(),
        "ptr": ptr,
        "ExternalStream": torch.cuda.ExternalStream,
        "stream": torch.cuda.stream,
        "current_stream": torch.cuda.current_stream,
    }
    return ns, f"{torch.__version__} (CUDA {torch.version.cuda})"


def cuda_core_ns(ptr: int) -> tuple[Namespace, str]:
    core = importlib.import_module("cuda.core")
    device = core.Device(0)
    device.set_current()
    ns = {
        "s": core.Stream.from_handle(ptr),
        "ev": device.create_event(),
        "ptr": ptr,
        "Stream": core.Stream,
    }
    return ns, core.__version__


PEERS: dict[str, Callable[[int], tuple[Namespace, str]]] = {
    EXT: extstream_ns,
    CUPY: cupy_ns,
    TORCH: torch_ns,
    CORE: cuda_core_ns,
}


# --- measurement -------------------------------------------------------------


def measure(
    op: Op,
    namespaces: dict[str, Namespace],
    n: int,
    batches: int,
    reset: Callable[[], None],
) -> Row:
    """Time every available cell of ``op``."""
    failed = dict(op.unsupported)
    timers: dict[str, timeit.Timer] = {}
    for col, stmt in op.stmts.items():
        if col not in namespaces:
            failed[col] = "peer unavailable"
            continue
        ns = namespaces[col]
        timer = timeit.Timer(stmt, timer=time.perf_counter_ns, globals=ns)
        try:
            if col in RAW:
                check_raw(eval(stmt, ns), stmt)
            timer.timeit(n)  # warm-up batch, and proof the API exists
        except Exception as exc:  # missing attribute, wrong signature, ...
            failed[col] = f"{type(exc).__name__}: {exc}"
        else:
            timers[col] = timer
        reset()

    samples: dict[str, list[float]] = {col: [] for col in timers}
    for _ in range(batches):
        for col, timer in timers.items():
            samples[col].append(timer.timeit(n) / n)
            reset()
    stats = {col: Stats(statistics.median(v), min(v), max(v)) for col, v in samples.items()}
    return op, stats, failed


def check_raw(result: Any, stmt: str) -> None:
    """Fail on a raw call whose first return value is a CUDA error code."""
    if isinstance(result, tuple) and result[0] != 0:  # cudaSuccess/CUDA_SUCCESS
        raise RuntimeError(f"{stmt} returned {result[0]!r}")


def ratio(op: Op, stats: dict[str, Stats]) -> float | None:
    refs = [stats[col].median for col in op.ratio_vs if col in stats]
    if EXT not in stats or not refs:
        return None
    return stats[EXT].median / min(refs)


# --- reporting ---------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def machine_info() -> dict[str, str]:
    prop = check(runtime.cudaGetDeviceProperties(0))
    return {
        "GPU": prop.name.decode(errors="replace").rstrip("\0"),
        "CPU": cpu_model(),
        "driver": cuda_version(check(runtime.cudaDriverGetVersion())),
        "cuda runtime (bindings)": cuda_version(check(runtime.cudaRuntimeGetVersion())),
        "cuda-bindings": cuda.bindings.__version__,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def table(rows: list[Row]) -> str:
    widths = (24, *(max(11, len(c)) for c in COLUMNS), 7)

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(["operation", *COLUMNS, "ratio"])]
    lines.append("-" * len(lines[0]))
    for op, stats, failed in rows:
        cells = [op.name]
        for col in COLUMNS:
            if col in stats:
                cells.append(f"{stats[col].median:.1f}")
            else:
                cells.append("n/a" if col in failed else "-")
        r = ratio(op, stats)
        cells.append("-" if r is None else f"{r:.2f}x")
        lines.append(line(cells))
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-call overhead of extstream vs raw cuda.bindings and peers."
    )
    parser.add_argument("--json", metavar="FILE", help="also write all numbers as JSON")
    parser.add_argument("--batches", type=int, default=7, help="timed batches per cell (>= 5)")
    parser.add_argument("--n", type=int, default=20000, help="calls per batch")
    args = parser.parse_args()
    if args.batches < 5:
        parser.error("--batches must be at least 5")
    if args.n < 1:
        parser.error("--n must be positive")
    return args


def no_gpu_reason() -> str | None:
    """Why no CUDA device can be used, or None when there is one."""
    try:
        err, count = runtime.cudaGetDeviceCount()
    except Exception as exc:  # e.g. the driver library cannot be loaded
        return f"{type(exc).__name__}: {exc}"
    if err != runtime.cudaError_t.cudaSuccess:
        return repr(err)
    return None if count else "device count is 0"


def main() -> int:
    args = parse_args()
    reason = no_gpu_reason()
    if reason is not None:
        print(f"No CUDA device available ({reason}); nothing to measure.")
        return 0

    info = machine_info()
    h = check(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking))
    ev = check(runtime.cudaEventCreateWithFlags(runtime.cudaEventDisableTiming))
    ptr = int(h)

    def reset() -> None:
        check(runtime.cudaStreamSynchronize(h))

    rows: list[Row] = []
    with warnings.catch_warnings():
        # CuPy 14 deprecates ExternalStream (in favour of Stream.from_external)
        # and warns on every construction.
        warnings.filterwarnings(
            "ignore", message="ExternalStream is deprecated", category=DeprecationWarning
        )
        namespaces = {RT: raw_runtime_ns(ptr, h, ev), DRV: raw_driver_ns(ptr, ev)}
        for col, setup in PEERS.items():
            try:
                namespaces[col], info[col] = setup(ptr)
            except Exception as exc:  # missing or broken peer: column is n/a
                info[col] = f"unavailable ({type(exc).__name__}: {exc})"
        reset()

        loop_ns = (
            statistics.median(
                timeit.Timer("pass", timer=time.perf_counter_ns).repeat(args.batches, args.n)
            )
            / args.n
        )
        for key, value in info.items():
            print(f"{key + ':':26}{value}")
        print(f"{'timing loop overhead:':26}{loop_ns:.1f} ns/call (included below)")
        print(f"{'batches x calls:':26}{args.batches} x {args.n} (+1 warm-up batch)")
        print()

        for op in OPS:
            _, stats, failed = row = measure(op, namespaces, args.n, args.batches, reset)
            rows.append(row)
            for col in COLUMNS:
                if col in stats:
                    st = stats[col]
                    print(
                        f"{op.name:24}{col:12}{st.median:9.1f} ns"
                        f"  (min {st.min:.1f}, max {st.max:.1f})"
                    )
                elif col in failed:
                    print(f"{op.name:24}{col:12}      n/a  ({failed[col]})")

    check(runtime.cudaEventDestroy(ev))
    check(runtime.cudaStreamDestroy(h))

    if args.json:
        result = {
            "machine": info,
            "n": args.n,
            "batches": args.batches,
            "loop_overhead_ns": loop_ns,
            "ops": {
                op.name: {
                    "cells": {
                        col: (
                            {
                                "stmt": op.stmts[col],
                                "median_ns": stats[col].median,
                                "min_ns": stats[col].min,
                                "max_ns": stats[col].max,
                            }
                            if col in stats
                            else {"na": failed[col]}
                        )
                        for col in COLUMNS
                        if col in stats or col in failed
                    },
                    "ratio_vs": list(op.ratio_vs),
                    "ratio": ratio(op, stats),
                }
                for op, stats, failed in rows
            },
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)

    print()
    print(LEGEND)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
