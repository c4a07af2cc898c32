"""``python -m extstream``: a self-check that shows what extstream sees and does.

Prints the versions, the devices and the frameworks that can hand over streams,
then runs a few stream operations (wrapping each installed framework's stream
too) and a PASS/FAIL line for each; ``--json`` prints one JSON object instead.
Without a GPU it says so and runs the same checks on the CPU simulator. A
failed check exits 1.

``python -m extstream bench``: the host cost per call of extstream beside raw
cuda-python and the installed peers, as a table of ratios (``--json``,
``--plot FILE`` for a bar chart). Needs a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from . import (
    Event,
    ExternalStream,
    Stream,
    __version__,
    _bench,
    _device,
    as_stream,
    get_current_stream,
)
from ._backend import NAME as BACKEND
from ._backend import cuda as _cuda
from ._errors import CudaError
from ._interop import without_cuda


def _check_wrap_infers_device() -> str:
    owned = Stream()
    wrapped = ExternalStream(owned.ptr)
    assert wrapped == owned and wrapped.device_id == owned.device_id
    owned.close()
    return f"handle {wrapped.ptr:#x} -> device {wrapped.device_id}"


def _check_callbacks_in_order() -> str:
    stream = Stream()
    seen: list[int] = []
    for i in range(100):
        stream.launch_host_func(seen.append, i)
    stream.synchronize()
    stream.close()
    assert seen == list(range(100)), seen
    return "100 host callbacks ran in stream order"


def _check_event_ordering() -> str:
    producer, consumer = Stream(), Stream()
    start, end = Event(timing=True), Event(timing=True)
    start.record(producer)
    end.record(producer)
    consumer.wait_event(end)
    consumer.synchronize()
    assert end.done
    elapsed = start.elapsed_time(end)
    for owned in (producer, consumer, start, end):
        owned.close()
    return f"wait_event ordered two streams; event timing {elapsed * 1000:.1f} us"


def _check_current_stream_per_thread() -> str:
    stream = Stream()
    seen: list[ExternalStream] = []
    with stream:
        worker = threading.Thread(target=lambda: seen.append(get_current_stream()))
        worker.start()
        worker.join()
        inside = get_current_stream()
    assert inside == stream, inside
    assert seen[0].ptr == get_current_stream().ptr != stream.ptr, seen
    stream.close()
    return "with-block current stream stays in its thread"


def _check_current_stream_per_task() -> str:
    first, second = Stream(), Stream()

    async def task(stream: Stream) -> bool:
        with stream:
            await asyncio.sleep(0)
            return get_current_stream() is stream

    async def both() -> list[bool]:
        return list(await asyncio.gather(task(first), task(second)))

    seen = asyncio.run(both())
    first.close()
    second.close()
    assert seen == [True, True], seen
    return "two asyncio tasks each see their own with-block stream"


def _framework_checks() -> list[tuple[str, Callable[[], str]]]:
    """A wrap check for each installed framework that can hand over a stream."""
    makers: dict[str, Callable[[Any], object]] = {
        "torch": lambda torch: torch.cuda.Stream(),
        "cupy": lambda cupy: cupy.cuda.Stream(non_blocking=True),
        "numba.cuda": lambda cuda: cuda.stream(),
        "cuda.core": lambda core: core.Device(0).create_stream(),
    }
    checks: list[tuple[str, Callable[[], str]]] = []
    for name, make in makers.items():
        if not _has_cuda_streams(name):
            continue

        def check(name: str = name, make: Callable[[Any], object] = make) -> str:
            native = make(importlib.import_module(name))
            wrapped = as_stream(native)
            wrapped.synchronize()
            return f"{type(native).__module__}.{type(native).__name__} -> {wrapped!r}"

        checks.append((f"wrap a {name} stream", check))
    return checks


_CHECKS: Final[list[tuple[str, Callable[[], str]]]] = [
    ("wrap a foreign handle", _check_wrap_infers_device),
    ("host callbacks", _check_callbacks_in_order),
    ("events", _check_event_ordering),
    ("current stream", _check_current_stream_per_thread),
    ("current stream (asyncio)", _check_current_stream_per_task),
]


def _run_checks(checks: list[tuple[str, Callable[[], str]]]) -> list[dict[str, Any]]:
    results = []
    for title, check in checks:
        started = time.perf_counter()
        try:
            detail, passed = check(), True
        except Exception as exc:
            detail, passed = f"{type(exc).__name__}: {exc}", False
        ms = (time.perf_counter() - started) * 1000
        results.append({"check": title, "passed": passed, "ms": round(ms, 3), "detail": detail})
    return results


def _on_the_simulator(argv: list[str], reason: str) -> int:
    """Run the same self-check again, in a child process on the simulator."""
    env = {**os.environ, "EXTSTREAM_BACKEND": "sim", _NO_GPU_REASON: reason}
    env.pop("CUDA_VISIBLE_DEVICES", None)  # it hid the GPUs, not the simulated devices
    return subprocess.run(
        [sys.executable, "-m", "extstream", *argv], env=env, check=False
    ).returncode


_NO_GPU_REASON: Final = "EXTSTREAM_SELF_CHECK_NO_GPU"


def main(argv: list[str] | None = None) -> int:
    """Run the self-check; returns the exit status (1 when a check failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m extstream",
        description="Self-check: versions, devices, frameworks, and a PASS/FAIL line per check.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    commands = parser.add_subparsers(dest="command", metavar="{bench}")
    bench_parser = commands.add_parser(
        "bench",
        help="host cost per call beside raw cuda-python and the installed peers",
        description="Host cost per call of extstream beside raw cuda-python, CuPy, torch "
        "and cuda.core (whichever are installed), in one process; needs a GPU.",
    )
    _bench.add_arguments(bench_parser)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench.main(args, bench_parser)
    report: dict[str, Any] = {
        "extstream": __version__,
        "backend": BACKEND,
        "cuda_bindings": _cuda.BINDINGS_VERSION,
        "python": platform.python_version(),
        "no_gpu": os.environ.get(_NO_GPU_REASON),
    }
    try:
        count = _device.device_count()
    except CudaError as exc:
        if not args.json:
            print(f"extstream {__version__}: no CUDA GPU here ({exc})")
        if BACKEND == "sim":  # the simulator sees no device either: nothing to fall back to
            return 1
        if not args.json:
            print(
                "Running the same checks on extstream's CPU simulator instead "
                "(EXTSTREAM_BACKEND=sim does so for your own code):\n"
            )
        return _on_the_simulator(sys.argv[1:] if argv is None else argv, str(exc))
    # The simulator has no CUDA versions: it reports none rather than invented ones.
    report["driver"], report["runtime"] = _device.versions() if BACKEND == "cuda" else (None, None)
    report["devices"] = [_device.device_name(device) for device in range(count)]
    report["frameworks"] = [
        name for name in ("torch", "cupy", "numba", "cuda.core") if _has_cuda_streams(name)
    ]
    checks = list(_CHECKS)
    if BACKEND == "cuda":  # the frameworks' streams live on the real GPU only
        checks += _framework_checks()
    report["checks"] = _run_checks(checks)
    report["direct_driver_calls"] = bool(_cuda.direct_driver_calls)
    failures = sum(not result["passed"] for result in report["checks"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, failures)
    return 1 if failures else 0


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _has_cuda_streams(name: str) -> bool:
    """Whether framework *name* is installed with CUDA: a CPU-only torch is not (its
    torch.cuda calls raise), so wrapping its stream is no check of extstream."""
    if not _installed(name):
        return False
    if name in ("torch", "cupy"):  # the builds that may lack CUDA (CPU, ROCm)
        return without_cuda(name, importlib.import_module(name)) is None
    return True


def _print_report(report: dict[str, Any], failures: int) -> None:
    print(
        f"extstream {report['extstream']} ({report['backend']} backend), "
        f"cuda-bindings {report['cuda_bindings']}, Python {report['python']}"
    )
    if report["no_gpu"]:
        print(f"(no CUDA GPU: {report['no_gpu']})")
    if report["driver"] is None:
        print("CUDA driver and runtime: none (simulated devices)")
    else:
        print(f"CUDA driver {report['driver']}, runtime {report['runtime']}")
    print(f"{len(report['devices'])} device(s):")
    for index, name in enumerate(report["devices"]):
        print(f"  cuda:{index}  {name}")
    print(f"frameworks that can hand over streams: {', '.join(report['frameworks']) or 'none'}")
    for result in report["checks"]:
        verdict = "PASS" if result["passed"] else "FAIL"
        print(f"{verdict}  {result['check']:<26} {result['ms']:8.2f} ms  {result['detail']}")
    if report["backend"] == "cuda":
        route = "direct driver entry points" if report["direct_driver_calls"] else "cuda.bindings"
        print(f"hot calls go through {route}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")


if __name__ == "__main__":
    sys.exit(main())
