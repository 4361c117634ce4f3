"""Replay throughput of the baseline bot (events/s, one core, whole replay incl. Parquet decode).

Run: ``.venv/bin/pytest benchmarks/bench_replay.py --benchmark-only -s``
"""

from __future__ import annotations

import pytest

import perpsim
from perpsim.tapes.reader import open_tape


def _replay(path, **kw):
    return perpsim.replay(path, **kw)


@pytest.mark.parametrize("name", ["tq_1m", "l2_1m"])
def test_bench_replay_baseline(benchmark, bench_tape, name: str) -> None:
    path = bench_tape(name)
    rows = open_tape(path).num_rows
    result = benchmark.pedantic(_replay, args=(path,), rounds=3, iterations=1, warmup_rounds=1)
    assert result.summary["rows"] == rows
    benchmark.extra_info["rows"] = rows
    benchmark.extra_info["events_per_s"] = round(rows / benchmark.stats["min"])
    print(
        f"\n{name}: {rows:,} rows, best {benchmark.stats['min']:.3f} s, {rows / benchmark.stats['min']:,.0f} events/s"
    )


def test_bench_tape_read(benchmark, bench_tape) -> None:
    path = bench_tape("tq_1m")
    tape = open_tape(path)

    def read() -> int:
        return sum(len(b) for b in tape.batches())

    n = benchmark.pedantic(read, rounds=3, iterations=1, warmup_rounds=1)
    print(f"\nread tq_1m: {n / benchmark.stats['min']:,.0f} rows/s")
