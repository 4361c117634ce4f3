"""Sweep throughput: jobs of one tape sharing a decode against one decode per job.

A grid of 16 jobs (``short`` 2-9 by ``long`` 20 and 30) on a pool of two processes, each
way, over ``tq_10m`` (decoding is most of a run's work) and ``l2_1m`` (the runs' cycles
and order books are); the figure is the rows replayed by all jobs over the sweep's wall
time, process start-up included. Run:
``.venv/bin/pytest benchmarks/bench_sweep.py --benchmark-only -s -p no:cacheprovider``
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perpsim.sim import sweep


@pytest.mark.parametrize("shared", [True, False], ids=["shared-decode", "decode-per-job"])
@pytest.mark.parametrize("name", ["tq_10m", "l2_1m"])
def test_bench_sweep_16_jobs(benchmark, bench_tape, tmp_path: Path, monkeypatch, name: str, shared: bool) -> None:
    if not shared:
        monkeypatch.setattr(sweep, "_GROUP_MAX", 1)
    tape = bench_tape(name)
    grid = sweep.parse_grid(
        {"name": "bench", "tapes": str(tape), "params": {"short": list(range(2, 10)), "long": [20, 30]}}
    )
    out = tmp_path / "sweep"

    def run() -> sweep.SweepReport:
        shutil.rmtree(out, ignore_errors=True)
        return sweep.run_sweep(grid, out=out, workers=2)

    report = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    assert report.ok == 16
    rows = int(report.table["rows"].sum())
    rate = rows / benchmark.stats["min"]
    benchmark.extra_info.update(rows=rows, events_per_s=round(rate))
    sizes = sorted(set(report.table["group_size"].to_list()))
    print(
        f"\nsweep {name} {'shared' if shared else 'per job'}: 16 jobs, groups of {sizes}, {rows:,} rows, "
        f"best {benchmark.stats['min']:.2f} s, {rate:,.0f} events/s"
    )
