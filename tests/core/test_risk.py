"""Each pre-trade rejection of the PerpsBot, tripped from a tape (issue 3)."""

from __future__ import annotations

from typing import Any

from perpsim.core.events import Quote, Status, Trade
from perpsim.core.instruments import Instrument
from perpsim.tapes.memory import MemoryTape
from tests.helpers import T0, S, cycle_ts, kinds, mark_tape, run
from tests.scripted import Scripted

LOOSE: dict[str, Any] = {
    "enabled": True,
    "max_leverage": 20.0,
    "min_liquidation_buffer_pct": 0.0,
    "max_exposure_pct": 100.0,
    "max_position_pct_per_symbol": 100.0,
    "daily_loss_limit": 1e12,
    "slippage_guard_bps": 1e9,
    "volatility_warn": 1e9,
    "volatility_reduce_only": 1e9,
    "volatility_kill": 1e9,
}


def attempt(orders: list[list[Any]], risk: dict[str, Any], events=None, overrides_venue=None, **kw: Any):
    evs = events if events is not None else mark_tape([100.0, 100.0, 100.0])
    overrides = {"risk": {**LOOSE, **risk}, "venue": overrides_venue or {}}
    return run(evs, strategy=Scripted, params={"orders": orders}, overrides=overrides, **kw)


def reasons(r) -> list[str]:
    return [x["reason"] for x in kinds(r, "reject")]


def test_loose_limits_let_the_order_through() -> None:
    r = attempt([[1, "BTC-PERP", "buy", 10.0]], {})
    assert reasons(r) == [] and len(kinds(r, "fill")) == 1


def test_kill_switch_rejects_everything() -> None:
    assert reasons(attempt([[1, "BTC-PERP", "buy", 1.0]], {"kill_switch": True})) == ["kill_switch"]


def test_reduce_only_mode_rejects_orders_that_open() -> None:
    r = attempt([[1, "BTC-PERP", "buy", 1.0], [2, "BTC-PERP", "sell", 0.4]], {"reduce_only": True})
    assert reasons(r) == ["reduce_only_mode", "reduce_only_mode"]


def test_leverage_cap() -> None:
    # 2,500 * 100 = 250,000 notional on 100,000 equity = 2.5x > 1
    assert reasons(attempt([[1, "BTC-PERP", "buy", 2500.0]], {"max_leverage": 1.0})) == ["leverage"]


def test_night_leverage_cap_binds_by_utc_hour() -> None:
    # T0 is 22:14 UTC: outside day hours 08-20, so the night cap applies
    r = attempt([[1, "BTC-PERP", "buy", 600.0]], {"night_leverage_cap": 0.5, "day_leverage_cap": 5.0})
    assert reasons(r) == ["leverage"]


def test_liquidation_buffer() -> None:
    # notional 100,000 at cap 5: (100,000 - 20,000) / 100,000 = 0.8 < 0.9
    r = attempt([[1, "BTC-PERP", "buy", 1000.0]], {"max_leverage": 5.0, "min_liquidation_buffer_pct": 0.9})
    assert reasons(r) == ["liquidation_buffer"]


def test_symbol_notional_cap() -> None:
    r = attempt([[1, "BTC-PERP", "buy", 20.0]], {"max_notional_per_symbol": {"BTC-PERP": 1000.0}})
    assert reasons(r) == ["symbol_notional_cap"]


def test_symbol_share_of_equity() -> None:
    assert reasons(attempt([[1, "BTC-PERP", "buy", 300.0]], {"max_position_pct_per_symbol": 0.2})) == [
        "symbol_exposure"
    ]


def test_total_exposure_counts_other_symbols() -> None:
    evs = sorted(
        mark_tape([100.0, 100.0, 100.0]) + mark_tape([100.0, 100.0, 100.0], symbol="ETH-PERP"), key=lambda e: e.ts
    )
    r = attempt(
        [[1, "ETH-PERP", "buy", 150.0], [2, "BTC-PERP", "buy", 150.0]],
        {"max_position_pct_per_symbol": 0.2, "max_exposure_pct": 0.25},
        events=evs,
    )
    assert reasons(r) == ["total_exposure"]


def test_projected_maintenance_buffer_uses_instrument_rate() -> None:
    inst = {"BTC-PERP": Instrument(symbol="BTC-PERP", tick=0.1, lot=0.0001, maintenance_rate=0.5)}
    tape = MemoryTape(mark_tape([100.0, 100.0]), instruments=inst)
    risk = {**LOOSE, "max_leverage": 5.0, "min_liquidation_buffer_pct": 0.7}
    # 70,000 notional: liquidation buffer 1 - 70/500 = 0.86 passes; maintenance 1 - 0.5*0.7 = 0.65 < 0.7
    r = run(tape, strategy=Scripted, params={"orders": [[1, "BTC-PERP", "buy", 700.0]]}, overrides={"risk": risk})
    assert reasons(r) == ["maintenance_buffer"]
    ok = run(tape, strategy=Scripted, params={"orders": [[1, "BTC-PERP", "buy", 500.0]]}, overrides={"risk": risk})
    assert reasons(ok) == []


