"""``python -m extstream bench``: options, refusals without a GPU, the table, JSON and chart."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from extstream import Stream, _bench, _device, _stream, get_current_stream, sim
from extstream._bench import EXT, RT, CallbackRow, Result, Row, Stats

from .conftest import ROOT, run_interpreter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result() -> Result:
    """A made-up run: extstream 120 ns, raw runtime 100, raw driver 150, CuPy missing."""
    medians = {EXT: 120.0, RT: 100.0, _bench.DRV: 150.0}
    rows = []
    for op in _bench.OPS:
        stats = {
            col: Stats(ns, ns * 0.9, ns * 1.2) for col, ns in medians.items() if col in op.stmts
        }
        rows.append(Row(op, stats, {_bench.CUPY: "peer unavailable"}))
    callbacks = [
        CallbackRow(
            "burst of 1000 (per callback)",
            {_bench.HELD: Stats(22.0, 21.0, 25.0), _bench.CUPY_HOST_FUNC: Stats(20.0, 19.0, 21.0)},
            {_bench.NOTIFY: "made up missing"},
        )
    ]
    return Result({"GPU": "Made-up GPU"}, 1000, 5, 9.5, rows, callbacks, Stats(2.5, 2.0, 3.0))


def test_ratio_is_extstream_over_the_fastest_reference() -> None:
    done = _result().rows[0]
    assert done.op.name == "done" and done.op.ratio_vs == (RT, _bench.DRV)
    assert done.ratio == pytest.approx(1.2)
    with_row = next(row for row in _result().rows if row.op.name == "with s: pass")
    assert with_row.ratio is None  # its reference, CuPy, was not measured


def test_table_and_json_show_every_cell() -> None:
    result = _result()
    text = _bench.table(result.rows)
    done_line = next(line for line in text.splitlines() if line.startswith("done "))
    assert "120.0" in done_line and "1.20x" in done_line and "n/a" in done_line
    report = json.loads(json.dumps(_bench.to_json(result)))
    cells = report["ops"]["done"]["cells"]
    assert cells[EXT]["median_ns"] == 120.0 and cells["CuPy"] == {"na": "peer unavailable"}
    assert report["ops"]["done"]["ratio"] == pytest.approx(1.2)


def test_callback_table_and_json_compare_each_mode_with_cupy() -> None:
    result = _result()
    burst = next(line for line in _bench.callback_table(result).splitlines() if "burst" in line)
    assert burst.split()[-5:] == ["22.00", "n/a", "20.00", "1.10x", "-"]
    assert "await idle stream" in _bench.callback_table(result)
    report = json.loads(json.dumps(_bench.to_json(result)))
    row = report["callbacks_us"]["burst of 1000 (per callback)"]
    assert row["vs_cupy"] == {_bench.HELD: pytest.approx(1.1), _bench.NOTIFY: None}
    assert row["cells"][_bench.NOTIFY] == {"na": "made up missing"}
    assert report["await_idle_us"]["median"] == 2.5


@pytest.mark.gpu
def test_callback_rows_time_both_modes_until_every_callback_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_bench, "WAKE_UPS", 20)
    monkeypatch.setattr(_bench, "AWAITS", 50)
    owned = Stream()
    try:
        rows = _bench.measure_callbacks(_stream.ExternalStream(owned.ptr), None, 200, 2)
        awaited = _bench.measure_await(_stream.ExternalStream(owned.ptr), 2)
    finally:
        owned.close()
    assert [row.name for row in rows] == ["burst of 200 (per callback)", "wake-up (idle stream)"]
    for row in rows:
        assert set(row.stats) == {_bench.HELD, _bench.NOTIFY}
        assert all(0 < st.min <= st.median <= st.max for st in row.stats.values())
        assert row.failed == {_bench.CUPY_HOST_FUNC: "peer unavailable"}
    assert 0 < awaited.min <= awaited.median


def test_a_burst_that_never_finishes_fails_instead_of_reporting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_bench, "_CALLBACK_PATIENCE", 0.05)
    with pytest.raises(RuntimeError, match="did not all run"):
        _bench.burst_us(lambda callback, arg: None, 3)  # a launch that never calls back


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    _bench.plot(_result(), str(path))
    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--batches", "2"], "--batches must be at least 5 for a median, not 2"),
        (["--n", "0"], "must be at least 1, not 0"),
        (["--n", "many"], "invalid _positive value: 'many'"),
    ],
)
def test_bad_options_are_named(option: list[str], message: str) -> None:
    result = run_interpreter("-m", "extstream", "bench", *option)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_plot_without_matplotlib_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.argv = ['x', 'bench', '--plot', 'x.png']"
        "\nfrom extstream.__main__ import main; sys.exit(main())"
    )
    result = run_interpreter("-c", code)
    assert result.returncode == 2
    assert "pip install 'extstream[plot]'" in result.stderr


def test_without_a_gpu_it_says_so() -> None:
    result = run_interpreter(
        "-m", "extstream", "bench", env={"EXTSTREAM_BACKEND": "cuda", "CUDA_VISIBLE_DEVICES": ""}
    )
    assert result.returncode == 1
    assert "python -m extstream bench needs a CUDA GPU: cudaError" in result.stdout


def test_on_the_simulator_it_says_so() -> None:
    result = run_interpreter("-m", "extstream", "bench", env={"EXTSTREAM_BACKEND": "sim"})
    assert result.returncode == 1
    assert "the simulator has no CUDA calls to time" in result.stdout


@pytest.mark.gpu
def test_bench_on_a_gpu(tmp_path: Path) -> None:
    if sim.active():
        pytest.skip("times real CUDA calls")
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["--n", "300", "--batches", "5", "--json", str(out)]
    if _has_matplotlib():
        args += ["--plot", str(chart)]
    result = run_interpreter("-m", "extstream", "bench", *args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    for name in ("done", "synchronize", "record(ev)", "wait_event(ev)", "with s: pass"):
        assert report["ops"][name]["cells"][EXT]["median_ns"] > 0
    assert report["ops"]["done"]["ratio"] > 0
    for name in ("burst of 300 (per callback)", "wake-up (idle stream)"):
        for way in (_bench.HELD, _bench.NOTIFY, _bench.CUPY_HOST_FUNC):
            assert report["callbacks_us"][name]["cells"][way]["median"] > 0
    assert report["await_idle_us"]["median"] > 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert any(row[:1] == ["done"] and row[-1].endswith("x") for row in rows)  # with its ratio
    if _has_matplotlib():
        assert chart.read_bytes().startswith(PNG_MAGIC)


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


@pytest.mark.gpu
def test_the_several_device_row_takes_that_path_and_restores_the_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    get_current_stream()  # the one-device shortcut is learnt
    before = (_device._count, _stream._only_device_var, _stream._several_devices)
    asked: list[int] = []
    original = _stream._current_device

    def counted() -> int:
        asked.append(1)
        return original()

    monkeypatch.setattr(_stream, "_current_device", counted)
    with _bench._as_if_several_devices():
        assert get_current_stream() is get_current_stream(0)
        assert asked == [1]  # the current device was asked, as with several devices
    assert (_device._count, _stream._only_device_var, _stream._several_devices) == before
    assert [op.name for op in _bench.OPS if op.several_devices] == [
        "get_current_stream() [several devices]"
    ]


def _targets() -> Any:
    name = "extstream_bench_targets"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_targets_are_judged_from_one_run(tmp_path: Path) -> None:
    targets = _targets()
    medians = {EXT: 110.0, _bench.CUPY: 100.0}
    rows = [
        Row(op, {col: Stats(ns, ns, ns) for col, ns in medians.items() if col in op.stmts}, {})
        for op in _bench.OPS
    ]
    callbacks = [
        CallbackRow(
            "burst of 1000 (per callback)",
            {_bench.HELD: Stats(22.0, 21.0, 25.0), _bench.CUPY_HOST_FUNC: Stats(20.0, 19.0, 21.0)},
            {_bench.NOTIFY: "made up missing"},
        )
    ]
    result = Result({"GPU": "Made-up GPU"}, 1000, 5, 9.5, rows, callbacks, Stats(2.5, 2.0, 3.0))
    report = json.loads(json.dumps(_bench.to_json(result)))
    met = {v.target: v.met for v in targets.verdicts(report)}
    assert met["done vs CuPy"] is True  # 1.10x, at most 1.15x
    assert met["synchronize vs CuPy"] is False  # 1.10x, at most 1.0x
    assert met["construct(ptr) vs CuPy"] is False  # at most 0.25x
    assert met["get_current_stream() [several devices]"] is True  # 110 ns, at most 400
    assert met["callbacks: burst, extstream held vs CuPy"] is False  # 1.10x
    assert met["callbacks: burst, extstream notify vs CuPy"] is None  # not measured
    assert met["callbacks: wake-up, extstream held vs CuPy"] is None  # no such row
    assert met["await on an idle stream"] is True  # 2.5 us, at most 5
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    shown = run_interpreter(str(ROOT / "benchmarks" / "targets.py"), str(path))
    assert shown.returncode == 0, shown.stderr
    summary = shown.stdout.strip().splitlines()[-1]
    assert (
        summary
        == f"targets: {sum(v is True for v in met.values())} of {len(met)} met, 3 not measured"
    )
    unreadable = run_interpreter(str(ROOT / "benchmarks" / "targets.py"), str(tmp_path / "none"))
    assert unreadable.returncode == 1 and "cannot read the bench report" in unreadable.stderr
