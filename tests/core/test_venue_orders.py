"""Order types, time in force, post-only, reduce-only, stops, fees and inverse PnL (issue 4 items 1, 5, 8).

Tapes without an L2 book: the foundation's touch rule prices taking orders. Every
figure is computed by hand in the comments (maker 2 bps, taker 4 bps, 1 unit = 1e-8).
"""

from __future__ import annotations

import msgspec

from perpsim.core.instruments import Instrument
from tests.core.timed import SYM, TEST, at, end, events, mark, quote, run, trade

U = 10**8


def test_limit_buy_rests_then_fills_as_maker_at_its_price_when_a_trade_goes_through() -> None:
    evs = [quote(0, 100.0, 101.0), trade(20, 99.0, 2.0, -1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.5, "client_id": "b1"}]])
    (order,) = events(r, "order")
    assert (order["price"], order["text"], order["client_id"]) == (99.5, "limit GTC", "b1")
    (fill,) = events(r, "fill")
    assert (fill["price"], fill["liquidity"], fill["ts"], fill["client_id"]) == (99.5, "maker", at(20), "b1")
    assert fill["fee"] == 1_990_000  # 1 * 99.5 * 2e-4 = 0.0199
    assert fill["text"] == f"trade seq=-1 clock={at(20)}"


def test_limit_sell_rests_untouched_while_trades_stay_below_it() -> None:
    evs = [quote(0, 100.0, 101.0), trade(20, 101.5, 1.0, 1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "sell", 1.0, {"type": "limit", "price": 102.0}]])
    assert events(r, "fill") == [] and len(events(r, "order")) == 1


def test_marketable_limit_takes_at_the_touch_not_its_limit() -> None:
    r = run(
        [quote(0, 100.0, 100.5), end(100)], [[at(10), "submit", SYM, "buy", 2.0, {"type": "limit", "price": 103.0}]]
    )
    (fill,) = events(r, "fill")
    assert (fill["price"], fill["qty"], fill["liquidity"]) == (100.5, 2.0, "taker")
    assert fill["fee"] == 8_040_000  # 2 * 100.5 * 4e-4 = 0.0804


def test_ioc_and_fok_that_cannot_fill_are_cancelled_with_reasons() -> None:
    evs = [quote(0, 100.0, 101.0), end(100)]
    r = run(
        evs,
        [
            [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 100.5, "tif": "IOC"}],
            [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 100.5, "tif": "FOK"}],
        ],
    )
    assert [(c["order_id"], c["reason"], c["qty"]) for c in events(r, "cancel")] == [
        (1, "ioc_remainder", 1.0),
        (2, "fok_not_filled", 1.0),
    ]
    assert events(r, "fill") == []


def test_cap_to_top_partially_fills_ioc_and_refuses_fok() -> None:
    evs = [quote(0, 100.0, 101.0, ask_size=0.4), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 101.0, "tif": "IOC"}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 101.0, "tif": "FOK"}],
        [at(10), "submit", SYM, "buy", 1.0],
    ]
    r = run(evs, acts, venue={"cap_to_top": True})
    assert [(f["order_id"], f["qty"], f["price"]) for f in events(r, "fill")] == [(1, 0.4, 101.0), (3, 0.4, 101.0)]
    assert [(c["order_id"], c["reason"], c["qty"]) for c in events(r, "cancel")] == [
        (1, "ioc_remainder", 0.6),
        (2, "fok_not_filled", 1.0),
        (3, "cap_to_top", 0.6),
    ]


def test_cap_to_top_gtc_limit_takes_the_top_and_rests_the_rest() -> None:
    evs = [quote(0, 100.0, 101.0, ask_size=0.4), trade(20, 100.5, 5.0, -1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 101.0}]], venue={"cap_to_top": True})
    assert [(f["qty"], f["price"], f["liquidity"]) for f in events(r, "fill")] == [
        (0.4, 101.0, "taker"),
        (0.6, 101.0, "maker"),  # the rest rested at 101 and a sell at 100.5 went through it
    ]


def test_gtd_expires_on_the_clock_with_an_expire_event() -> None:
    evs = [quote(0, 100.0, 101.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "tif": "GTD", "expire_ns": at(50)}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "tif": "GTD", "expire_ns": at(5)}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "tif": "GTD"}],
    ]
    r = run(evs, acts)
    (exp,) = events(r, "expire")
    assert (exp["order_id"], exp["ts"], exp["reason"], exp["qty"]) == (1, at(50), "gtd", 1.0)
    assert [x["reason"] for x in events(r, "reject")] == ["gtd_expire_in_past", "gtd_without_expiry"]


