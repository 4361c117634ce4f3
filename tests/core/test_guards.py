"""Every runtime guard of the PerpsBot, tripped from a tape (issue 3)."""

from __future__ import annotations

from typing import Any, ClassVar

from perpsim.core.guards import annualized_vol
from perpsim.core.strategy import Context, Strategy
from tests.core.test_risk import LOOSE
from tests.helpers import MIN, cycle_ts, kinds, mark_tape, run
from tests.scripted import Scripted


def guarded(marks: list[float], orders: list[list[Any]], risk: dict[str, Any], **kw: Any):
    return run(
        mark_tape(marks, **kw.pop("tape", {})),
        strategy=kw.pop("strategy", Scripted),
        params=kw.pop("params", {"orders": orders}),
        overrides={"risk": {**LOOSE, **risk}},
        **kw,
    )


def test_daily_loss_trips_reduce_only_and_then_closes_pass() -> None:
    # long 100 @ 100; the price falls to 98: day PnL -200 < -100
    marks = [100.0, 100.0, 99.5, 98.0, 98.0, 98.0]
    orders = [[1, "BTC-PERP", "buy", 100.0], [5, "BTC-PERP", "buy", 1.0], [6, "BTC-PERP", "sell", 100.0]]
    r = guarded(marks, orders, {"daily_loss_limit": 100.0})
    (trip,) = [e for e in kinds(r, "reduce_only") if e["reason"] == "daily_loss"]
    assert trip["text"] == "on" and trip["amount"] == -200 * 10**8 - 4 * 10**8 - 0  # -200 PnL, -4 entry fee
    assert trip["ts"] == cycle_ts(4)
    assert [x["reason"] for x in kinds(r, "reject")] == ["reduce_only_mode"]
    assert kinds(r, "fill")[-1]["position_after"] == 0.0  # the close passed


def test_daily_loss_cancels_open_orders() -> None:
    marks = [100.0, 100.0, 98.0, 98.0]
    orders = [
        [1, "BTC-PERP", "buy", 100.0],
        [1, "BTC-PERP", "buy", 1.0, {"type": "limit", "price": 50.0}],
    ]
    r = guarded(marks, orders, {"daily_loss_limit": 100.0})
    (resting,) = [o for o in kinds(r, "order") if o["price"] == 50.0]
    (trip,) = [e for e in kinds(r, "reduce_only") if e["reason"] == "daily_loss"]
    (cancel,) = kinds(r, "cancel")
    assert cancel["order_id"] == resting["order_id"] and cancel["ts"] == trip["ts"]


def test_liquidation_buffer_breach_makes_symbol_reduce_only() -> None:
    # 5,000 @ 100 on 100,000 equity. At 94: equity 70,000 - 20 fee; maintenance 0.005*470,000 = 2,350;
    # distance (70,000 - 20 - 2,350) / 5,000 = 13.526 → 13.526/94 = 0.1439 < 0.15
    marks = [100.0, 100.0, 97.0, 95.0, 94.0, 94.0]
    r = guarded(
        marks, [[1, "BTC-PERP", "buy", 5000.0], [6, "BTC-PERP", "buy", 1.0]], {"min_liquidation_buffer_pct": 0.15}
    )
    (trip,) = [e for e in kinds(r, "reduce_only") if e["reason"] == "liquidation_buffer"]
    assert trip["symbol"] == "BTC-PERP" and trip["text"] == "on" and trip["ts"] == cycle_ts(5)
    assert [x["reason"] for x in kinds(r, "reject")] == ["reduce_only_mode"]


def test_volatility_breaker_escalates_to_kill_switch() -> None:
    marks = [100.0 * (1.001 if i % 2 else 1.0) for i in range(30)]
    risk = {"volatility_warn": 0.15, "volatility_reduce_only": 0.20, "volatility_kill": 0.25}
    vol = annualized_vol(marks[:21], 20, 60.0)
    assert vol is not None and vol > 0.25  # ±0.1% per minute is ~7.3 annualized
    r = guarded(marks, [[29, "BTC-PERP", "buy", 1.0]], risk, params={"orders": [[29, "BTC-PERP", "buy", 1.0]]})
    names = [(e["kind"], e["reason"]) for e in r.events.to_dicts() if e["kind"] in ("guard", "reduce_only")]
    # calm straight to kill: the symbol becomes reduce-only on the way, and says so
    assert names[:2] == [("reduce_only", "volatility_reduce_only"), ("guard", "volatility_kill")]
    assert [x["reason"] for x in kinds(r, "reject")] == ["kill_switch"]


class BuyBigThenSmall(Strategy):
    defaults: ClassVar[dict[str, Any]] = {}

    def on_start(self, ctx: Context) -> None:
        self.n = 0

    def on_cycle(self, ctx: Context) -> None:
        self.n += 1
        if self.n == 2:
            ctx.submit("BTC-PERP", "buy", 5000.0)
        elif self.n > 60:
            ctx.submit("BTC-PERP", "buy", 1.0)


