"""Cross margin, liquidation price and liquidation (issue 4 item 7).

The test instrument: maintenance rate 5%, max leverage 10; starting balance 1,000;
taker fee 0 unless stated, so the figures stay readable:

- long 50 @ 100 with cash 1000: equity(m) = 1000 + 50(m - 100), maintenance 2.5 m;
  liquidation price m = (50*100 - 1000) / (50 * 0.95) = 84.2105263...
- short 50 @ 100: m = (50*100 + 1000) / (50 * 1.05) = 114.2857142...
"""

from __future__ import annotations

from fractions import Fraction

import msgspec

from perpsim.core.events import Funding, Quote, Trade
from perpsim.core.instruments import Instrument
from tests.core.timed import SYM, TEST, at, end, events, mark, quote, run, trade

U = 10**8
FLAT = {"starting_balance": 1000.0, "taker_bps": 0.0}


def liq_prices(r, symbol: str = SYM) -> list[tuple[int, float | None]]:
    return [
        (row["ts"], p["liq_price"]) for row in r.equity.to_dicts() for p in row["positions"] if p["symbol"] == symbol
    ]


def test_initial_margin_from_leverage_rejects_orders_without_free_margin() -> None:
    evs = [quote(0, 100.0, 100.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 101.0],  # 10100 / 10 = 1010 > 1000
        [at(11), "submit", SYM, "buy", 99.0],  # 990
        [at(12), "submit", SYM, "buy", 0.1],  # 1 <= 10 free
        [at(13), "submit", SYM, "buy", 1.0],  # 10 > 9 free
        [at(14), "submit", SYM, "sell", 50.0],  # closing: no margin needed
    ]
    r = run(evs, acts, venue=FLAT)
    assert [(x["order_id"], x["reason"]) for x in events(r, "reject")] == [
        (1, "insufficient_margin"),
        (4, "insufficient_margin"),
    ]
    assert [f["order_id"] for f in events(r, "fill")] == [2, 3, 5]


def test_resting_orders_reserve_margin_and_account_leverage_caps_it() -> None:
    evs = [quote(0, 100.0, 100.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 60.0, {"type": "limit", "price": 90.0}],  # reserves 540
        [at(11), "submit", SYM, "buy", 50.0],  # 500 > 460 free
        [at(12), "submit", SYM, "buy", 46.0],  # 460
    ]
    r = run(evs, acts, venue=FLAT)
    assert [(x["order_id"], x["reason"]) for x in events(r, "reject")] == [(2, "insufficient_margin")]
    lev5 = run(
        evs,
        [[at(10), "submit", SYM, "buy", 50.0], [at(11), "submit", SYM, "buy", 0.1]],
        venue={**FLAT, "leverage": 5.0},
    )
    assert [x["order_id"] for x in events(lev5, "reject")] == [2]  # 50 * 100 / 5 = 1000: nothing left


def test_long_is_liquidated_at_the_mark_when_equity_reaches_maintenance() -> None:
    evs = [
        quote(0, 100.0, 100.0),
        trade(1, 100.0),
        trade(30, 85.0, 1.0, -1),  # equity 250 > maintenance 212.5
        trade(40, 84.5, 1.0, -1),  # 225 > 211.25
        trade(50, 84.2, 1.0, -1),  # 210 <= 210.5: liquidate
        trade(60, 80.0, 1.0, -1),
        end(100),
    ]
    acts = [
        [at(10), "submit", SYM, "buy", 50.0],
        [at(11), "submit", SYM, "sell", 1.0, {"type": "limit", "price": 120.0}],
    ]
    r = run(evs, acts, venue=FLAT, interval_s=0.02)
    assert liq_prices(r)[0] == (at(20), float(Fraction(4000) / Fraction("47.5")))  # 84.2105263...
    (liq,) = events(r, "liquidation")
    assert (liq["ts"], liq["side"], liq["qty"], liq["price"], liq["position_after"]) == (
        at(50),
        "sell",
        50.0,
        84.2,
        0.0,
    )
    assert liq["amount"] == -790 * U  # 50 * (84.2 - 100)
    assert liq["fee"] == 2105 * U // 100  # 50 bps of 50 * 84.2 = 4210 -> 21.05
    assert liq["cash_after"] == 18895 * U // 100  # 1000 - 790 - 21.05
    assert liq["text"] == f"equity_units={210 * U} maintenance_units={2105 * U // 10} cause=trade seq=-1 clock={at(50)}"
    (c,) = events(r, "cancel")
    assert (c["order_id"], c["reason"], c["ts"]) == (2, "liquidation", at(50))
    assert r.summary["reconciles"] and r.summary["positions"] == {}


def test_short_liquidation_price_and_mark_rows_drive_liquidation() -> None:
    evs = [
        quote(0, 100.0, 100.0),
        mark(1, 100.0),
        trade(30, 130.0, 1.0, 1),  # trades do not move the venue mark while mark rows exist
        mark(40, 114.0),  # equity 1000 - 700 = 300 > 285
        mark(50, 114.3),  # 285 <= 285.75: liquidate at 114.3
        end(100),
    ]
    r = run(evs, [[at(10), "submit", SYM, "sell", 50.0]], venue=FLAT, interval_s=0.02)
    assert liq_prices(r)[0][1] == float(Fraction(6000) / Fraction("52.5"))  # 114.2857142...
    (liq,) = events(r, "liquidation")
    assert (liq["ts"], liq["side"], liq["price"]) == (at(50), "buy", 114.3)
    assert liq["text"].endswith(f"cause=mark seq=-1 clock={at(50)}")


