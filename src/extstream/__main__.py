"""``python -m extstream``: a self-check that shows what extstream sees and does.

Prints the versions and devices, then runs a few stream operations and a
PASS/FAIL line for each. Without a GPU it says so and exits 0; a failed check
exits 1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from collections.abc import Callable

from . import Event, ExternalStream, Stream, __version__, _device, get_current_stream
from ._backend import NAME as BACKEND
from ._backend import cuda as _cuda
from ._errors import CudaError


def _version_text(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


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


_CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("wrap a foreign handle", _check_wrap_infers_device),
    ("host callbacks", _check_callbacks_in_order),
    ("events", _check_event_ordering),
    ("current stream", _check_current_stream_per_thread),
]


def main(argv: list[str] | None = None) -> int:
    """Run the self-check; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m extstream", description=__doc__)
    parser.parse_args(argv)
    python = platform.python_version()
    print(
        f"extstream {__version__} ({BACKEND} backend), cuda-bindings {_cuda.BINDINGS_VERSION}, "
        f"Python {python}"
    )
    try:
        count = _device.device_count()
    except CudaError as exc:
        print(f"No CUDA GPU here: {exc}")
        print("extstream imports without a GPU; CUDA operations raise CudaError like that one.")
        return 0
    driver = _cuda.cudaDriverGetVersion()[1]
    runtime = _cuda.cudaRuntimeGetVersion()[1]
    print(
        f"CUDA driver {_version_text(driver)}, runtime {_version_text(runtime)}, {count} device(s):"
    )
    for device in range(count):
        err, properties = _cuda.cudaGetDeviceProperties(device)
        name = (
            properties.name.decode(errors="replace").rstrip("\0") if err is _cuda.SUCCESS else "?"
        )
        print(f"  cuda:{device}  {name}")
    failures = 0
    for title, check in _CHECKS:
        started = time.perf_counter()
        try:
            detail = check()
        except Exception as exc:
            failures += 1
            detail, verdict = f"{type(exc).__name__}: {exc}", "FAIL"
        else:
            verdict = "PASS"
        print(f"{verdict}  {title:<22} {(time.perf_counter() - started) * 1000:7.2f} ms  {detail}")
    route = "direct driver entry points" if _cuda.direct_driver_calls else "cuda.bindings"
    print(f"hot calls go through {route}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
