"""CudaError: message, attributes, pickling; import and first use without a driver."""

from __future__ import annotations

import pickle

import pytest

from extstream import CudaError, ExternalStream

from .conftest import run_python, stress_scenario


def test_message_names_status_explanation_and_call() -> None:
    err = CudaError(600, "cudaStreamQuery")
    assert str(err) == "cudaErrorNotReady: device not ready (in cudaStreamQuery)"
    assert (err.status, err.name, err.call) == (600, "cudaErrorNotReady", "cudaStreamQuery")
    assert isinstance(err, RuntimeError)


def test_without_call_the_message_has_no_location() -> None:
    assert str(CudaError(400)) == "cudaErrorInvalidResourceHandle: invalid resource handle"


def test_unknown_status_still_makes_a_readable_error() -> None:
    err = CudaError(123456)
    assert err.status == 123456
    assert err.name == "cudaError123456"


def test_no_driver_status_carries_a_hint() -> None:
    assert "no usable NVIDIA driver" in str(CudaError(35, "cudaGetDeviceCount"))
    # and how to go on without a GPU
    for status in (35, 100):
        assert "EXTSTREAM_BACKEND=sim" in str(CudaError(status, "cudaGetDeviceCount"))


def test_pickles_with_every_attribute() -> None:
    err = CudaError(700, "cudaStreamSynchronize")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is CudaError
    assert (back.status, back.name, back.call, back.explanation, str(back)) == (
        err.status,
        err.name,
        err.call,
        err.explanation,
        str(err),
    )


@pytest.mark.usefixtures("no_debug_checks")
def test_unreadable_handle_is_refused_before_cuda_sees_it() -> None:
    # CUDA would dereference 0x10 and kill the process; extstream refuses it.
    with pytest.raises(CudaError) as info:
        _ = ExternalStream(0x10, 0).done
    assert info.value.name == "cudaErrorInvalidResourceHandle"
    assert "0x10" in str(info.value)


def test_import_touches_no_driver_and_first_use_raises_cuda_error() -> None:
    # CUDA_VISIBLE_DEVICES="" hides every GPU, so this holds on GPU machines too.
    result = run_python(
        "import extstream\n"
        "try:\n"
        "    extstream.get_current_stream()\n"
        "except extstream.CudaError as exc:\n"
        "    print('CudaError', exc.name)\n",
        env={"CUDA_VISIBLE_DEVICES": "", "EXTSTREAM_BACKEND": "cuda"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CudaError cudaError"), result.stdout


def test_without_a_driver_every_stream_call_raises_cuda_error() -> None:
    # cuda.bindings' driver calls raise their own DynamicLibNotFoundError where no
    # driver library exists; extstream's error contract is CudaError, for every
    # call. The handles are readable memory (so they pass the address probe) but no
    # stream or event: with CUDA_VISIBLE_DEVICES="" no call may reach a driver.
    code = """
import ctypes, extstream
memory = [ctypes.create_string_buffer(64) for _ in range(2)]
stream_ptr, event_ptr = (ctypes.addressof(m) for m in memory)
stream = extstream.ExternalStream(stream_ptr, 0)
calls = {
    "wait_event": lambda: stream.wait_event(event_ptr),
    "record": lambda: stream.record(event_ptr),
    "wait": lambda: stream.wait(extstream.ExternalStream(event_ptr, 0)),
    "done": lambda: stream.done,
    "synchronize": stream.synchronize,
    "launch_host_func": lambda: stream.launch_host_func(print, None),
    "is_capturing": lambda: stream.is_capturing,
    "priority": lambda: stream.priority,
    "device_id": lambda: extstream.ExternalStream(stream_ptr).device_id,
    "Event.done": lambda: extstream.Event.from_handle(event_ptr, 0).done,
    "Event.synchronize": lambda: extstream.Event.from_handle(event_ptr, 0).synchronize(),
}
for name, call in calls.items():
    try:
        call()
        print(name, "no error")
    except extstream.CudaError as exc:
        print(name, "CudaError")
    except Exception as exc:
        print(name, type(exc).__name__, exc)
"""
    result = run_python(code, env={"CUDA_VISIBLE_DEVICES": "", "EXTSTREAM_BACKEND": "cuda"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 11 and all(line.endswith(" CudaError") for line in lines), lines


def test_the_fuzz_without_a_driver_meets_only_documented_errors() -> None:
    # The stress suite's fuzz on the real backend with no usable device: every
    # public call, readable non-handles included, raises TypeError, ValueError,
    # CudaError, TimeoutError or RuntimeError itself (no dependency's subclass).
    report = stress_scenario(
        "fuzz",
        "--quick",
        env={"CUDA_VISIBLE_DEVICES": "", "EXTSTREAM_BACKEND": "cuda"},
        timeout=300,
    )
    assert report["ok"] and report["unexpected"] == 0, report


def test_bad_environment_flag_is_named() -> None:
    result = run_python("import extstream", env={"EXTSTREAM_CHECK": "maybe"})
    assert result.returncode != 0
    assert "EXTSTREAM_CHECK='maybe'" in result.stderr
