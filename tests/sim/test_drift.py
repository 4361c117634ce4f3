"""Drift reviews: identical runs agree exactly; a changed parameter diverges where it should."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import perpsim
from perpsim.core.errors import CheckFailed, ConfigError, InputError
from perpsim.sim import drift as d
from perpsim.tapes import synth
from tests.helpers import cli as _cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    tape = synth(hours=2, symbols=["BTC-PERP", "ETH-PERP"], seed=11, out=root / "t.parquet")
    other = synth(hours=2, symbols=["BTC-PERP", "ETH-PERP"], seed=12, out=root / "u.parquet")
    out = {"tape": tape}
    for name, kw in {
        "a": {},
        "a2": {},
        "size": {"params": {"position_fraction": 0.1}},
        "long": {"params": {"long": 10}},
    }.items():
        perpsim.replay(tape, out=root / name, **kw)
        out[name] = root / name
    perpsim.replay(other, out=root / "other")
    out["other"] = root / "other"
    return out


def test_drift_identical_runs_are_zero(runs: dict[str, Path]) -> None:
    rep = d.compare_runs(runs["a"], runs["a2"])
    assert rep.identical and rep.ok and rep.first_divergence is None
    assert rep.decision_agreement == 1.0
    assert all(c["diff"] == 0 for c in rep.counts.values())
    assert all(m["diff"] == 0 for m in rep.money.values())
    assert rep.equity_max_abs_diff == 0
    assert all(p["cycles_differing"] == 0 for p in rep.positions.values())
    assert rep.fill_drift_bps["matched"] > 0 and rep.fill_drift_bps["max"] == 0
    assert rep.timing_ms["max"] == 0 and rep.timing_ms["n"] == rep.run_a["events"]


def test_drift_order_size_change_diverges_at_the_first_order(runs: dict[str, Path]) -> None:
    ev = pl.read_parquet(runs["a"] / "events.parquet")
    first_order = ev.with_row_index().filter(pl.col("kind") == "order").row(0, named=True)
    rep = d.compare_runs(runs["a"], runs["size"])
    fd = rep.first_divergence
    assert fd is not None
    assert fd["index"] == first_order["index"]
    assert fd["kind_a"] == fd["kind_b"] == "order"
    assert fd["ts_a"] == fd["ts_b"] == first_order["ts"]
    assert fd["fields"] == ["qty"]
    assert fd["b"]["qty"] == pytest.approx(2 * fd["a"]["qty"], rel=1e-3)
    assert rep.decision_agreement == 1.0  # same decisions, bigger orders
    assert {"key": "params.position_fraction", "a": 0.05, "b": 0.1} in rep.config_diff  # A: the default
    assert not rep.ok and [c["name"] for c in rep.failed] == ["cycles with a position diff"]


def test_drift_window_change_diverges_at_the_first_decision_out_of_warm_up(runs: dict[str, Path]) -> None:
    b = pl.read_parquet(runs["long"] / "events.parquet").with_row_index()
    warm = pl.col("reason").is_in(["warming_up", "no_mark"])
    dec = b.filter((pl.col("kind") == "decision") & ~warm).row(0, named=True)
    rep = d.compare_runs(runs["a"], runs["long"])
    fd = rep.first_divergence
    assert fd is not None
    assert (fd["index"], fd["kind_b"], fd["ts_b"]) == (dec["index"], "decision", dec["ts"])
    assert fd["a"]["reason"] == "warming_up" and "reason" in fd["fields"]
    assert rep.decision_agreement is not None and rep.decision_agreement < 1.0
    with pytest.raises(CheckFailed, match="decision agreement"):
        d.drift(runs["a"], runs["long"])


def test_drift_divergences_and_paths_line_up(runs: dict[str, Path]) -> None:
    ra, rb = d.load_run(runs["a"]), d.load_run(runs["size"])
    div = d.divergences(ra, rb, limit=None)
    assert div.height > 0 and set(div["kind"].unique()) <= {"order", "fill", "funding", "cycle"}
    pos = d.position_paths(ra, rb)
    assert pos.filter(pl.col("diff") != 0).height > 0
    assert d.equity_paths(ra, rb).height == ra.equity.height


def test_drift_thresholds_from_toml_and_options(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("[drift]\nmax_fill_count_diff = 3\nmin_decision_agreement = 0.5\n")
    th = d.load_thresholds(f, max_fill_count_diff=1)
    assert (th.max_fill_count_diff, th.min_decision_agreement) == (1, 0.5)
    f.write_text("max_fill_diff = 3\n")
    with pytest.raises(ConfigError, match="max_fill_diff"):
        d.load_thresholds(f)
    f.write_bytes(b"\xff\xfe")  # not UTF-8
    with pytest.raises(ConfigError, match=r"t.toml: not valid TOML: 'utf-8' codec can't decode"):
        d.load_thresholds(f)


def test_drift_checklist_says_what_only_live_provides(runs: dict[str, Path]) -> None:
    cl = d.checklist(d.load_run(runs["a"]))
    assert cl["mark_updates_per_min"]["value"] > 0
    assert cl["mark_freshness_p95_s"]["value"] is not None
    assert cl["order_failure_rate"]["value"] == 0.0
    assert cl["memory_mb"]["value"] is None and "live" in cl["memory_mb"]["note"]
    assert cl["heartbeat_lag_p95_ms"]["value"] == 0.0 and "replay" in cl["heartbeat_lag_p95_ms"]["note"]


def test_drift_cli_identical_exits_0_and_json_parses(runs: dict[str, Path]) -> None:
    code, out, _ = _cli("drift", str(runs["a"]), str(runs["a2"]), "--json")
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["identical"] and data["ok"] and data["first_divergence"] is None


def test_drift_cli_threshold_exceeded_exits_1_with_reports(runs: dict[str, Path], tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    code, out, err = _cli("drift", str(runs["a"]), str(runs["size"]), "--report", str(html))
    assert code == 1
    assert "first divergence at event" in out and "48-hour checklist" in out
    assert err.strip().splitlines() == [err.strip()] and "cycles with a position diff" in err
    text = html.read_text()
    assert text.startswith("<!doctype html>") and text.count("data:image/png;base64,") == 3
    md = tmp_path / "r.md"
    code, _, _ = _cli(
        "drift", str(runs["a"]), str(runs["size"]), "--report", str(md), "--max-position-cycles-differing", "1"
    )
    assert code == 0 and "## First divergence" in md.read_text()


@pytest.mark.parametrize(
    "setup, needle",
    [
        ("missing", "no such run directory"),
        ("no_manifest", "manifest.json: missing"),
        ("corrupt_manifest", "manifest.json: not valid JSON"),
        ("corrupt_events", "events.parquet: not a readable Parquet file"),
    ],
)
def test_drift_cli_bad_run_dir_exits_2_naming_the_file(
    runs: dict[str, Path], tmp_path: Path, setup: str, needle: str
) -> None:
    bad = tmp_path / "bad"
    if setup != "missing":
        bad.mkdir()
        for f in ("manifest.json", "events.parquet", "equity.parquet", "summary.json"):
            (bad / f).write_bytes((runs["a"] / f).read_bytes())
        if setup == "no_manifest":
            (bad / "manifest.json").unlink()
        elif setup == "corrupt_manifest":
            (bad / "manifest.json").write_text("{not json")
        else:
            (bad / "events.parquet").write_bytes(b"garbage")
    code, _, err = _cli("drift", str(runs["a"]), str(bad))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and str(bad) in err


def test_drift_cli_different_tapes_refused_unless_forced(runs: dict[str, Path]) -> None:
    code, _, err = _cli("drift", str(runs["a"]), str(runs["other"]))
    assert code == 2 and "different tapes" in err and "--force" in err and len(err.strip().splitlines()) == 1
    code, out, _ = _cli("drift", str(runs["a"]), str(runs["other"]), "--force")
    assert code == 1 and "forced: the runs replayed different tapes" in out


def test_drift_incompatible_versions_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    for f in ("events.parquet", "equity.parquet", "summary.json"):
        (b / f).write_bytes((runs["a"] / f).read_bytes())
    m = json.loads((runs["a"] / "manifest.json").read_text())
    m["perpsim_version"] = "7.0.0"
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="incompatible perpsim versions"):
        d.compare_runs(runs["a"], b)
    assert d.compare_runs(runs["a"], b, force=True).identical


def test_the_checklist_shows_both_runs_notes_when_they_differ() -> None:
    def item(a: str, b: str) -> dict[str, dict[str, str]]:
        return {"a": {"note": a}, "b": {"note": b}}

    assert d.checklist_note(item("0 of 175", "3 of 203")) == "A: 0 of 175; B: 3 of 203"
    assert d.checklist_note(item("same", "same")) == "same"
    assert d.checklist_note(item("", "only B")) == "only B"
    assert d.checklist_note(item("", "")) == ""


def test_drift_money_is_the_summarys_even_with_funding_at_the_last_cycle(tmp_path: Path) -> None:
    from importlib import resources

    sample = Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))
    a, b = tmp_path / "a", tmp_path / "b"
    perpsim.replay(sample, out=a)
    perpsim.replay(sample, out=b, profile="prod")
    units = {r: json.loads((r / "summary.json").read_text())["units"] for r in (a, b)}
    last_row = int(pl.read_parquet(a / "equity.parquet")["equity"][-1])
    assert last_row != units[a]["final_equity"]  # a funding payment after the last cycle's equity row
    rep = d.compare_runs(a, b, force=True)
    for run, side in ((a, "a"), (b, "b")):
        u = units[run]
        assert rep.money["final_equity"][side] == u["final_equity"] / 10**8  # exactly summary.json's
        assert rep.money["pnl"][side] == (u["final_equity"] - u["cash_start"]) / 10**8
        assert [rep.money[k][side] for k in ("realized", "fees", "funding")] == [
            u[k] / 10**8 for k in ("realized", "fees", "funding")
        ]
    code, out, _ = _cli("drift", str(a), str(b), "--json")
    assert code == 1 and json.loads(out)["money"]["final_equity"]["a"] == units[a]["final_equity"] / 10**8
    code, out, _ = _cli("drift", str(a), str(b))
    assert d.fmt_value(units[a]["final_equity"] / 10**8) in out


@pytest.mark.parametrize(
    "args, option",
    [
        (("--min-decision-agreement", "2"), "--min-decision-agreement"),
        (("--min-decision-agreement", "-0.1"), "--min-decision-agreement"),
        (("--max-position-cycles-differing", "1.5"), "--max-position-cycles-differing"),
        (("--max-fill-count-diff", "-1"), "--max-fill-count-diff"),
        (("--max-pnl-diff", "-5"), "--max-pnl-diff"),
    ],
)
def test_drift_refuses_a_share_outside_0_1_and_a_negative_limit(
    runs: dict[str, Path], args: tuple[str, ...], option: str
) -> None:
    code, out, err = _cli("drift", str(runs["a"]), str(runs["a2"]), *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and option in err
    code, _, _ = _cli("drift", str(runs["a"]), str(runs["a2"]), "--min-decision-agreement", "1")
    assert code == 0


def test_drift_thresholds_file_refuses_a_share_above_1(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("[drift]\nmin_decision_agreement = 2\n")
    with pytest.raises(ConfigError, match=r"t.toml: drift thresholds: .*<= 1.0 - at `\$.min_decision_agreement`"):
        d.load_thresholds(f)


def test_drift_config_diff_shows_the_default_a_run_used(runs: dict[str, Path], tmp_path: Path) -> None:
    rep = d.compare_runs(runs["a"], runs["long"])
    assert rep.config_diff == [{"key": "params.long", "a": 20, "b": 10}]  # MACrossover.defaults["long"]
    code, out, _ = _cli("drift", str(runs["a"]), str(runs["long"]))
    assert code == 1 and "config differs: params.long 20 → 10" in out and "None" not in out
    # a run that sets a parameter to its default does not differ from one that leaves it out
    base = {"strategy": "perpsim.core.baseline:MACrossover", "params": {}}
    assert d.config_diff(base, base | {"params": {"long": 20}}) == []
    # a strategy that cannot be imported: the run used its default, whatever that was
    gone = {"strategy": "no_such_module_here:Strategy", "params": {}}
    assert d.config_diff(gone, gone | {"params": {"short": 4}}) == [("params.short", d.DEFAULT, 4)]
    assert d.config_diff(base, base | {"params": {"per_symbol": {"BTC-PERP": {"short": 3}}}}) == [
        ("params.per_symbol.BTC-PERP.short", d.DEFAULT, 3)
    ]


def test_drift_money_comes_from_one_source_for_both_runs(tmp_path: Path) -> None:
    # run B lost its summary (it never finished): both sides' money then comes from events
    # and equity, so the final cycle's funding payment (in A's summary, not in its last
    # equity row) is not shown as a difference between the two
    from importlib import resources

    sample = Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))
    a, b = tmp_path / "a", tmp_path / "b"
    perpsim.replay(sample, out=a)
    perpsim.replay(sample, out=b)
    (b / "summary.json").unlink()
    rep = d.compare_runs(a, b)
    assert rep.money["funding"]["a"] != 0
    assert all(v["diff"] == 0 for v in rep.money.values()), rep.money
