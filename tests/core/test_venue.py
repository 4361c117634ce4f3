"""Foundation venue semantics: market fills, reduce-only, funding (issue 2)."""

from __future__ import annotations

from perpsim.core.events import Quote, Trade
from tests.helpers import MIN, T0, S, cycle_ts, funding, kinds, mark_tape, run
from tests.scripted import Scripted


def scripted(events, orders, **kw):
    return run(events, strategy=Scripted, params={"orders": orders}, **kw)


def test_venue_market_buy_fills_at_last_ask_however_old() -> None:
    q = Quote(ts=T0 + S, recv_ts=T0 + S, symbol="BTC-PERP", bid=99.0, bid_size=1, ask=101.0, ask_size=1)
    evs = mark_tape([100.0, 100.5, 102.0], extra=[q])
    r = scripted(evs, [[3, "BTC-PERP", "buy", 2.0], [3, "BTC-PERP", "sell", 0.5]])
    buy, sell = kinds(r, "fill")
    assert (buy["price"], sell["price"]) == (101.0, 99.0)
    assert buy["ts"] == cycle_ts(3)


def test_venue_market_order_without_quote_fills_at_last_trade() -> None:
    r = scripted(mark_tape([100.0, 100.5]), [[2, "BTC-PERP", "buy", 1.0]])
    (fill,) = kinds(r, "fill")
    assert fill["price"] == 100.5
    assert fill["fee"] == 4_020_000  # 1 * 100.5 * 4e-4 = 0.0402


def test_venue_reduce_only_is_clipped_to_close() -> None:
    r = scripted(
        mark_tape([100.0, 100.0, 110.0]),
        [[1, "BTC-PERP", "buy", 1.0], [3, "BTC-PERP", "sell", 3.0, {"reduce_only": True}]],
    )
    _buy, close = kinds(r, "fill")
    assert close["qty"] == 1.0 and close["position_after"] == 0.0
    assert close["amount"] == 10 * 10**8  # 1 * (110 - 100)


def test_venue_reduce_only_with_nothing_to_close_is_rejected() -> None:
    r = scripted(mark_tape([100.0]), [[1, "BTC-PERP", "sell", 1.0, {"reduce_only": True}]])
    (rej,) = kinds(r, "reject")
    assert rej["reason"] == "reduce_only_nothing_to_close"
    assert kinds(r, "fill") == []


def test_venue_rejects_bad_orders_with_reasons_not_exceptions() -> None:
    r = scripted(
        mark_tape([100.0]),
        [
            [1, "BTC-PERP", "buy", 0.0],
            [1, "BTC-PERP", "buy", -1.0],
            [1, "NOPE-PERP", "buy", 1.0],
            [1, "BTC-PERP", "buy", 0.00001],
        ],
    )
    assert [x["reason"] for x in kinds(r, "reject")] == [
        "non_positive_qty",
        "non_positive_qty",
        "unknown_symbol",
        "qty_below_lot",
    ]
    assert kinds(r, "error") == []


def test_venue_flip_through_zero_realizes_and_reopens_at_fill_price() -> None:
    r = scripted(mark_tape([100.0, 100.0, 90.0]), [[1, "BTC-PERP", "buy", 1.0], [3, "BTC-PERP", "sell", 3.0]])
    _, flip = kinds(r, "fill")
    assert flip["position_after"] == -2.0
    assert flip["amount"] == -10 * 10**8  # closed 1 at 90 vs entry 100
    eq = r.equity.to_dicts()[-1]["positions"][0]
    assert eq["entry"] == 90.0 and eq["qty"] == -2.0


def test_funding_long_pays_positive_rate_short_receives() -> None:
    # position opened by the cycle at T; a funding row at T settles after that cycle
    t = cycle_ts(1)
    evs = mark_tape([100.0, 100.0], extra=[funding(t, 0.0001), funding(cycle_ts(2) - S, -0.0002)])
    r = scripted(evs, [[1, "BTC-PERP", "buy", 2.0]])
    f1, f2 = kinds(r, "funding")
    assert f1["ts"] == t and f1["amount"] == -2_000_000  # -(2 * 100 * 0.0001) = -0.02
    assert f2["amount"] == 4_000_000  # long receives a negative rate: 2*100*0.0002 = 0.04
    rs = scripted(mark_tape([100.0, 100.0], extra=[funding(t, 0.0001)]), [[1, "BTC-PERP", "sell", 2.0]])
    assert kinds(rs, "funding")[0]["amount"] == 2_000_000


def test_funding_uses_mark_row_over_last_trade() -> None:
    from perpsim.core.events import Mark

    t = cycle_ts(1)
    mark = Mark(ts=t - 1, recv_ts=t - 1, symbol="BTC-PERP", price=105.0)
    r = scripted(mark_tape([100.0, 100.0], extra=[mark, funding(t, 0.001)]), [[1, "BTC-PERP", "buy", 1.0]])
    assert kinds(r, "funding")[0]["amount"] == -10_500_000  # 1 * 105 * 0.001
    assert kinds(r, "funding")[0]["price"] == 105.0


def test_no_funding_without_position_or_mark() -> None:
    r = scripted(mark_tape([100.0], extra=[funding(T0 + 2 * S, 0.01)]), [])
    assert kinds(r, "funding") == []


def test_symbol_without_trade_or_quote_is_held_no_mark() -> None:
    evs = mark_tape([100.0, 100.0], extra=[funding(T0 + 2 * S, 0.0001, symbol="ETH-PERP")])
    r = run(evs)
    eth = [d for d in kinds(r, "decision") if d["symbol"] == "ETH-PERP"]
    assert eth and all((d["text"], d["reason"]) == ("HOLD", "no_mark") for d in eth)


def test_symbols_ordered_by_code_point() -> None:
    evs = mark_tape([100.0, 100.0], symbol="b-PERP") + mark_tape([100.0, 100.0], symbol="B-PERP")
    evs.sort(key=lambda e: e.ts)
    r = run(evs)
    syms = [d["symbol"] for d in kinds(r, "decision") if d["ts"] == cycle_ts(1)]
    assert syms == ["B-PERP", "b-PERP"]


def test_cycle_sees_rows_before_t_only() -> None:
    t = cycle_ts(1)
    evs = [
        Trade(ts=T0 + S, recv_ts=T0 + S, symbol="BTC-PERP", price=100.0, size=1, side=1),
        Trade(ts=t, recv_ts=t, symbol="BTC-PERP", price=200.0, size=1, side=1),
        Trade(ts=t + MIN, recv_ts=t + MIN, symbol="BTC-PERP", price=300.0, size=1, side=1),
    ]
    r = scripted(evs, [[1, "BTC-PERP", "buy", 1.0], [2, "BTC-PERP", "buy", 1.0]])
    assert [f["price"] for f in kinds(r, "fill")] == [100.0, 200.0]
    # no cycle after the last row: two cycles only
    assert r.summary["cycles"] == 2


def test_ledger_identity_holds_exactly() -> None:
    r = scripted(
        mark_tape([100.0, 101.3, 99.7, 100.1], extra=[funding(cycle_ts(2), 0.00013)]),
        [[1, "BTC-PERP", "buy", 1.2345], [2, "BTC-PERP", "sell", 0.5], [3, "BTC-PERP", "sell", 2.0]],
    )
    u = r.summary["units"]
    assert u["cash_end"] == u["cash_start"] + u["realized"] - u["fees"] + u["funding"]
    assert r.summary["reconciles"] is True
    last_cash = [e["cash_after"] for e in r.events.to_dicts() if e["cash_after"] is not None][-1]
    assert last_cash == u["cash_end"]