def test_liquidation_price_is_cross_margin_over_every_position() -> None:
    other = msgspec.structs.replace(TEST, symbol="B-PERP")
    t0, t30 = at(0), at(30)
    evs = [
        quote(0, 100.0, 100.0),
        trade(1, 100.0),
        Quote(ts=t0, recv_ts=t0, symbol="B-PERP", bid=100.0, bid_size=99.0, ask=100.0, ask_size=99.0),
        Trade(ts=t0 + 1, recv_ts=t0 + 1, symbol="B-PERP", price=100.0, size=1.0, side=1),
        Trade(ts=t30, recv_ts=t30, symbol="B-PERP", price=90.0, size=1.0, side=-1),
        end(50),
    ]
    acts = [[at(10), "submit", SYM, "buy", 10.0], [at(10), "submit", "B-PERP", "buy", 10.0]]
    r = run(evs, acts, venue=FLAT, instruments={SYM: TEST, "B-PERP": other}, interval_s=0.02)
    # K = cash + U_B - MM_B; m = (10*100 - K) / (10 * 0.95)
    # B at 100: K = 1000 - 50 = 950 -> m = 50 / 9.5;  B at 90: K = 1000 - 100 - 45 = 855 -> m = 145 / 9.5
    assert liq_prices(r) == [
        (at(20), float(Fraction(50) / Fraction("9.5"))),
        (at(40), float(Fraction(145) / Fraction("9.5"))),
    ]


def test_inverse_liquidation_price() -> None:
    inv = Instrument(symbol=SYM, tick=0.5, lot=1.0, contract_size=100.0, kind="inverse", base="BTC", max_leverage=100.0)
    evs = [quote(0, 50_000.0, 50_000.0), end(100)]
    r = run(
        evs,
        [[at(10), "submit", SYM, "buy", 1000.0]],
        instruments={SYM: inv},
        venue={**FLAT, "starting_balance": 1.0},
        interval_s=0.02,
    )
    # m = cs (Q + |Q| r) / (K + Q cs / E) = 100 * 1005 / (1 + 2) = 33500
    assert liq_prices(r)[0][1] == 33500.0


def test_funding_that_drains_equity_below_maintenance_liquidates_at_once() -> None:
    t = at(30)
    evs = [quote(0, 100.0, 100.0), trade(1, 100.0), Funding(ts=t, recv_ts=t, symbol=SYM, rate=0.16), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 50.0]], venue=FLAT)
    (fund,) = events(r, "funding")
    assert fund["amount"] == -800 * U  # 50 * 100 * 0.16; equity 200 <= maintenance 250
    (liq,) = events(r, "liquidation")
    assert liq["ts"] == t and liq["text"].endswith(f"cause=funding clock={t}")


def test_margin_and_liquidation_can_be_switched_off() -> None:
    evs = [quote(0, 100.0, 100.0), trade(1, 100.0), trade(30, 50.0, 1.0, -1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 200.0]], venue={**FLAT, "margin_check": False, "liquidation": False})
    assert events(r, "reject") == [] and events(r, "liquidation") == []
    assert r.summary["units"]["final_equity"] == (1000 - 200 * 50) * U


def test_liquidation_band_brackets_the_marks_that_cannot_liquidate() -> None:
    from perpsim.sim.profiles import resolve_config
    from perpsim.sim.replay import ReplayDriver
    from perpsim.tapes.memory import MemoryTape
    from tests.core.timed import Timed

    evs = [quote(0, 100.0, 100.0), trade(1, 100.0), end(100)]
    cfg = resolve_config(overrides={"venue": FLAT, "params": {"actions": [[at(10), "submit", SYM, "buy", 50.0]]}})
    driver = ReplayDriver(MemoryTape(evs, instruments={SYM: TEST}), cfg, Timed)
    driver.run()
    venue = driver.engine.venue
    sid = driver.engine.market.ids[SYM]
    lo, hi = venue.liquidation_band(sid)
    assert abs(lo - 4000 / 47.5) < 1e-6 and hi == float("inf")
    assert not venue.has_orders(sid) and venue.active[sid]  # active for the liquidation watch only
    assert venue.liq_price(SYM) == float(Fraction(4000) / Fraction("47.5"))


def test_liquidation_fee_takes_at_most_the_remaining_margin() -> None:
    # cash 1000, long 50 @ 100 liquidated at 80.5 after a gap: realized -975 leaves 25;
    # the fee (50 bps of 4025 = 20.125) fits. A gap to 79 (below the bankruptcy price 80): -1050, no fee.
    evs = [quote(0, 100.0, 100.0), trade(1, 100.0), trade(30, 80.5, 1.0, -1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 50.0]], venue=FLAT)
    (liq,) = events(r, "liquidation")
    assert (liq["amount"], liq["fee"], liq["cash_after"]) == (-975 * U, 20_125 * U // 1000, 4_875 * U // 1000)
    gap = [quote(0, 100.0, 100.0), trade(1, 100.0), trade(30, 79.0, 1.0, -1), end(100)]
    r2 = run(gap, [[at(10), "submit", SYM, "buy", 50.0]], venue=FLAT)
    (liq2,) = events(r2, "liquidation")
    assert (liq2["amount"], liq2["fee"], liq2["cash_after"]) == (-1050 * U, 0, -50 * U)
    assert r2.summary["reconciles"]
