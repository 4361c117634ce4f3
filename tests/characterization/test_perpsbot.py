"""Characterization of the PerpsBot, in the spirit of its origin's suite (issue 3 item 8).

These freeze behaviour a refactor must keep: mark windows, per-symbol error
isolation, price rejection, trading windows, background jobs and shutdown,
dry runs and profile locks. Guards and pre-trade rejections are tripped from
tapes in tests/core/test_guards.py and tests/core/test_risk.py.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import msgspec
import pytest

from perpsim.core.clock import ReplayClock
from perpsim.core.config import RunConfig
from perpsim.core.engine import Engine
from perpsim.core.errors import ConfigError
from perpsim.core.events import Quote, Trade
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.profiles import available, resolve_config
from perpsim.sim.replay import ReplayDriver
from perpsim.tapes.memory import MemoryTape
from tests.helpers import MIN, T0, S, cycle_ts, kinds, mark_tape, run
from tests.scripted import Scripted


class Window(Strategy):
    defaults: ClassVar[dict[str, Any]] = {"n": 35}

    @property
    def window(self) -> int:
        return int(self.params["n"])


def engine_for(strategy: Strategy, **cfg: Any) -> tuple[Engine, ReplayClock]:
    clock = ReplayClock(start_ns=T0)
    eng = Engine(clock=clock, strategy=strategy, config=RunConfig(**cfg))
    eng.start()
    return eng, clock


def feed(eng: Engine, clock: ReplayClock, ev: Any) -> None:
    clock.advance_to(ev.ts)
    eng.on_event(ev)


def trade(t: int, symbol: str, px: float) -> Trade:
    return Trade(ts=t, recv_ts=t, symbol=symbol, price=px, size=1.0, side=1)


def test_mark_window_keeps_max_short_long_plus_five() -> None:
    # short 10 / long 30 and 50 updates leave 35 marks
    from perpsim.core.baseline import MACrossover

    eng, clock = engine_for(MACrossover(short=10, long=30))
    for k in range(50):
        feed(eng, clock, trade(T0 + k * MIN + S, "BTC-PERP", 100.0 + k))
    clock.advance_to(T0 + 50 * MIN)
    marks = eng.ctx.marks("BTC-PERP")
    assert len(marks) == 35 and marks[-1] == 149.0 and marks[0] == 115.0


def test_symbol_error_leaves_other_symbols_updated_and_its_own_state_untouched() -> None:
    eng, clock = engine_for(Window(n=10))
    feed(eng, clock, trade(T0 + S, "BTC-PERP", 100.0))
    feed(eng, clock, trade(T0 + S, "ETH-PERP", 10.0))
    clock.advance_to(T0 + MIN)
    btc_ts = eng.market.window_ts[eng.market.ids["BTC-PERP"]]
    feed(eng, clock, trade(T0 + MIN + S, "BTC-PERP", math.nan))
    feed(eng, clock, trade(T0 + MIN + 2 * S, "ETH-PERP", 11.0))
    clock.advance_to(T0 + 2 * MIN)
    assert eng.ctx.marks("BTC-PERP") == [100.0]
    assert eng.market.window_ts[eng.market.ids["BTC-PERP"]] == btc_ts
    assert eng.ctx.marks("ETH-PERP") == [10.0, 11.0]
    (err,) = [e for e in eng.outbox.events if e.kind == "error"]
    assert err.symbol == "BTC-PERP" and err.reason == "invalid_price" and "nan" in (err.text or "")


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan])
def test_zero_negative_and_nan_prices_are_rejected(bad: float) -> None:
    eng, clock = engine_for(Window(n=5))
    feed(eng, clock, trade(T0 + S, "BTC-PERP", 100.0))
    feed(
        eng,
        clock,
        Quote(ts=T0 + 2 * S, recv_ts=T0 + 2 * S, symbol="BTC-PERP", bid=bad, bid_size=1, ask=101.0, ask_size=1),
    )
    feed(eng, clock, trade(T0 + 3 * S, "BTC-PERP", bad))
    clock.advance_to(T0 + MIN)
    assert eng.market.last_px[0] == 100.0 and math.isnan(eng.market.bid[0])
    assert [e.reason for e in eng.outbox.events if e.kind == "error"] == ["invalid_price"]


def test_trading_window_enforced_with_overnight_wrap() -> None:
    # T0 is 22:14 UTC; a window 22:16-22:18 admits cycles 2 and 3 only
    r = run(mark_tape([100.0] * 5), overrides={"trading_start": "22:16", "trading_end": "22:18"})
    decided = sorted({d["ts"] for d in kinds(r, "decision")})
    assert decided == [cycle_ts(2), cycle_ts(3)]
    assert [s["ts"] for s in kinds(r, "status")] == [cycle_ts(1), cycle_ts(4), cycle_ts(5)]
    # overnight: 22:17 → 00:00 admits 22:17 onward
    r2 = run(mark_tape([100.0] * 5), overrides={"trading_start": "22:17", "trading_end": "00:00"})
    assert sorted({d["ts"] for d in kinds(r2, "decision")}) == [cycle_ts(k) for k in (3, 4, 5)]


def test_trading_days_are_utc_weekdays() -> None:
    # T0 (2023-11-14 22:14 UTC) is a Tuesday: weekday 1
    on = run(mark_tape([100.0] * 3), overrides={"trading_days": [1]})
    off = run(mark_tape([100.0] * 3), overrides={"trading_days": [0, 2, 3, 4]})
    assert len(kinds(on, "decision")) == 3 and kinds(on, "status") == []
    assert kinds(off, "decision") == [] and len(kinds(off, "status")) == 3


def test_profiles_command_lists_and_resolves() -> None:
    from tests.helpers import cli

    code, out, _ = cli("profiles", "--json")
    assert code == 0 and set(json.loads(out)) == set(available())
    code, out, _ = cli("profiles", "canary")
    assert code == 0 and json.loads(out)["risk"]["max_trade_value"] == 100.0
    code, _, err = cli("profiles", "nope")
    assert code == 2 and "unknown profile 'nope'" in err


def test_background_jobs_started_in_order_and_cancelled_on_shutdown() -> None:
    cfg = resolve_config("prod")
    tape = MemoryTape(mark_tape([100.0] * 20))
    d = ReplayDriver(tape, cfg)
    d.run()
    # deadlines in (T0+1s, T0+1200s]; T0 = 1,700,000,040 s is 0 mod 60, 30 mod 45, 30 mod 90, 40 mod 300
    jobs = d.engine.bot.jobs_run
    assert jobs == {"guards": 20, "reconcile_orders": 27, "reconcile_positions": 13, "snapshot": 4, "metrics": 20}
    assert d.engine.cycles == 20
    assert d.clock.timers() == [] and d.clock.next_due == ReplayClock.NEVER


def test_jobs_at_equal_deadlines_run_guards_cycle_reconcilers_snapshot_then_rows() -> None:
    from fractions import Fraction

    from perpsim.core.events import Funding

    cfg = msgspec.structs.replace(resolve_config("prod"), params={"orders": [[1, "BTC-PERP", "buy", 1.0]]})
    # T0 + 60 s = 1,700,000,100 s is a multiple of 900 s = lcm(45, 60, 90, 300): every job is due
    t = T0 + MIN
    tape = MemoryTape(mark_tape([100.0] * 3, extra=[Funding(ts=t, recv_ts=t, symbol="BTC-PERP", rate=0.001)]))
    d = ReplayDriver(tape, cfg, Scripted)
    d.engine.bot.known_orders[999] = "BTC-PERP"  # injected mismatches
    d.engine.bot.known_positions["ETH-PERP"] = Fraction(1)
    d.run()
    at_t = [(e.kind, e.reason) for e in d.events if e.ts == t]
    assert at_t == [
        ("order", None),
        ("fill", None),
        ("cycle", None),
        ("reconcile", "position_mismatch"),
        ("snapshot", None),
        ("funding", None),
    ]
    first = next((e.ts, e.reason) for e in d.events if e.kind == "reconcile")
    assert first == (T0 + 15 * S, "order_not_at_venue")  # the 45 s job's first deadline


def test_dry_run_places_nothing() -> None:
    r = run(
        mark_tape([10.0, 10.0, 10.0, 10.0, 13.0]),
        profile="dev",
        overrides={"max_cycles": 10},
        params={"short": 2, "long": 3},
    )
    assert [d["text"] for d in kinds(r, "decision")][-1] == "BUY"
    assert kinds(r, "order") == [] and kinds(r, "fill") == []
    assert [x["reason"] for x in kinds(r, "reject")] == ["dry_run"]


def test_dev_profile_runs_one_cycle_unless_told() -> None:
    assert run(mark_tape([100.0] * 5), profile="dev").summary["cycles"] == 1
    assert run(mark_tape([100.0] * 5), profile="dev", overrides={"max_cycles": 3}).summary["cycles"] == 3


def test_cycles_outside_the_trading_window_count_toward_max_cycles() -> None:
    # the tape's cycles run 22:15-22:44 UTC; the window opens at 22:20. Three cycles are
    # three cycles (each says it is outside the window), then the run stops cycling: a dev
    # run whose window never opens still stops.
    over = {"max_cycles": 3, "trading_start": "22:20", "trading_end": "22:25"}
    r = run(mark_tape([100.0] * 30), profile="prod", overrides=over)
    assert r.summary["cycles"] == 3
    assert [s["ts"] for s in kinds(r, "status") if s["reason"] == "outside_trading_window"] == [
        cycle_ts(k) for k in (1, 2, 3)
    ]
    assert kinds(r, "decision") == []


def test_canary_locks_refuse_overrides() -> None:
    with pytest.raises(ConfigError, match=r"risk\.max_trade_value is locked by profile 'canary'"):
        resolve_config("canary", overrides={"risk": {"max_trade_value": 1000.0}})
    with pytest.raises(ConfigError, match="interval_s is locked"):
        resolve_config("canary", overrides={"interval_s": 60.0})
    cfg = resolve_config("canary", overrides={"params": {"short": 3, "long": 8}})
    assert cfg.risk.max_trade_value == 100.0 and cfg.params["short"] == 3


def test_profiles_ship_and_resolve() -> None:
    assert available() == ["backtest", "canary", "demo", "dev", "prod", "spot"]
    for name in available():
        cfg = resolve_config(name)
        assert cfg.profile == name
        assert cfg.risk.enabled == (name != "backtest")
    canary = resolve_config("canary")
    assert (canary.symbols, canary.interval_s, canary.venue.starting_balance) == (["BTC-PERP"], 5.0, 1000.0)
    assert resolve_config("prod").risk.max_leverage == 3.0


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"risk": {"max_levrage": 2.0}}, "max_levrage"),
        ({"risk": {"max_leverage": "high"}}, r"max_leverage"),
        ({"risk": {"daily_loss_limit": -1.0}}, r"risk.daily_loss_limit must not be negative"),
        ({"risk": {"max_leverage": 50.0}}, "exceeds the venue maximum"),
        ({"interval_s": 0}, "interval_s must be positive"),
    ],
)
def test_bad_config_is_refused_naming_the_key(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("prod", overrides=over)


class Counting(Strategy):
    defaults: ClassVar[dict[str, Any]] = {}

    def on_cycle(self, ctx: Context) -> None:
        pass


def test_shutdown_is_bounded_and_idempotent() -> None:
    eng, clock = engine_for(Counting())
    eng.stop()
    eng.stop()
    assert clock.timers() == []


def test_a_dry_run_shows_what_the_pre_trade_checks_say() -> None:
    # dev with a 1 USD trade cap: the BUY the test above places as dry_run is refused by
    # the checks first, and says so (the dry run rejected every order before the checks)
    r = run(
        mark_tape([10.0, 10.0, 10.0, 10.0, 13.0]),
        profile="dev",
        overrides={"max_cycles": 10, "risk": {"max_trade_value": 1.0}},
        params={"short": 2, "long": 3},
    )
    assert [x["reason"] for x in kinds(r, "reject")] == ["max_trade_value"]
    assert kinds(r, "order") == [] and kinds(r, "fill") == []
