"""Which way of calling a hot CUDA function from Python is cheapest?

Times one call of cuStreamQuery / cuEventRecord / cuStreamWaitEvent /
cuStreamSynchronize on an idle stream, and of the current-device query
(cudaGetDevice / cuCtxGetDevice), made in each way extstream could make it:
cuda.bindings runtime and driver (prebuilt handle objects), ctypes on the raw
driver entry point (releasing the GIL or not, int or prebuilt c_void_p args),
and CuPy's Cython runtime as a floor. Median ns of 7 batches, one process.
Run on a GPU machine: ``python3 benchmarks/call_paths.py``.
"""

from __future__ import annotations

import ctypes
import importlib
import statistics
import timeit

from cuda.bindings import driver as dr
from cuda.bindings import runtime as rt

N, BATCHES = 20000, 7


def entry_point(name: str) -> int:
    flags = dr.CUdriverProcAddress_flags.CU_GET_PROC_ADDRESS_LEGACY_STREAM
    err, address, _ = dr.cuGetProcAddress(name.encode(), 12000, flags)
    assert err == dr.CUresult.CUDA_SUCCESS, err
    return int(address)


def median_ns(stmt: str, namespace: dict[str, object]) -> float:
    timer = timeit.Timer(stmt, globals=namespace)
    timer.timeit(N)
    return statistics.median(timer.repeat(BATCHES, N)) / N * 1e9


def main() -> None:
    assert rt.cudaFree(0)[0] == rt.cudaError_t.cudaSuccess
    err, stream = rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking)
    err2, event = rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming)
    assert err == err2 == rt.cudaError_t.cudaSuccess
    ptr, eptr = int(stream), int(event)
    void = ctypes.c_void_p
    ns: dict[str, object] = {
        "rt": rt,
        "dr": dr,
        "h": stream,
        "e": event,
        "ptr": ptr,
        "eptr": eptr,
        "ch": dr.CUstream(ptr),
        "ce": dr.CUevent(eptr),
        "vp": void(ptr),
        "ve": void(eptr),
    }
    for kind, factory in (("c", ctypes.CFUNCTYPE), ("py", ctypes.PYFUNCTYPE)):
        ns[f"{kind}_query"] = factory(ctypes.c_int, void)(entry_point("cuStreamQuery"))
        ns[f"{kind}_sync"] = factory(ctypes.c_int, void)(entry_point("cuStreamSynchronize"))
        ns[f"{kind}_record"] = factory(ctypes.c_int, void, void)(entry_point("cuEventRecord"))
        ns[f"{kind}_wait"] = factory(ctypes.c_int, void, void, ctypes.c_uint)(
            entry_point("cuStreamWaitEvent")
        )
        ns[f"{kind}_device"] = factory(ctypes.c_int, void)(entry_point("cuCtxGetDevice"))
    device_out = ctypes.c_int()
    ns["device_out"], ns["device_address"] = device_out, ctypes.addressof(device_out)
    try:
        cupy_rt = importlib.import_module("cupy_backends.cuda.api.runtime")
        ns["cupy_rt"] = cupy_rt
    except ImportError:
        cupy_rt = None
    rows = {
        "device": {
            "runtime": "rt.cudaGetDevice()",
            "driver": "dr.cuCtxGetDevice()",
            "ctypes nogil int": "c_device(device_address); device_out.value",
            "ctypes gil int": "py_device(device_address); device_out.value",
            "cupy": "cupy_rt.getDevice()",
        },
        "query": {
            "runtime": "rt.cudaStreamQuery(h)",
            "driver": "dr.cuStreamQuery(ch)",
            "ctypes nogil int": "c_query(ptr)",
            "ctypes gil int": "py_query(ptr)",
            "ctypes gil c_void_p": "py_query(vp)",
            "cupy": "cupy_rt.streamQuery(ptr)",
        },
        "record": {
            "runtime": "rt.cudaEventRecord(e, h)",
            "driver": "dr.cuEventRecord(ce, ch)",
            "ctypes nogil int": "c_record(eptr, ptr)",
            "ctypes gil int": "py_record(eptr, ptr)",
            "ctypes gil c_void_p": "py_record(ve, vp)",
            "cupy": "cupy_rt.eventRecord(eptr, ptr)",
        },
        "wait_event": {
            "runtime": "rt.cudaStreamWaitEvent(h, e, 0)",
            "driver": "dr.cuStreamWaitEvent(ch, ce, 0)",
            "ctypes nogil int": "c_wait(ptr, eptr, 0)",
            "ctypes gil int": "py_wait(ptr, eptr, 0)",
            "ctypes gil c_void_p": "py_wait(vp, ve, 0)",
            "cupy": "cupy_rt.streamWaitEvent(ptr, eptr, 0)",
        },
        "synchronize": {
            "runtime": "rt.cudaStreamSynchronize(h)",
            "driver": "dr.cuStreamSynchronize(ch)",
            "ctypes nogil int": "c_sync(ptr)",
            "ctypes nogil c_void_p": "c_sync(vp)",
            "cupy": "cupy_rt.streamSynchronize(ptr)",
        },
    }
    for op, variants in rows.items():
        for name, stmt in variants.items():
            if name == "cupy" and cupy_rt is None:
                continue
            print(f"{op:<12} {name:<22} {median_ns(stmt, ns):8.1f} ns")


if __name__ == "__main__":
    main()