def test_gtd_order_that_fills_first_never_expires() -> None:
    evs = [quote(0, 100.0, 101.0), trade(20, 98.0, 5.0, -1), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "tif": "GTD", "expire_ns": at(50)}]]
    r = run(evs, acts)
    assert len(events(r, "fill")) == 1 and events(r, "expire") == []


def test_post_only_rejected_when_marketable_and_rests_otherwise() -> None:
    evs = [quote(0, 100.0, 101.0), trade(20, 100.5, 1.0, 1), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 101.0, "post_only": True}],
        [at(10), "submit", SYM, "sell", 1.0, {"type": "limit", "price": 100.5, "post_only": True}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "market", "post_only": True}],
    ]
    r = run(evs, acts)
    assert [(x["order_id"], x["reason"]) for x in events(r, "reject")] == [
        (1, "post_only_would_take"),
        (3, "post_only_would_take"),
    ]
    (fill,) = events(r, "fill")
    assert (fill["order_id"], fill["liquidity"], fill["price"]) == (2, "maker", 100.5)


def test_stop_triggers_on_trade_price_and_fills_at_the_touch() -> None:
    evs = [quote(0, 100.0, 100.5), trade(1, 100.0), quote(30, 94.0, 94.5), trade(40, 95.0, 1.0, -1), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0],
        [at(10), "submit", SYM, "sell", 1.0, {"type": "stop", "stop_price": 95.0, "reduce_only": True}],
    ]
    r = run(evs, acts)
    (trig,) = events(r, "trigger")
    assert (trig["order_id"], trig["ts"], trig["price"], trig["text"]) == (
        2,
        at(40),
        95.0,
        f"trade seq=-1 clock={at(40)}",
    )
    _, stop_fill = events(r, "fill")
    assert (stop_fill["price"], stop_fill["liquidity"], stop_fill["position_after"]) == (94.0, "taker", 0.0)
    assert stop_fill["amount"] == -65 * U // 10  # 1 * (94 - 100.5)


def test_stop_already_through_its_trigger_is_rejected() -> None:
    evs = [quote(0, 100.0, 100.5), trade(1, 100.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "stop", "stop_price": 99.5}],
        [at(10), "submit", SYM, "sell", 1.0, {"type": "stop", "stop_price": 100.5}],
    ]
    r = run(evs, acts)
    assert [x["reason"] for x in events(r, "reject")] == ["stop_would_trigger", "stop_would_trigger"]


def test_stop_limit_triggers_then_rests_as_a_limit_and_fills_as_maker() -> None:
    evs = [
        quote(0, 100.0, 100.5),
        trade(1, 100.0),
        quote(30, 105.5, 106.0),
        trade(40, 105.0, 1.0, 1),  # triggers; ask 106 > limit 105.5: rests
        trade(60, 105.5, 1.0, -1),  # a sell at the limit fills it (queue "none")
        end(100),
    ]
    acts = [[at(10), "submit", SYM, "buy", 1.0, {"type": "stop_limit", "stop_price": 105.0, "price": 105.5}]]
    r = run(evs, acts)
    assert [t["ts"] for t in events(r, "trigger")] == [at(40)]
    (fill,) = events(r, "fill")
    assert (fill["ts"], fill["price"], fill["liquidity"]) == (at(60), 105.5, "maker")
    assert events(r, "order")[0]["text"] == "stop_limit GTC stop=105.0"


def test_stop_on_mark_ignores_trades_when_the_symbol_has_mark_rows() -> None:
    evs = [
        quote(0, 100.0, 100.5),
        mark(1, 100.0),
        trade(20, 94.0, 1.0, -1),  # trade through the stop: ignored with stop_trigger = mark
        mark(40, 95.0),
        end(100),
    ]
    acts = [[at(10), "submit", SYM, "sell", 1.0, {"type": "stop", "stop_price": 95.0}]]
    r = run(evs, acts, venue={"stop_trigger": "mark"})
    (trig,) = events(r, "trigger")
    assert trig["ts"] == at(40) and trig["text"].startswith("mark ")
    r2 = run(evs, acts)  # default: trade price
    assert events(r2, "trigger")[0]["ts"] == at(20)


