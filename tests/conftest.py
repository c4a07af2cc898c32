"""Test set-up: the ``gpu`` marker skips without a GPU, or fails with EXTSTREAM_REQUIRE_GPU=1."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import extstream
from extstream import _device

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """Why CUDA tests cannot run here, or None when a GPU is usable."""
    try:
        if _device.device_count() > 0:
            return None
        return "no CUDA device"
    except extstream.CudaError as exc:
        return f"no CUDA GPU: {exc}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is None:
        return
    reason = gpu_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("EXTSTREAM_REQUIRE_GPU", "") not in ("", "0"):
        pytest.fail(f"EXTSTREAM_REQUIRE_GPU is set but {reason}", pytrace=False)
    pytest.skip(reason)


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter that imports this checkout's extstream."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
