"""The run catalog: runs under a root, listed, shown and queried with SQL in place."""

from __future__ import annotations

import json
from pathlib import Path

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
