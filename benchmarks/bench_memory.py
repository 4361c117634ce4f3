"""Peak RSS of a whole replay process against tape length (issue 7: flat, < 500 MB at 50M events).

A tape of N million rows is a folder of 5M-row synthetic files (the clock continues
across files). Each replay runs in a fresh process; its peak RSS comes from
``resource.getrusage(RUSAGE_CHILDREN)``.

Run: ``.venv/bin/pytest benchmarks/bench_memory.py -s`` (the 50M tape takes a few minutes to make).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perpsim.tapes.synth import synth

HOURS_PER_5M = 463  # 2 symbols x (30 trades + 60 quotes) per minute
START = 1_704_067_200 * 10**9


def make_folder(root: Path, millions: int) -> Path:
    folder = root / f"tq_{millions}m"
    folder.mkdir(exist_ok=True)
    for k in range(max(1, millions // 5)):
        out = folder / f"{k:03d}.parquet"
        if not out.exists():
            hours = HOURS_PER_5M if millions >= 5 else HOURS_PER_5M * millions / 5
            synth(
                hours=hours,
                symbols=["BTC-PERP", "ETH-PERP"],
                seed=k,
                out=out,
                start_ns=START + k * HOURS_PER_5M * 3600 * 10**9,
            )
    return folder


_CODE = "import sys, perpsim; r = perpsim.replay(sys.argv[1], out=sys.argv[2]); print(r.summary['rows'])"


@pytest.mark.parametrize("millions", [1, 10, 50])
def test_bench_peak_rss(tmp_path_factory: pytest.TempPathFactory, millions: int) -> None:
    root = tmp_path_factory.getbasetemp() / "mem-tapes"
    root.mkdir(exist_ok=True)
    folder = make_folder(root, millions)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CODE, str(folder), str(root / f"run-{millions}")],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows = int(out.stdout.strip())
    print(f"\n{millions}M: rows {rows:,}, wall {wall:.1f} s, peak RSS {peak_mb:.0f} MB (previous max {before / 1024:.0f})")
    assert rows > 0
