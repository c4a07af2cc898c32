"""Shared test helpers. The ``gpu`` marker, fixtures and backend choice come from
extstream's own pytest plugin (``pytest_extstream``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import extstream

ROOT = Path(__file__).resolve().parent.parent


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter that imports this checkout's extstream and
    tests, on the same backend as this session unless *env* says otherwise."""
    return run_interpreter("-c", code, env=env, timeout=timeout)


def run_interpreter(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a fresh interpreter set up as for :func:`run_python`."""
    inherited = os.environ.get("PYTHONPATH")
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), *([inherited] if inherited else [])])
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def stress_scenario(
    name: str, *options: str, env: dict[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """The JSON report of the stress suite's scenario *name*, run in a fresh interpreter."""
    result = run_interpreter(
        str(ROOT / "benchmarks" / "stress.py"),
        *options,
        "--json",
        "--only",
        name,
        env=env,
        timeout=timeout,
    )
    report: dict[str, Any] = json.loads(result.stdout)["scenarios"][name]
    return report


def fake_stream(ptr: int, device_id: int) -> extstream.ExternalStream:
    """A wrapper of a handle that never reaches CUDA (debug checks would ask CUDA)."""
    previous = extstream.set_debug_checks(False)
    try:
        return extstream.ExternalStream(ptr, device_id)
    finally:
        extstream.set_debug_checks(previous)


@pytest.fixture(scope="session")
def fake_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver model (tests/driver/fake_libcuda.c) built as a ``libcuda.so.1``; a
    child that puts its folder on ``LD_LIBRARY_PATH`` loads it as the driver."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the driver model")
    library = tmp_path_factory.mktemp("driver") / "libcuda.so.1"
    source = ROOT / "tests" / "driver" / "fake_libcuda.c"
    flags = ["-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread"]
    subprocess.run([compiler, *flags, "-o", str(library), str(source)], check=True)
    return library


@pytest.fixture
def stream(cuda_stream: extstream.Stream) -> extstream.Stream:
    """A fresh stream per test: the plugin's ``cuda_stream``."""
    return cuda_stream


@pytest.fixture
def no_debug_checks() -> Iterator[None]:
    """For tests whose handles never reach CUDA."""
    previous = extstream.set_debug_checks(False)
    yield
    extstream.set_debug_checks(previous)