def test_resting_reduce_only_is_clipped_and_cancelled_when_nothing_left_to_reduce() -> None:
    evs = [quote(0, 100.0, 100.5), trade(1, 100.0), trade(40, 111.0, 1.0, 1), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0],
        [at(11), "submit", SYM, "sell", 3.0, {"type": "limit", "price": 110.0, "reduce_only": True}],
        [at(12), "submit", SYM, "sell", 1.0, {"type": "limit", "price": 110.5, "reduce_only": True}],
    ]
    r = run(evs, acts)
    orders = events(r, "order")
    assert orders[1]["qty"] == 1.0 and orders[1]["reason"] == "reduce_only"  # clipped to the position
    fills = events(r, "fill")
    assert [(f["order_id"], f["qty"], f["price"]) for f in fills] == [(1, 1.0, 100.5), (2, 1.0, 110.0)]
    (cancel,) = events(r, "cancel")
    assert (cancel["order_id"], cancel["reason"]) == (3, "reduce_only_nothing_to_close")


def test_limit_fill_flips_through_zero() -> None:
    evs = [quote(0, 100.0, 100.5), trade(1, 100.0), trade(40, 111.0, 5.0, 1), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0],
        [at(11), "submit", SYM, "sell", 3.0, {"type": "limit", "price": 110.0}],
    ]
    r = run(evs, acts)
    flip = events(r, "fill")[1]
    assert flip["position_after"] == -2.0 and flip["amount"] == 95 * U // 10  # 1 * (110 - 100.5)


def test_cancel_of_a_resting_order_and_of_an_unknown_one() -> None:
    evs = [quote(0, 100.0, 101.0), trade(40, 98.0, 1.0, -1), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "client_id": "c"}],
        [at(20), "cancel", 0],
        [at(30), "cancel", 0],  # already cancelled: nothing happens
    ]
    r = run(evs, acts)
    (c,) = events(r, "cancel")
    assert (c["order_id"], c["client_id"], c["reason"], c["ts"]) == (1, "c", "requested", at(20))
    assert events(r, "fill") == []


def test_bad_orders_are_reject_events_with_reasons() -> None:
    evs = [quote(0, 100.0, 101.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.3}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "stop", "stop_price": 102.2}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit"}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": -1.0}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "iceberg"}],
        [at(10), "submit", SYM, "buy", 1.0, {"tif": "DAY"}],
        [at(10), "submit", SYM, "buy", float("nan")],
        [at(10), "submit", SYM, "buy", 0.05],
        [at(10), "submit", "NOPE-PERP", "buy", 1.0],
        [at(10), "submit", SYM, "buy", 1.0, {"price": 50.0}],  # a market order would ignore it
        [at(10), "submit", SYM, "buy", 1.0, {"type": "stop", "stop_price": 102.0, "price": 103.0}],
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0, "stop_price": 98.0}],
    ]
    r = run(evs, acts)
    assert [x["reason"] for x in events(r, "reject")] == [
        "price_off_tick",
        "stop_price_off_tick",
        "missing_price",
        "invalid_price",
        "unknown_order_type",
        "unknown_tif",
        "non_positive_qty",
        "qty_below_lot",
        "unknown_symbol",
        "price_not_used",
        "price_not_used",
        "stop_price_not_used",
    ]
    assert events(r, "error") == []


def test_min_notional_rejects_small_orders_but_not_reduce_only() -> None:
    inst = msgspec.structs.replace(TEST, min_notional=50.0)
    evs = [quote(0, 100.0, 100.5), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 0.4],  # 0.4 * 100.5 = 40.2 < 50
        [at(10), "submit", SYM, "buy", 0.5],  # 50.25
        [at(11), "submit", SYM, "sell", 0.1, {"reduce_only": True}],  # 10, exempt
    ]
    r = run(evs, acts, instruments={SYM: inst})
    assert [x["reason"] for x in events(r, "reject")] == ["below_min_notional"]
    assert [f["qty"] for f in events(r, "fill")] == [0.5, 0.1]


def test_negative_maker_fee_is_a_rebate_and_the_ledger_still_reconciles() -> None:
    evs = [quote(0, 100.0, 101.0), trade(20, 99.0, 5.0, -1), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 2.0, {"type": "limit", "price": 99.5}]]
    r = run(evs, acts, venue={"maker_bps": -1.0})
    (fill,) = events(r, "fill")
    assert fill["fee"] == -1_990_000  # 2 * 99.5 * -1e-4 = -0.0199: paid to us
    assert fill["cash_after"] == 100_000 * U + 1_990_000
    assert r.summary["units"]["fees"] == -1_990_000 and r.summary["reconciles"]


