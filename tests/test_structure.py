"""How the package is built: the backend seam, public names, what importing it costs."""

from __future__ import annotations

import ctypes
import errno
import inspect
import pickle
from types import ModuleType

import pytest

import extstream
from extstream import CudaError, _cuda, _native, _sim

from .conftest import run_python


def _interface(backend: ModuleType) -> set[str]:
    names = set(backend.__all__)
    missing = [name for name in names if not hasattr(backend, name)]
    assert not missing, f"{backend.__name__}.__all__ names what it lacks: {missing}"
    return names


def _takes_only_star_args(function: object) -> bool:
    parameters = list(inspect.signature(function).parameters.values())  # type: ignore[arg-type]
    return [p.kind for p in parameters] == [inspect.Parameter.VAR_POSITIONAL]


def test_both_backends_offer_the_same_names_with_the_same_signatures() -> None:
    assert _interface(_sim) - _sim.TOOLS - {"TOOLS"} == _interface(_cuda)
    for name in sorted(_interface(_cuda)):
        real, simulated = getattr(_cuda, name), getattr(_sim, name)
        assert callable(real) == callable(simulated), name
        if not (inspect.isfunction(real) and inspect.isfunction(simulated)):
            continue  # cuda.bindings' compiled functions have no Python signature
        if _takes_only_star_args(real):  # a stand-in that binds the real call first
            continue
        assert list(inspect.signature(real).parameters) == list(
            inspect.signature(simulated).parameters
        ), name


SEAM_CALLS = """
import ctypes
from extstream import _cuda as c
rt = c.runtime_module
memory = [ctypes.create_string_buffer(64) for _ in range(2)]  # readable, if ever read
stream, event = (ctypes.addressof(m) for m in memory)
S, E, F = c.stream_t(stream), c.event_t(event), c.host_fn_t(c._native.SEM_POST_ADDRESS)
calls = {  # name: (call as extstream makes it, results after the error code)
    "cudaStreamCreateWithPriority": (lambda: c.cudaStreamCreateWithPriority(1, 0), 1),
    "cudaStreamDestroy": (lambda: c.cudaStreamDestroy(S), 0),
    "cudaStreamQuery": (lambda: c.cudaStreamQuery(S), 0),
    "cudaStreamWaitEvent": (lambda: c.cudaStreamWaitEvent(S, E, 0), 0),
    "cudaStreamGetDevice": (lambda: c.cudaStreamGetDevice(S), 1),
    "cudaStreamGetPriority": (lambda: c.cudaStreamGetPriority(S), 1),
    "cudaStreamGetFlags": (lambda: c.cudaStreamGetFlags(S), 1),
    "cudaStreamIsCapturing": (lambda: c.cudaStreamIsCapturing(S), 1),
    "cudaStreamGetCaptureInfo": (lambda: c.cudaStreamGetCaptureInfo(S), 3),  # at least
    "cudaEventCreateWithFlags": (lambda: c.cudaEventCreateWithFlags(c.EVENT_DISABLE_TIMING), 1),
    "cudaEventRecord": (lambda: c.cudaEventRecord(E, S), 0),
    "cudaEventQuery": (lambda: c.cudaEventQuery(E), 0),
    "cudaEventElapsedTime": (lambda: c.cudaEventElapsedTime(E, E), 1),
    "cudaEventDestroy": (lambda: c.cudaEventDestroy(E), 0),
    "cudaGetDevice": (lambda: c.cudaGetDevice(), 1),
    "cudaSetDevice": (lambda: c.cudaSetDevice(0), 0),
    "cudaGetDeviceCount": (lambda: c.cudaGetDeviceCount(), 1),
    "cudaGetDeviceProperties": (lambda: c.cudaGetDeviceProperties(0), 1),
    "cudaDeviceGetStreamPriorityRange": (lambda: c.cudaDeviceGetStreamPriorityRange(), 2),
    "cudaDriverGetVersion": (lambda: c.cudaDriverGetVersion(), 1),
    "cudaRuntimeGetVersion": (lambda: c.cudaRuntimeGetVersion(), 1),
    "cudaUserObjectCreate": (
        lambda: c.cudaUserObjectCreate(stream, F, 1, c.USER_OBJECT_NO_DESTRUCTOR_SYNC), 1
    ),
    "cudaGraphRetainUserObject": (
        lambda: c.cudaGraphRetainUserObject(
            rt.cudaGraph_t(), rt.cudaUserObject_t(), 1, c.GRAPH_USER_OBJECT_MOVE
        ),
        0,
    ),
    "cudaUserObjectRelease": (lambda: c.cudaUserObjectRelease(rt.cudaUserObject_t(), 1), 0),
    "cudaIpcGetEventHandle": (lambda: c.cudaIpcGetEventHandle(E), 1),
    "cudaIpcOpenEventHandle": (
        lambda: c.cudaIpcOpenEventHandle(c.ipc_handle_from_bytes(bytes(64))), 1
    ),
}
for name, (make, outputs) in calls.items():
    try:
        result = make()
    except Exception as exc:
        print(name, "raised", type(exc).__name__, exc)
        continue
    shape_ok = isinstance(result, tuple) and isinstance(result[0], rt.cudaError_t)
    length_ok = shape_ok and (len(result) - 1 == outputs or (outputs == 3 and len(result) > 3))
    print(name, "ok" if length_ok else f"unexpected {result!r}")
"""