def test_projected_maintenance_buffer_rates_each_position_by_its_own_instrument() -> None:
    inst = {
        "BTC-PERP": Instrument(symbol="BTC-PERP", tick=0.1, lot=0.0001, maintenance_rate=0.5),
        "ETH-PERP": Instrument(symbol="ETH-PERP", tick=0.1, lot=0.0001, maintenance_rate=0.05),
    }
    evs = sorted(mark_tape([100.0] * 3) + mark_tape([100.0] * 3, symbol="ETH-PERP"), key=lambda e: e.ts)
    tape = MemoryTape(evs, instruments=inst)
    risk = {**LOOSE, "min_liquidation_buffer_pct": 0.895}
    orders = [[1, "BTC-PERP", "buy", 200.0], [2, "ETH-PERP", "buy", 200.0]]
    r = run(tape, strategy=Scripted, params={"orders": orders}, overrides={"risk": risk})
    # BTC alone: 0.5 * 20,000 = 10,000 of 100,000: 0.9 passes. Then ETH: 10,000 + 0.05 * 20,000
    # = 11,000 of 99,992 (after the 8 USD BTC fee): 0.89 < 0.895. At ETH's rate for both
    # (0.05 * 40,000 = 2,000) it would be 0.98 and pass.
    assert reasons(r) == ["maintenance_buffer"]
    assert [f["symbol"] for f in kinds(r, "fill")] == ["BTC-PERP"]


def test_slippage_guard_on_wide_spread() -> None:
    q = Quote(ts=T0 + 2 * S, recv_ts=T0 + 2 * S, symbol="BTC-PERP", bid=99.0, bid_size=10, ask=101.0, ask_size=10)
    evs = sorted([*mark_tape([100.0, 100.0]), q], key=lambda e: e.ts)
    # half spread = 1 / 100 = 100 bps > 50
    assert reasons(attempt([[1, "BTC-PERP", "buy", 1.0]], {"slippage_guard_bps": 50.0}, events=evs)) == [
        "slippage_guard"
    ]
    assert reasons(attempt([[1, "BTC-PERP", "buy", 1.0]], {"slippage_guard_bps": 150.0}, events=evs)) == []


def test_mark_staleness_warns_then_blocks() -> None:
    evs: list[Any] = [Trade(ts=T0 + S, recv_ts=T0 + S, symbol="BTC-PERP", price=100.0, size=1, side=1)]
    evs.append(Status(ts=cycle_ts(12), recv_ts=cycle_ts(12), symbol="BTC-PERP", text="heartbeat"))
    # cycle 4: age 3m59s > 180 s (warn); cycle 7: age 6m59s > 360 s (block)
    r = attempt([[4, "BTC-PERP", "buy", 1.0], [7, "BTC-PERP", "buy", 1.0]], {}, events=evs)
    assert reasons(r) == ["mark_stale"]
    warns = [g for g in kinds(r, "guard") if g["reason"] == "mark_stale_warning"]
    assert len(warns) == 1 and warns[0]["ts"] == cycle_ts(4)


def test_max_trade_value() -> None:
    assert reasons(attempt([[1, "BTC-PERP", "buy", 2.0]], {"max_trade_value": 100.0})) == ["max_trade_value"]


def test_position_caps() -> None:
    r = attempt([[1, "BTC-PERP", "buy", 2.0]], {"max_position_size": {"BTC-PERP": 1.0}})
    assert reasons(r) == ["position_cap"]
    assert reasons(attempt([[1, "BTC-PERP", "buy", 2.0]], {"max_position_value": 150.0})) == ["position_value_cap"]


def test_checks_run_in_the_documented_order() -> None:
    # an order failing both leverage and max_trade_value is rejected for leverage (earlier check)
    r = attempt([[1, "BTC-PERP", "buy", 2500.0]], {"max_leverage": 1.0, "max_trade_value": 100.0})
    assert reasons(r) == ["leverage"]


def test_position_caps_count_resting_orders_on_the_same_side() -> None:
    # five limit buys of 8 below the market: the first rests (8 <= 10); each later one
    # would make 16 if everything working filled, so it is refused; the price then falls
    # through 95 and only the first fills
    lim = {"type": "limit", "price": 95.0}
    fall = [
        Trade(ts=cycle_ts(3) + 2 * S, recv_ts=cycle_ts(3) + 2 * S, symbol="BTC-PERP", price=94.0, size=100.0, side=-1)
    ]
    r = attempt(
        [[1, "BTC-PERP", "buy", 8.0, lim] for _ in range(5)],
        {"max_position_size": {"BTC-PERP": 10.0}},
        events=mark_tape([100.0, 100.0, 100.0, 94.0, 94.0], extra=fall),
    )
    assert reasons(r) == ["position_cap"] * 4
    assert [f["qty"] for f in kinds(r, "fill")] == [8.0]
    # the same by value: 800 USD working, at mark 100, plus 800 more > 1,000
    r = attempt([[1, "BTC-PERP", "buy", 8.0, lim] for _ in range(2)], {"max_position_value": 1000.0})
    assert reasons(r) == ["position_value_cap"]