def test_fee_tier_follows_trailing_30_day_volume() -> None:
    tiers = [
        {"min_volume_30d": 0.0, "maker_bps": 2.0, "taker_bps": 4.0},
        {"min_volume_30d": 1000.0, "maker_bps": 0.0, "taker_bps": 3.0},
    ]
    evs = [quote(0, 100.0, 100.0), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 10.0], [at(20), "submit", SYM, "sell", 10.0]]
    r = run(evs, acts, venue={"fee_tiers": tiers})
    # first fill: volume 0 -> tier 0, 10 * 100 * 4e-4 = 0.4; then 1000 traded -> tier 1, 3 bps = 0.3
    assert [f["fee"] for f in events(r, "fill")] == [40_000_000, 30_000_000]
    fixed = run(evs, acts, venue={"fee_tiers": tiers, "fee_tier": 1})
    assert [f["fee"] for f in events(fixed, "fill")] == [30_000_000, 30_000_000]


INV = Instrument(symbol=SYM, tick=0.5, lot=1.0, contract_size=100.0, kind="inverse", base="BTC", max_leverage=100.0)


def test_inverse_pnl_fees_and_funding_are_in_coin() -> None:
    from perpsim.core.events import Funding

    t = at(30)
    evs = [
        quote(0, 50_000.0, 50_000.0),
        Funding(ts=t, recv_ts=t, symbol=SYM, rate=0.0001),
        quote(40, 60_000.0, 60_000.0),
        end(100),
    ]
    acts = [[at(10), "submit", SYM, "buy", 10.0], [at(50), "submit", SYM, "sell", 10.0]]
    r = run(evs, acts, instruments={SYM: INV}, venue={"starting_balance": 1.0})
    buy, sell = events(r, "fill")
    assert buy["fee"] == 800  # 10 * 100 / 50000 = 0.02 BTC * 4e-4 = 0.000008 BTC
    assert sell["fee"] == 667  # 1000 / 60000 * 4e-4 = 0.0000066667 -> 666.67 units -> 667
    assert sell["amount"] == 333_333  # 1000 * (1/50000 - 1/60000) = 1/300 BTC = 333333.33 units
    (fund,) = events(r, "funding")
    assert fund["amount"] == -200  # -(10 * 100 / 50000) * 0.0001 = -0.000002 BTC (mark = trade-less mid 50000)
    u = r.summary["units"]
    assert u["cash_end"] == 10**8 + 333_333 - 800 - 667 - 200 and r.summary["reconciles"]


def test_inverse_average_entry_is_harmonic() -> None:
    evs = [quote(0, 40_000.0, 40_000.0), quote(15, 60_000.0, 60_000.0), quote(25, 50_000.0, 50_000.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 10.0],
        [at(20), "submit", SYM, "buy", 10.0],
        [at(30), "submit", SYM, "sell", 20.0],
    ]
    r = run(evs, acts, instruments={SYM: INV}, venue={"starting_balance": 1.0, "taker_bps": 0.0})
    close = events(r, "fill")[2]
    # entry E: 20/E = 10/40000 + 10/60000 -> E = 48000; PnL = 2000 * (1/48000 - 1/50000) = 1/600 BTC
    assert close["amount"] == 166_667  # 166666.67 units


def test_a_run_settles_in_one_currency() -> None:
    btc = msgspec.structs.replace(INV, symbol="INV-PERP")
    evs = [quote(0, 100.0, 100.5), end(100)]
    from perpsim.core.events import Quote

    t = at(1)
    evs.append(Quote(ts=t, recv_ts=t, symbol="INV-PERP", bid=50_000.0, bid_size=9.0, ask=50_000.0, ask_size=9.0))
    acts = [[at(10), "submit", "INV-PERP", "buy", 1.0], [at(11), "submit", SYM, "buy", 1.0]]
    r = run(evs, acts, instruments={SYM: TEST, "INV-PERP": btc})
    assert [x["reason"] for x in events(r, "reject")] == ["settlement_currency_mismatch"]


def test_an_armed_stop_limit_reserves_no_margin_until_it_triggers() -> None:
    # leverage 10, 100,000 of cash: the stop-limit (10,000 at 110) would reserve 110,000 if counted,
    # leaving nothing for the market buy that needs 5,000 * 100 / 10 = 50,000
    evs = [quote(0, 99.5, 100.0), end(100)]
    acts = [
        [at(10), "submit", SYM, "buy", 10_000.0, {"type": "stop_limit", "stop_price": 110.0, "price": 110.0}],
        [at(10), "submit", SYM, "buy", 5_000.0],
    ]
    r = run(evs, acts, venue={"starting_balance": 100_000.0})
    assert events(r, "reject") == []
    assert [f["qty"] for f in events(r, "fill")] == [5_000.0]