def test_the_installed_cuda_bindings_take_the_seams_calls_as_extstream_makes_them() -> None:
    # The simulator stands in for _cuda in CI, so a cuda-bindings release that changes
    # a signature or a result's arity would go unseen; without a device every runtime
    # call still checks its arguments and returns (error, *results).
    result = run_python(SEAM_CALLS, env={"CUDA_VISIBLE_DEVICES": "", "EXTSTREAM_BACKEND": "cuda"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 26 and all(line.endswith(" ok") for line in lines), lines


@pytest.mark.parametrize("backend", [_cuda, _sim])
def test_an_ipc_event_handle_round_trips_its_64_bytes(backend: ModuleType) -> None:
    # No driver needed: the real seam fills and reads the installed cuda-bindings'
    # cudaIpcEventHandle_t (13.4 dropped its `reserved` field, which 13.3 had).
    data = bytes(range(backend.IPC_HANDLE_BYTES))
    assert backend.ipc_handle_bytes(backend.ipc_handle_from_bytes(data)) == data
    assert backend.ipc_handle_bytes(backend.ipc_handle_from_bytes(bytes(64))) == bytes(64)


@pytest.mark.parametrize("name", extstream.__all__)
def test_public_names_live_in_extstream(name: str) -> None:
    obj = getattr(extstream, name)
    if name != "__version__":
        assert obj.__module__ == "extstream"
    assert name in dir(extstream)


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = extstream.no_such_name


def test_import_chooses_no_backend_and_imports_neither_cuda_bindings_nor_asyncio() -> None:
    code = (
        "import sys, extstream\n"
        "print(sorted(m for m in ('cuda.bindings', 'extstream._backend', 'asyncio')"
        " if m in sys.modules))\n"
        "extstream.Stream().synchronize(timeout=1)\n"
        "print('asyncio' in sys.modules)\n"
    )
    result = run_python(code, env={"EXTSTREAM_BACKEND": "sim"})
    assert result.stdout.split() == ["[]", "False"], result.stderr


def test_cuda_error_names_and_explanations_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CudaError(400, "cudaStreamQuery", "cudaErrorX")  # type: ignore[call-arg]
    error = CudaError(400, "cudaStreamQuery", name="cudaErrorX", explanation="why")
    assert str(error) == "cudaErrorX: why (in cudaStreamQuery)"
    again = pickle.loads(pickle.dumps(error))
    assert (again.status, again.call, again.name, again.explanation) == (
        400,
        "cudaStreamQuery",
        "cudaErrorX",
        "why",
    )


def test_a_failed_semaphore_wait_raises_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def failing_wait(semaphore: int) -> int:
        calls.append(semaphore)
        if len(calls) > 3:  # the old loop would never end: stop it for the test
            raise AssertionError("sem_wait retried after EINVAL")
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(_native, "_sem_wait", failing_wait)
    with pytest.raises(OSError, match="sem_wait") as info:
        _native.take(_native.new_semaphore())
    assert info.value.errno == errno.EINVAL
    assert len(calls) == 1


def test_an_interrupted_semaphore_wait_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    results = iter([-1, 0])

    def interrupted_then_posted(semaphore: int) -> int:
        ctypes.set_errno(errno.EINTR)
        return next(results)

    monkeypatch.setattr(_native, "_sem_wait", interrupted_then_posted)
    _native.take(_native.new_semaphore())
    assert next(results, None) is None
