"""The speed targets, checked against one run of ``python -m extstream bench --json``.

    python3 benchmarks/targets.py bench.json

One line per target: met, missed or not measured, with the figure and the
limit. Each ratio compares two cells of the same run (the hosts are noisy, so
figures from different runs are never compared). The targets are the speed
issue's; ``benchmarks/gpu_check.sh`` runs this after the bench. The exit status
is 0 whatever the verdicts: a missed target is a finding to report with its
floor, not a broken run (a report it cannot read exits 1).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

CUPY = "CuPy"
EXT = "extstream"
HELD, NOTIFY = "extstream held", "extstream notify"

#: (bench row, extstream / CuPy at most)
PER_CALL_VS_CUPY = (
    ("done", 1.15),
    ("synchronize", 1.0),
    ("record(ev)", 1.0),
    ("wait_event(ev)", 1.0),
    ("Event.done", 1.15),
    ("construct(ptr, 0)", 0.25),
    ("construct(ptr)", 0.25),
    ("with s: pass", 1.0),
    ("get_current_stream(0)", 1.0),
)
#: (bench row, extstream ns at most)
PER_CALL_NS = (("get_current_stream() [several devices]", 400.0),)
#: (callback row prefix, way, way / CuPy at most)
CALLBACKS_VS_CUPY = (
    ("burst", NOTIFY, 0.35),
    ("burst", HELD, 1.0),
    ("wake-up", NOTIFY, 1.0),
    ("wake-up", HELD, 1.0),
)
AWAIT_IDLE_US = 5.0


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: float | None  # None: a cell the run does not have
    limit: float
    unit: str

    @property
    def met(self) -> bool | None:
        return None if self.measured is None else self.measured <= self.limit

    def line(self) -> str:
        word = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        figure = "-" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        return f"{word:13}{self.target:52}{figure:>10}  (at most {self.limit:g}{self.unit})"


def _number(cell: dict[str, Any], key: str) -> float | None:
    value = cell.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _over(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def verdicts(report: dict[str, Any]) -> list[Verdict]:
    """Every target's verdict, from the bench's JSON report."""
    ops: dict[str, Any] = report.get("ops", {})
    found: list[Verdict] = []
    for name, limit in PER_CALL_VS_CUPY:
        cells = ops.get(name, {}).get("cells", {})
        ratio = _over(
            _number(cells.get(EXT, {}), "median_ns"), _number(cells.get(CUPY, {}), "median_ns")
        )
        found.append(Verdict(f"{name} vs CuPy", ratio, limit, "x"))
    for name, ns in PER_CALL_NS:
        cells = ops.get(name, {}).get("cells", {})
        found.append(Verdict(name, _number(cells.get(EXT, {}), "median_ns"), ns, " ns"))
    callbacks: dict[str, Any] = report.get("callbacks_us", {})
    for prefix, way, limit in CALLBACKS_VS_CUPY:
        row: dict[str, Any] = next(
            (row for name, row in callbacks.items() if name.startswith(prefix)), {}
        )
        cells = row.get("cells", {})
        ratio = _over(_number(cells.get(way, {}), "median"), _number(cells.get(CUPY, {}), "median"))
        found.append(Verdict(f"callbacks: {prefix}, {way} vs CuPy", ratio, limit, "x"))
    idle = _number(report.get("await_idle_us") or {}, "median")
    found.append(Verdict("await on an idle stream", idle, AWAIT_IDLE_US, " us"))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: targets.py BENCH_JSON", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as file:
            report = json.load(file)
    except (OSError, ValueError) as exc:
        print(f"cannot read the bench report {argv[0]!r}: {exc}", file=sys.stderr)
        return 1
    found = verdicts(report)
    for verdict in found:
        print(verdict.line())
    met = sum(v.met is True for v in found)
    unmeasured = sum(v.met is None for v in found)
    print(f"targets: {met} of {len(found)} met, {unmeasured} not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
