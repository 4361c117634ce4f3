"""``perpsim drift --many``: pairs of runs checked in one command (issue 8 item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import perpsim
from perpsim.tapes.synth import synth


def test_drift_many_pairs_runs_and_reports_the_changed_one(tmp_path: Path) -> None:
    tapes = [synth(hours=3, symbols=["BTC-PERP"], seed=k, out=tmp_path / f"t{k}.parquet") for k in (1, 2)]
    for tape in tapes:
        perpsim.replay(tape, out=tmp_path / "a" / tape.stem, params={"short": 3, "long": 8})
    perpsim.replay(tapes[0], out=tmp_path / "b" / "t1", params={"short": 3, "long": 8})
    perpsim.replay(tapes[1], out=tmp_path / "b" / "t2", params={"short": 4, "long": 8})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "perpsim",
            "drift",
            "--many",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--workers",
            "0",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr  # one pair drifted
    table = json.loads(out.stdout)["pairs_table"]
    by_tape = {Path(str(r["tape"])).name if r.get("tape") else r["run_a"]: r["status"] for r in table}
    assert sorted(by_tape.values()) == ["drift", "ok"]


def test_sweep_results_are_queryable_in_the_catalog(tmp_path: Path) -> None:
    from perpsim.sim.catalog import Catalog

    tape = synth(hours=3, symbols=["BTC-PERP"], seed=1, out=tmp_path / "t.parquet")
    grid = tmp_path / "grid.toml"
    grid.write_text('name = "g"\ntapes = ["t.parquet"]\n[params]\nshort = [3, 4]\nlong = [8]\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "perpsim",
            "sweep",
            str(grid),
            "--workers",
            "0",
            "--out",
            str(tmp_path / "runs" / "sweep-g"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert tape.exists()
    rows = Catalog(tmp_path / "runs").query('SELECT sweep, "param.short", status FROM sweeps ORDER BY 2').to_dicts()
    assert rows == [
        {"sweep": "sweep-g", "param.short": 3, "status": "ok"},
        {"sweep": "sweep-g", "param.short": 4, "status": "ok"},
    ]
