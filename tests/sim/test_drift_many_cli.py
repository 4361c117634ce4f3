"""``perpsim drift --many``: pairs of runs checked in one command (issue 8 item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import perpsim
from perpsim.tapes.synth import synth
from tests.helpers import cli as _cli


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder ``runs`` holding runs ``a`` and ``b`` of one short tape."""
    base = tmp_path_factory.mktemp("pair")
    tape = synth(hours=1, symbols=["BTC-PERP"], seed=5, out=base / "t.parquet")
    for name in ("a", "b"):
        perpsim.replay(tape, out=base / "runs" / name)
    return base / "runs"


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
    rows = (
        Catalog(tmp_path / "runs")
        .query("SELECT sweep_dir, sweep, \"param.short\", status FROM sweeps WHERE sweep = 'g' ORDER BY 3")
        .to_dicts()
    )
    assert rows == [
        {"sweep_dir": "sweep-g", "sweep": "g", "param.short": 3, "status": "ok"},
        {"sweep_dir": "sweep-g", "sweep": "g", "param.short": 4, "status": "ok"},
    ]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--out", "t.parquet"), "--out needs --many"),
        (("--workers", "0"), "--workers needs --many"),
        (("--scheduler", "tcp://127.0.0.1:1"), "--scheduler needs --many"),
        (("--timeout", "3"), "--timeout needs --many"),
    ],
)
def test_drift_refuses_many_options_without_many(
    pair: Path, tmp_path: Path, extra: tuple[str, ...], needle: str
) -> None:
    args = [a if a != "t.parquet" else str(tmp_path / a) for a in extra]
    code, out, err = _cli("drift", str(pair / "a"), str(pair / "b"), *args)
    assert code == 2 and out == "" and err.strip() == f"perpsim: {needle}"
    assert list(tmp_path.iterdir()) == []


def test_drift_many_refuses_report(pair: Path, tmp_path: Path) -> None:
    code, _, err = _cli("drift", str(pair), str(pair), "--many", "--workers", "0", "--report", str(tmp_path / "r.html"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--report" in err and "--many" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["folder", "under_file"])
@pytest.mark.parametrize("option", ["--report", "--out"])
def test_drift_refuses_an_output_path_that_cannot_be_a_file(
    pair: Path, tmp_path: Path, where: str, option: str
) -> None:
    target = tmp_path / "out.html"
    if where == "folder":
        target.mkdir()
    else:
        (tmp_path / "afile").write_text("")
        target = tmp_path / "afile" / "r.md"
    many = ("--many", "--workers", "0") if option == "--out" else ()
    run_a, run_b = (pair, pair) if many else (pair / "a", pair / "b")
    code, out, err = _cli("drift", str(run_a), str(run_b), *many, option, str(target))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{option} {target}" in err and ("is a folder" if where == "folder" else "is a file") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile" if where == "under_file" else "out.html"]


def test_drift_help_says_how_many_pairs_runs() -> None:
    code, out, _ = _cli("drift", "--help")
    assert code == 0 and "or the tape alone, whatever the configs" in " ".join(out.split())