def test_volatility_clearing_keeps_a_liquidation_buffer_hold() -> None:
    # 30 s cycles, the guards job every 60 s. Alternating marks (+-0.1%) put BTC in
    # volatility reduce-only; long 5,000, the flat 94 then breaches the liquidation buffer
    # (as in the test above: 0.1439 < 0.15) while volatility still holds the symbol. When
    # volatility clears (flat marks, after the 30 min cooldown) the breach still holds it:
    # every opening buy is refused, and no "off" comes for the buffer.
    marks = [100.0 * (1.001 if i % 2 else 1.0) for i in range(22)] + [94.0] * 60
    risk = {
        "min_liquidation_buffer_pct": 0.15,
        "volatility_warn": 0.3,
        "volatility_reduce_only": 0.5,
        "volatility_kill": 1e9,
        "volatility_cooldown_s": 1800.0,
    }
    r = guarded(marks, [], risk, strategy=BuyBigThenSmall, params={}, interval_s=30.0)
    changes = [
        (e["kind"], e["reason"], e["text"].split()[0])
        for e in r.events.to_dicts()
        if e["kind"] in ("guard", "reduce_only")
    ]
    assert changes == [
        ("reduce_only", "volatility_reduce_only", "on"),
        ("reduce_only", "liquidation_buffer", "on"),  # its own event, though the symbol was held already
        ("guard", "volatility", "off"),
    ]
    (off,) = [e for e in kinds(r, "guard") if e["reason"] == "volatility"]
    buys = [x for x in kinds(r, "reject") if x["ts"] >= off["ts"]]
    assert buys and {x["reason"] for x in buys} == {"reduce_only_mode"}
    assert [f["qty"] for f in kinds(r, "fill")] == [5000.0]


def test_volatility_breaker_warns_only_below_reduce_level() -> None:
    marks = [100.0 * (1.001 if i % 2 else 1.0) for i in range(25)]
    vol = annualized_vol(marks[:21], 20, 60.0)
    assert vol is not None
    risk = {"volatility_warn": vol * 0.5, "volatility_reduce_only": vol * 10, "volatility_kill": vol * 20}
    r = guarded(marks, [], risk)
    reasons = {e["reason"] for e in kinds(r, "guard")}
    assert reasons == {"volatility_warn"}
    assert kinds(r, "reduce_only") == []


class Raises(Strategy):
    defaults: ClassVar[dict[str, Any]] = {}

    def on_start(self, ctx: Context) -> None:
        self.n = 0

    def on_cycle(self, ctx: Context) -> None:
        self.n += 1
        if self.n <= 5:
            raise RuntimeError(f"boom {self.n}")
        ctx.submit("BTC-PERP", "buy", 1.0)


def test_error_breaker_pauses_trading_after_five_errors() -> None:
    marks = [100.0] * 12
    r = guarded(marks, [], {"error_breaker_pause_s": 300.0}, strategy=Raises, params={})
    errors = kinds(r, "error")
    assert len(errors) == 5 and errors[0]["reason"] == "strategy_exception" and "boom 1" in errors[0]["text"]
    on, off = [e for e in kinds(r, "guard") if e["reason"] == "error_breaker"]
    assert on["text"].startswith("on") and on["ts"] == cycle_ts(5)
    assert off["text"] == "off" and off["ts"] == cycle_ts(5) + 5 * MIN
    rej = kinds(r, "reject")
    assert {x["reason"] for x in rej} == {"trading_paused"} and len(rej) == 4  # cycles 6-9
    assert kinds(r, "fill")[0]["ts"] == cycle_ts(10)


def test_a_market_close_passes_reduce_only_mode_beside_a_resting_take_profit() -> None:
    # long 5,000 with a take-profit sell of 5,000 resting at 120; the liquidation buffer
    # trips at 94 (cycle 5, as above) and the market sell that closes the long at cycle 6
    # must pass: counting the take-profit made it look like a flip to -5,000
    marks = [100.0, 100.0, 97.0, 95.0, 94.0, 94.0, 94.0]
    tp = {"type": "limit", "price": 120.0}
    orders = [[1, "BTC-PERP", "buy", 5000.0], [1, "BTC-PERP", "sell", 5000.0, tp], [6, "BTC-PERP", "sell", 5000.0]]
    r = guarded(marks, orders, {"min_liquidation_buffer_pct": 0.15})
    assert [e["reason"] for e in kinds(r, "reduce_only")][:1] == ["liquidation_buffer"]
    assert [x["reason"] for x in kinds(r, "reject")] == []
    assert kinds(r, "fill")[-1]["position_after"] == 0.0


def test_two_closes_in_reduce_only_mode_cannot_flip_the_position() -> None:
    # long 5,000 and the liquidation buffer breached (cycle 5): two sells of 5,000 resting
    # at 96 each reduce alone, so both pass; the price comes back to 97 and fills the
    # first; made reduce-only, the second finds nothing left to close instead of opening
    # a short of 5,000
    marks = [100.0, 100.0, 97.0, 95.0, 94.0, 94.0, 97.0, 97.0]
    sell = {"type": "limit", "price": 96.0}
    orders = [[1, "BTC-PERP", "buy", 5000.0], [6, "BTC-PERP", "sell", 5000.0, sell]]
    orders.append([6, "BTC-PERP", "sell", 5000.0, sell])
    r = guarded(marks, orders, {"min_liquidation_buffer_pct": 0.15})
    assert [x["reason"] for x in kinds(r, "reject")] == []
    assert [f["position_after"] for f in kinds(r, "fill")] == [5000.0, 0.0]
    assert [c["reason"] for c in kinds(r, "cancel")] == ["reduce_only_nothing_to_close"]
