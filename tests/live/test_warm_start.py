"""Warm restarts: engine snapshots (core/snapshot.py) and ``--warm-from`` in the live driver."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import msgspec
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from perpsim.cli_tapes import tapes
from perpsim.core import snapshot as snap
from perpsim.core.baseline import MACrossover, SymbolState
from perpsim.core.clock import ReplayClock
from perpsim.core.engine import Engine
from perpsim.core.errors import InputError
from perpsim.core.ledger import Position
from perpsim.live.driver import LiveDriver, LiveOptions, find_latest_recording
from perpsim.live.feed import FeedConfig
from perpsim.sim.profiles import resolve_config
from perpsim.sim.replay import ReplayDriver, replay
from perpsim.sim.runs import summarize
from perpsim.tapes.reader import Tape, open_tape
from perpsim.tapes.schema import META_KEY, WarmStart, decode_meta
from tests.live.session import INTERVAL_S, run_session


def _engine(profile: str = "canary") -> Engine:
    cfg = resolve_config(profile)
    return Engine(clock=ReplayClock(10**18), strategy=MACrossover(**cfg.params), config=cfg)


def test_snapshot_restores_ledger_windows_guards_and_strategy_state_exactly() -> None:
    a = _engine()
    a.ledger.cash -= 12_345
    a.ledger.fees += 12_345
    a.ledger.positions["BTC-PERP"] = Position(qty=Fraction(3, 10000), entry=Fraction(600001, 10), opened_ns=7)
    sid = a.market.ids["BTC-PERP"]
    a.market.windows[sid].extend([60000.0, 60010.5, 59990.1])
    a.market.window_ts[sid] = 10**18
    assert a.bot is not None
    a.bot.guards.state.day = 11574
    a.bot.guards.state.day_start_equity_units = 99_000_000_000
    a.bot.guards.state.daily_loss_tripped = True
    a.strategy.state["BTC-PERP"] = SymbolState(pending=1, pending_left=2, ref=Fraction(59990, 1))
    a.cycles = 42
    data = snap.encode(snap.snapshot(a))

    b = _engine()
    pretrade_state = b.bot.guards.state if b.bot is not None else None
    snap.restore(b, snap.decode(data))
    assert b.ledger.cash == a.ledger.cash and b.ledger.fees == a.ledger.fees and b.ledger.reconciles()
    assert b.ledger.positions["BTC-PERP"] == a.ledger.positions["BTC-PERP"]
    assert list(b.market.windows[sid]) == [60000.0, 60010.5, 59990.1]
    assert b.bot is not None and b.bot.guards.state == a.bot.guards.state
    assert b.bot.guards.state is pretrade_state  # restored in place: the pre-trade checks hold it
    assert b.strategy.state == a.strategy.state and b.cycles == 42


def test_a_snapshot_from_before_liq_breached_keeps_the_buffer_hold_releasable() -> None:
    # an older snapshot's guards held BTC reduce-only for its liquidation buffer with no
    # liq_breached field: restored, the hold must be the buffer's, so a recovered buffer
    # releases it (else the symbol stayed reduce-only for the whole session)
    a = _engine()
    assert a.bot is not None
    a.bot.guards.state.reduce_only_symbols = ["BTC-PERP"]
    doc = msgspec.msgpack.decode(snap.encode(snap.snapshot(a)))
    guards = doc["guards"] if isinstance(doc, dict) else None
    assert guards is not None and guards.pop("liq_breached") == []
    b = _engine()
    snap.restore(b, snap.decode(msgspec.msgpack.encode(doc)))
    assert b.bot is not None and b.bot.guards.state.liq_breached == ["BTC-PERP"]
    b.bot.guards.evaluate(10**18)  # flat: no breach
    assert b.bot.guards.state.reduce_only_symbols == []


def test_snapshot_of_another_bot_is_refused() -> None:
    data = snap.encode(snap.snapshot(_engine("canary")))
    with pytest.raises(InputError, match="under profile 'canary' cannot be restored"):
        snap.restore(_engine("prod"), snap.decode(data))
    with pytest.raises(InputError, match="not an engine snapshot"):
        snap.decode(b"\x01\x02")


def test_live_warm_start_replays_the_tail_and_restores_the_saved_state(
    tape: Path, tmp_path: Path, fast_config: Path
) -> None:
    first = run_session(tape, tmp_path, fast_config, duration_s=3.0, name="first")
    assert first.result.summary["fills"] >= 1
    assert find_latest_recording(tmp_path) == first.result.record_dir
    cfg = resolve_config(
        "backtest", config_file=fast_config, overrides={"symbols": ["BTC-PERP"], "interval_s": INTERVAL_S}
    )
    second = LiveDriver(
        cfg, LiveOptions(feed=FeedConfig(url="ws://127.0.0.1:9"), record_root=tmp_path, run_dir=tmp_path / "second")
    )
    used = second.warm_start("auto")
    assert used == first.result.record_dir
    assert second.restored and second.warm_rows > 0
    old, new = first.driver.engine, second.engine
    assert new.ledger.cash == old.ledger.cash and new.ledger.realized == old.ledger.realized
    assert {s: p.qty for s, p in new.ledger.positions.items()} == {s: p.qty for s, p in old.ledger.positions.items()}
    sid = new.market.ids["BTC-PERP"]
    assert list(new.market.windows[sid]) == list(old.market.windows[old.market.ids["BTC-PERP"]])
    assert new.strategy.state == old.strategy.state
    assert new.started and not new.equity_rows  # the replayed past is not part of the new run


def test_warm_session_recording_replays_to_the_live_runs_digest_and_state(tape: Path, tmp_path: Path) -> None:
    """A warm session's recording holds the warm-up and the go-live state: replay redoes both."""
    # the fast MA with the PerpsBot's guards (the day's PnL); a short volatility window keeps
    # the warm-up tail (window + 2 cycles, about 2.75 s) shorter than the first session, so
    # the state at go-live comes from the snapshot, not from re-running all of the first
    # session (annualized over 0.25 s cycles any volatility trips the guard: thresholds off)
    fast_config = tmp_path / "guarded.toml"
    fast_config.write_text(
        "[params]\nshort = 2\nlong = 4\n\n[risk]\nenabled = true\nvolatility_window = 2\n"
        "volatility_warn = 1e9\nvolatility_reduce_only = 1e9\nvolatility_kill = 1e9\n"
    )
    first = run_session(tape, tmp_path, fast_config, duration_s=5.0, name="first")
    assert first.result.summary["fills"] >= 1  # the restored ledger is not the starting one
    second = run_session(
        tape, tmp_path, fast_config, duration_s=3.0, name="second", warm_from=str(first.result.record_dir)
    )
    live = second.driver
    assert second.result.status == "complete" and live.restored and live.warm_rows > 0
    assert live.engine.bot is not None and live.engine.bot.guards.state.day is not None

    recording = open_tape(second.result.record_dir)
    warm = recording.meta.warm if recording.meta.warm is not None else _first_file_warm(recording)
    assert warm is not None and warm.rows == live.warm_rows and warm.snapshot is not None
    assert recording.num_rows > warm.rows  # the live rows follow the warm-up

    cfg = resolve_config(
        "backtest", config_file=fast_config, overrides={"symbols": ["BTC-PERP"], "interval_s": INTERVAL_S}
    )
    driver = ReplayDriver(recording, cfg)
    driver.run()
    assert not [w for w in driver.engine.warnings if "timer" in w], driver.engine.warnings
    assert driver.timer_mode == "tape"
    assert driver.digest.hexdigest() == second.result.digest
    assert driver.digest.count == live.digest.count > 0
    eng = driver.engine
    assert eng.bot is not None and eng.bot.guards.state == live.engine.bot.guards.state  # the day's PnL
    assert eng.ledger.cash == live.engine.ledger.cash and eng.ledger.cash_start == live.engine.ledger.cash_start
    assert eng.ledger.positions == live.engine.ledger.positions
    assert eng.strategy.state == live.engine.strategy.state
    replayed = summarize(driver, 1.0)
    for key in ("rows", "cycles", "orders", "fills", "units", "positions", "max_drawdown", "first_ns", "last_ns"):
        assert replayed[key] == second.result.summary[key], key
    # the summary counts this session's own rows and events, as its run directory holds them
    kinds = pl.read_parquet(second.result.run_dir / "events.parquet")["kind"].value_counts()
    held = dict(zip(kinds["kind"].to_list(), kinds["count"].to_list(), strict=True))
    summary = second.result.summary
    for key, kind in (("decisions", "decision"), ("orders", "order"), ("fills", "fill")):
        assert summary[key] == held.get(kind, 0), key
    assert summary["rows"] == recording.num_rows - warm.rows
    # the drift checklist's feed figures cover the session's own rows, not the warm-up's
    from perpsim.sim.drift import checklist, load_run

    def rate(frame: pl.DataFrame) -> float:  # the slowest symbol's price rows per minute
        prices = frame.filter(pl.col("kind").is_in(["trade", "quote", "mark"]))
        span = (frame["recv_ts"].max() - frame["recv_ts"].min()) / 60e9
        return round(min(prices.group_by("symbol").len()["len"]) / span, 3)

    every = pl.read_parquet(list(recording.files)).with_columns(pl.col("kind").cast(pl.Utf8))
    got = checklist(load_run(second.result.run_dir))["mark_updates_per_min"]["value"]
    assert got == rate(every.slice(warm.rows)) != rate(every)

    cli = replay(second.result.record_dir, profile="backtest", config=fast_config, interval_s=INTERVAL_S)
    assert cli.digest == second.result.digest

    # compacted into one file (perpsim tapes slice), the recording still replays to the live digest
    compact = tmp_path / "compact.parquet"
    res = CliRunner().invoke(tapes, ["slice", str(second.result.record_dir), "--out", str(compact)])
    assert res.exit_code == 0, res.output
    assert open_tape(compact).meta.warm == warm
    again = replay(compact, profile="backtest", config=fast_config, interval_s=INTERVAL_S)
    assert again.digest == second.result.digest


def _first_file_warm(recording: Tape) -> WarmStart | None:
    kv = pq.read_metadata(recording.files[0]).metadata or {}
    return decode_meta(kv.get(META_KEY)).warm