def test_orders_in_flight_count_against_the_caps() -> None:
    # 50 ms entry latency: the second and third market buys of the cycle are checked while
    # the first is still on its way, against 8 + 8 > 10
    r = attempt(
        [[1, "BTC-PERP", "buy", 8.0] for _ in range(3)],
        {"max_position_size": {"BTC-PERP": 10.0}},
        events=mark_tape([100.0] * 4, quotes=True),
        overrides_venue={"latency_ms": 50.0},
    )
    assert reasons(r) == ["position_cap", "position_cap"]
    assert [f["qty"] for f in kinds(r, "fill")] == [8.0]


def test_working_reduce_only_orders_do_not_count() -> None:
    # long 8; a reduce-only sell of 8 rests at 120; a sell of 10 flips to -2 (within the
    # cap of 8). Counting the resting reduce-only sell would make it -10 and refuse it.
    lim_sell = {"type": "limit", "price": 120.0, "reduce_only": True}
    r = attempt(
        [
            [1, "BTC-PERP", "buy", 5.0],
            [2, "BTC-PERP", "buy", 3.0],
            [3, "BTC-PERP", "sell", 8.0, lim_sell],
            [3, "BTC-PERP", "sell", 10.0],
        ],
        {"max_position_size": {"BTC-PERP": 8.0}},
        events=mark_tape([100.0] * 4),
    )
    assert reasons(r) == []
    assert [f["position_after"] for f in kinds(r, "fill")] == [5.0, 8.0, -2.0]


def test_a_reduce_only_order_larger_than_the_position_reduces() -> None:
    # long 100 at 100 (10,000 notional on 100,000 equity); a reduce-only sell of 2,000 is
    # clipped by the venue to 100, so it is not the flip to -1,900 (1.9x) that the
    # leverage cap of 1 would refuse
    r = attempt(
        [[1, "BTC-PERP", "buy", 100.0], [2, "BTC-PERP", "sell", 2000.0, {"reduce_only": True}]], {"max_leverage": 1.0}
    )
    assert reasons(r) == []
    assert [(f["qty"], f["position_after"]) for f in kinds(r, "fill")] == [(100.0, 100.0), (100.0, 0.0)]
    # in reduce-only mode (the daily loss guard: 100 * (100 - 98) = 200 > 100) it passes too
    r = attempt(
        [[1, "BTC-PERP", "buy", 100.0], [5, "BTC-PERP", "sell", 150.0, {"reduce_only": True}]],
        {"daily_loss_limit": 100.0},
        events=mark_tape([100.0, 100.0, 99.5, 98.0, 98.0, 98.0]),
    )
    assert reasons(r) == []
    assert kinds(r, "fill")[-1]["position_after"] == 0.0
    # a plain sell of 150 would flip the long: refused in reduce-only mode
    r = attempt(
        [[1, "BTC-PERP", "buy", 100.0], [5, "BTC-PERP", "sell", 150.0]],
        {"daily_loss_limit": 100.0},
        events=mark_tape([100.0, 100.0, 99.5, 98.0, 98.0, 98.0]),
    )
    assert reasons(r) == ["reduce_only_mode"]


def test_shorts_disabled_refuses_orders_that_open_or_grow_a_short() -> None:
    # long 2; with allow_shorts off a sell of 3 would flip to -1 and a sell from flat
    # would open a short (refused); a reduce-only sell of 5 is clipped to the long, so it
    # passes and closes it
    risk = {"allow_shorts": False}
    orders = [
        [1, "BTC-PERP", "buy", 2.0],
        [2, "BTC-PERP", "sell", 3.0],
        [2, "BTC-PERP", "sell", 5.0, {"reduce_only": True}],
    ]
    r = attempt([*orders, [3, "BTC-PERP", "sell", 1.0]], risk, events=mark_tape([100.0] * 4))
    assert reasons(r) == ["shorts_disabled", "shorts_disabled"]
    assert [f["position_after"] for f in kinds(r, "fill")] == [2.0, 0.0]
    # a resting sell of 2 is working: a second sell of 1 would leave -1 if both filled (a
    # spot venue would have locked the 2 for the resting sell)
    lim = {"type": "limit", "price": 120.0}
    r = attempt([[1, "BTC-PERP", "buy", 2.0], [2, "BTC-PERP", "sell", 2.0, lim], [2, "BTC-PERP", "sell", 1.0]], risk)
    assert reasons(r) == ["shorts_disabled"]


def test_demo_and_spot_are_long_only_for_any_strategy() -> None:
    for profile in ("demo", "spot"):
        r = run(
            mark_tape([100.0] * 3),
            strategy=Scripted,
            params={"orders": [[1, "BTC-PERP", "sell", 1.0]]},
            profile=profile,
        )
        assert reasons(r) == ["shorts_disabled"], profile
