"""The run catalog: runs under a root, listed, shown and queried with SQL in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

import perpsim
from perpsim.core.errors import InputError
from perpsim.sim.catalog import Catalog
from perpsim.tapes import synth
from tests.helpers import cli as _cli


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cat")
    tape = synth(hours=1, symbols=["BTC-PERP", "ETH-PERP"], seed=3, out=base / "t.parquet")
    runs = base / "runs"
    perpsim.replay(tape, out=runs / "20240101T000000-a")
    perpsim.replay(tape, out=runs / "20240101T000001-b", params={"short": 3, "long": 8})
    (runs / "20240101T000002-broken").mkdir()
    (runs / "20240101T000002-broken" / "manifest.json").write_text("{oops")
    return runs


def test_catalog_lists_every_run_and_the_unreadable_one(root: Path) -> None:
    df = Catalog(root).runs()
    assert df["run_id"].to_list() == ["20240101T000000-a", "20240101T000001-b", "20240101T000002-broken"]
    assert df["status"].to_list() == ["complete", "complete", "unreadable"]
    assert df["cycles"][0] == 61 and df["tape"][0] == "t.parquet"


def test_catalog_query_joins_events_and_equity_per_run(root: Path) -> None:
    cat = Catalog(root)
    q = cat.query(
        "SELECT r.run_id, count(*) AS cycles, max(e.ts) AS last FROM equity e JOIN runs r USING (run_id) "
        "GROUP BY 1 ORDER BY 1"
    )
    assert q["run_id"].to_list() == ["20240101T000000-a", "20240101T000001-b"]
    assert q["cycles"].to_list() == [61, 61]
    fills = cat.query("SELECT run_id, count(*) n FROM events WHERE kind = 'fill' GROUP BY 1 ORDER BY 1")
    summary = {r["run_id"]: r["fills"] for r in cat.runs().iter_rows(named=True)}
    assert {r["run_id"]: r["n"] for r in fills.iter_rows(named=True)} == {k: v for k, v in summary.items() if v}
    with pytest.raises(InputError, match="query: Parser Error"):
        cat.query("SELEC 1")


def test_catalog_resolves_prefixes_and_empty_roots(root: Path, tmp_path: Path) -> None:
    cat = Catalog(root)
    assert cat.show("20240101T000001")["run_id"] == "20240101T000001-b"
    with pytest.raises(InputError, match="ambiguous"):
        cat.resolve("2024")
    assert Catalog(tmp_path).query("SELECT count(*) AS n FROM events")["n"][0] == 0
    with pytest.raises(InputError, match="no such runs folder"):
        Catalog(tmp_path / "none").runs()


def test_runs_cli_ls_show_query(root: Path) -> None:
    code, out, _ = _cli("runs", "--root", str(root), "ls")
    assert code == 0 and "20240101T000000-a" in out and "unreadable" in out
    code, out, _ = _cli("runs", "ls", "--root", str(root), "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = _cli("runs", "show", "20240101T000000-a", "--root", str(root))
    assert code == 0 and "events.parquet" in out and "digest" in out
    code, out, _ = _cli(
        "runs", "--root", str(root), "query", "SELECT kind, count(*) n FROM events GROUP BY 1", "--json"
    )
    assert code == 0 and {r["kind"] for r in json.loads(out)} >= {"cycle", "decision"}
    code, _, err = _cli("runs", "--root", str(root), "query", "SELECT nope FROM events")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
    code, _, err = _cli("runs", "--root", str(root / "missing"), "ls")
    assert code == 2 and "no such runs folder" in err


def test_catalog_leaves_out_a_damaged_parquet_file_and_says_so(root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(root, runs)
    (runs / "20240101T000000-a" / "events.parquet").write_text("junk\n")
    (runs / "x").mkdir()
    (runs / "x" / "results.parquet").write_text("junk\n")
    cat = Catalog(runs)
    q = cat.query("SELECT DISTINCT run_id FROM events")
    assert q["run_id"].to_list() == ["20240101T000001-b"]
    assert len(cat.warnings) == 2 and "events.parquet" in cat.warnings[0] and "results.parquet" in cat.warnings[1]
    assert cat.query("SELECT count(DISTINCT run_id) AS n FROM equity")["n"][0] == 2
    code, out, err = _cli("runs", "--root", str(runs), "query", "SELECT count(*) AS n FROM runs", "--csv")
    assert code == 0 and out == "n\n3\n"
    assert [line.split(":")[0] for line in err.splitlines()] == ["warning", "warning"]


@pytest.mark.parametrize(
    "manifest, summary, reason",
    [
        ({"status": "complete", "config": [1]}, {}, "config is list"),
        ({"status": "complete", "seed": "abc"}, {}, "seed is str"),
        ({"status": "complete", "seed": 2**70}, {}, "seed 1180591620717411303424 is out of range"),
        ({"status": "complete", "config": {"strategy": [1]}}, {}, "config.strategy is list"),
        ({"status": "complete"}, {"cycles": float("nan"), "fills": 2**70}, None),
    ],
)
def test_catalog_lists_an_oddly_typed_manifest_as_unreadable(
    tmp_path: Path, manifest: dict[str, object], summary: dict[str, object], reason: str | None
) -> None:
    run = tmp_path / "20240101T000000-odd"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "summary.json").write_text(json.dumps(summary))
    row = Catalog(tmp_path).runs().row(0, named=True)
    if reason is None:  # a summary figure that is no Int64 is left out, the run is still listed
        assert row["status"] == "complete" and row["cycles"] is None and row["fills"] is None
        return
    assert row["status"] == "unreadable" and reason in row["reason"]
    code, out, _ = _cli("runs", "--root", str(tmp_path), "ls")
    assert code == 0 and "unreadable" in out
    code, _, err = _cli("runs", "--root", str(tmp_path), "show", run.name)
    assert code == 2 and len(err.strip().splitlines()) == 1 and reason in err


def test_catalog_sweeps_view_keeps_the_tables_own_sweep_column(tmp_path: Path) -> None:
    (tmp_path / "sweep-g1").mkdir()
    pl.DataFrame({"sweep": ["g1", "g1"], "pnl": [1.0, 2.0]}).write_parquet(tmp_path / "sweep-g1" / "results.parquet")
    q = Catalog(tmp_path).query("SELECT sweep_dir, sweep, pnl FROM sweeps WHERE sweep = 'g1' ORDER BY pnl")
    assert q.to_dicts() == [
        {"sweep_dir": "sweep-g1", "sweep": "g1", "pnl": 1.0},
        {"sweep_dir": "sweep-g1", "sweep": "g1", "pnl": 2.0},
    ]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("SELECT run_id FROM runs", "--limit", "-1"), "--limit"),
        (("SELECT run_id FROM runs", "--limit", "0"), "--limit"),
        (("",), "the SQL is empty"),
        ((" \n",), "the SQL is empty"),
    ],
)
def test_runs_query_refuses_a_nonpositive_limit_and_empty_sql(root: Path, args: tuple[str, ...], needle: str) -> None:
    code, out, err = _cli("runs", "--root", str(root), "query", *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and needle in err


def test_runs_query_prints_a_wide_result_as_records_and_a_narrow_one_as_a_table(root: Path, tmp_path: Path) -> None:
    from perpsim.sim.sweep import parse_grid, run_sweep

    grid = parse_grid({"tapes": [str(root.parent / "t.parquet")], "params": {"short": [3, 5], "long": [8]}}, name="g")
    table = run_sweep(grid, out=tmp_path / "sweep-g", workers=0).table
    assert table.width > 30  # a sweep's table: far too many columns for one line of 110
    code, out, _ = _cli("runs", "--root", str(tmp_path), "query", "SELECT * FROM sweeps ORDER BY pnl DESC")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "2 row(s)" and "┃" not in out
    assert [x for x in lines if x.startswith("-[ row")] == ["-[ row 1 ]" + "-" * 9, "-[ row 2 ]" + "-" * 9]
    best = table.sort("pnl", descending=True).row(0, named=True)
    label = max(len(c) for c in ["sweep_dir", *table.columns])
    for col in ("sweep_dir", "param.short", "pnl", "digest", "final_equity"):
        value = "sweep-g" if col == "sweep_dir" else str(best[col])
        assert f"{col.ljust(label)}  {value}" in lines, col  # whole: name and value on one line
    code, out, _ = _cli("runs", "--root", str(tmp_path), "query", "SELECT sweep_dir, digest, pnl FROM sweeps")
    assert code == 0 and "┃ sweep_dir" in out and "-[ row" not in out
    assert all(d in out for d in table["digest"])  # 64 characters, not folded: the table fits


def test_runs_ls_keeps_numbers_whole_and_lists_runs_by_start_time(root: Path, tmp_path: Path) -> None:
    import os

    runs = tmp_path / "runs"
    stamp = 1795577744  # 2026-11-25 03:35:44 UTC, the second both stamped names below hold
    named = {  # folder name: start time (s); name order is not time order
        "a-custom-name-started-last": 1830000000.0,
        "20261125T033544-sample-backtest-with-a-long-label": stamp + 0.6,
        "20261125T033544Z-live-canary": stamp + 0.1,
        "b-custom-name-started-first": 1760000000.0,
    }
    for name, start in named.items():
        shutil.copytree(root / "20240101T000000-a", runs / name)
        wall = json.loads((runs / name / "summary.json").read_text())["wall_s"]
        os.utime(runs / name / "manifest.json", (start + wall, start + wall))  # rewritten at the end
    broken = runs / "c-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{" + "x" * 300)  # a long reason in the status column
    os.utime(broken / "manifest.json", (1700000000, 1700000000))
    order = ["c-broken", *sorted(named, key=lambda n: named[n])]
    assert Catalog(runs).runs()["run_id"].to_list() == order
    code, out, _ = _cli("runs", "--root", str(runs), "ls")
    assert code == 0 and "…" not in out
    fe = Catalog(root).runs()["final_equity"][0]
    assert out.count(f"{fe:,.2f}") == 4
    listed = [n for line in out.splitlines() for n in order if f"│ {n} " in line]
    assert listed == order  # oldest first, each id whole on one line
    code, out, _ = _cli("runs", "--root", str(runs), "ls", "--json")
    assert [r["run_id"] for r in json.loads(out)] == order
    code, out, _ = _cli("runs", "ls", "--help")
    assert "oldest first" in out


def test_runs_query_leaves_a_running_runs_files_out_quietly(root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(root, runs)
    live = runs / "20240101T000003Z-live-canary"
    shutil.copytree(root / "20240101T000000-a", live)
    m = json.loads((live / "manifest.json").read_text())
    (live / "manifest.json").write_text(json.dumps(m | {"status": "running", "digest": None}))
    (live / "summary.json").unlink()
    for name in ("events.parquet", "equity.parquet"):  # being written: no Parquet footer yet
        data = (live / name).read_bytes()
        (live / name).write_bytes(data[: len(data) // 2])
    cat = Catalog(runs)
    q = cat.query("SELECT DISTINCT run_id FROM events ORDER BY 1")
    assert q["run_id"].to_list() == ["20240101T000000-a", "20240101T000001-b"]
    assert cat.warnings == [] and cat.notes == [
        "1 running run left out of the events and equity views (files still being written)"
    ]
    code, out, err = _cli("runs", "--root", str(runs), "query", "SELECT status, count(*) AS n FROM runs GROUP BY 1")
    assert code == 0 and "running" in out
    assert err.splitlines() == [f"note: {cat.notes[0]}"]
    # a finished run's damaged file is still a warning
    (runs / "20240101T000001-b" / "equity.parquet").write_text("junk\n")
    code, out, err = _cli("runs", "--root", str(runs), "query", "SELECT count(*) AS n FROM equity", "--csv")
    assert code == 0 and out == "n\n61\n"
    assert [line.split(":")[0] for line in err.splitlines()] == ["warning", "note"]
