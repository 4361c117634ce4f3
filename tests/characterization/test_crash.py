"""A crash tape under ``prod``: the daily loss guard trips and the run's events show it (issue 3)."""

from __future__ import annotations

from perpsim.core.events import Trade
from tests.helpers import MIN, T0, S, kinds, run


def crash_tape() -> list[Trade]:
    """Flat at 100 for 30 min, up to 103 by minute 40, then -30% within the hour (a gap to 92 first)."""
    evs = []
    for k in range(0, 100 * 6):
        t = T0 + k * 10 * S + S
        minute = k / 6
        if minute < 30:
            px = 100.0
        elif minute < 40:
            px = 100.0 + 0.3 * (minute - 30)
        else:
            px = 92.0 - (92.0 - 72.1) * min(1.0, (minute - 40) / 60)
        evs.append(Trade(ts=t, recv_ts=t, symbol="BTC-PERP", price=round(px, 1), size=0.5, side=1))
    return evs


def test_crash_trips_daily_loss_under_prod() -> None:
    r = run(crash_tape(), profile="prod")
    buy = kinds(r, "fill")[0]
    assert buy["side"] == "buy" and T0 + 30 * MIN < buy["ts"] <= T0 + 40 * MIN
    (trip,) = [e for e in kinds(r, "reduce_only") if e["reason"] == "daily_loss"]
    assert trip["text"] == "on" and trip["ts"] == T0 + 41 * MIN  # the first guard run after the gap
    assert trip["amount"] < -100 * 10**8
    assert r.summary["final_equity"] < r.summary["cash_start"] - 100


def test_same_crash_under_backtest_has_no_guards() -> None:
    r = run(crash_tape())
    assert kinds(r, "reduce_only") == [] and kinds(r, "guard") == []
