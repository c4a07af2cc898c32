"""Running code on the driver model of tests/driver/ (built by the ``fake_driver``
fixture) in a child process whose ``libcuda.so.1`` it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import run_python

PRELUDE = r"""
import ctypes, faulthandler, json, os, sys, threading, time
from cuda.bindings import driver
import extstream

faulthandler.dump_traceback_later(40, exit=True)  # a hang fails the test, with its stacks
lib = ctypes.CDLL(sys.argv[1])
for name in ("fake_stream", "fake_event"):
    getattr(lib, name).restype = ctypes.c_void_p
lib.fake_busy.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.fake_fault.argtypes = [ctypes.c_void_p]
lib.fake_calls.argtypes = [ctypes.c_char_p]

def calls(name):
    return lib.fake_calls(name.encode())

driver.cuInit(0)
with open("/proc/self/maps") as maps:
    drivers = {line.split()[-1] for line in maps if "/libcuda.so" in line}
if drivers != {sys.argv[1]}:
    print(json.dumps({"other driver": sorted(drivers)}))
    sys.exit(0)
out = {}
"""


def run_on_model(fake_driver: Path, code: str, **env: str) -> dict[str, Any]:
    """Run *code* (after PRELUDE) on the model; its JSON ``out``."""
    result = run_python(
        f"import sys; sys.argv[1:] = [{str(fake_driver)!r}]\n{PRELUDE}\n{code}\n"
        "print(json.dumps(out))",
        env={"EXTSTREAM_BACKEND": "cuda", "LD_LIBRARY_PATH": str(fake_driver.parent), **env},
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if "other driver" in out:
        pytest.skip(f"another libcuda is loaded ahead of the model: {out['other driver']}")
    return out
