"""Peak RSS of a whole replay process against tape length (issue 7: flat, < 500 MB at 50M events).

A tape of N million rows is a folder of 5M-row synthetic files (the clock continues
across files), each made in its own process. Each replay runs in a fresh process that
reports its own peak RSS.

Linux only (``/proc/self/status``). Run: ``.venv/bin/pytest benchmarks/bench_memory.py -s``
(the 50M tape takes a few minutes to make).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

HOURS_PER_5M = 463  # 2 symbols x (30 trades + 60 quotes) per minute
START = 1_704_067_200 * 10**9


def make_folder(root: Path, millions: int) -> Path:
    folder = root / f"tq_{millions}m"
    folder.mkdir(exist_ok=True)
    for k in range(max(1, millions // 5)):
        out = folder / f"{k:03d}.parquet"
        if not out.exists():
            hours = HOURS_PER_5M if millions >= 5 else HOURS_PER_5M * millions / 5
            # in a child process: a fat parent would inflate the children's peak RSS after fork
            code = (
                "import sys; from perpsim.tapes.synth import synth; "
                "synth(hours=float(sys.argv[1]), symbols=['BTC-PERP', 'ETH-PERP'], seed=int(sys.argv[2]), "
                "out=sys.argv[3], start_ns=int(sys.argv[4]))"
            )
            start = START + k * HOURS_PER_5M * 3600 * 10**9
            subprocess.run([sys.executable, "-c", code, str(hours), str(k), str(out), str(start)], check=True)
    return folder


# Peak RSS as the kernel's high-water mark of this process's own memory (VmHWM, kB).
# Not getrusage's ru_maxrss: Linux carries that across exec, so a child started from
# a large pytest process (after the other benchmarks) reported the parent's size.
_CODE = (
    "import sys, perpsim; r = perpsim.replay(sys.argv[1], out=sys.argv[2]); "
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
    "print(r.summary['rows'], hwm.split()[1])"
)


@pytest.mark.parametrize("millions", [1, 10, 50])
def test_bench_peak_rss(tmp_path_factory: pytest.TempPathFactory, millions: int) -> None:
    root = tmp_path_factory.getbasetemp() / "mem-tapes"
    root.mkdir(exist_ok=True)
    folder = make_folder(root, millions)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CODE, str(folder), str(root / f"run-{millions}")],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    rows_text, peak_kb = out.stdout.split()
    rows, peak_mb = int(rows_text), int(peak_kb) / 1024
    print(f"\n{millions}M: rows {rows:,}, wall {wall:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert rows > 0
