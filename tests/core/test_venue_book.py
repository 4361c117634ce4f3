"""Taking orders against a known L2 book, and the touch-rule options without one (issue 4 item 2).

The book: bids 99.5 x 2, 99.0 x 3; asks 100.0 x 1, 100.5 x 2, 101.0 x 5. One fill per
level, each at the level's price; the order's VWAP is their quantity-weighted mean.
"""

from __future__ import annotations

from fractions import Fraction

from tests.core.timed import SYM, at, book, end, events, quote, run, trade

BOOK = book(0, [(99.5, 2.0), (99.0, 3.0)], [(100.0, 1.0), (100.5, 2.0), (101.0, 5.0)], seq=1)


def fills(r) -> list[tuple[int, float, float]]:
    return [(f["order_id"], f["qty"], f["price"]) for f in events(r, "fill")]


def test_market_buy_walks_the_asks_one_fill_per_level() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "buy", 2.5]])
    got = events(r, "fill")
    assert [(f["qty"], f["price"], f["liquidity"]) for f in got] == [(1.0, 100.0, "taker"), (1.5, 100.5, "taker")]
    assert [f["fee"] for f in got] == [4_000_000, 6_030_000]  # 100 * 4e-4; 1.5 * 100.5 * 4e-4 = 0.0603
    vwap = sum(Fraction(repr(f["qty"])) * Fraction(repr(f["price"])) for f in got) / Fraction(5, 2)
    assert vwap == Fraction("100.3")  # (100 + 150.75) / 2.5
    assert got[-1]["position_after"] == 2.5


def test_market_sell_walks_the_bids() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "sell", 4.0]])
    assert fills(r) == [(1, 2.0, 99.5), (1, 2.0, 99.0)]


def test_market_order_larger_than_the_book_cancels_the_rest() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "buy", 10.0]])
    assert fills(r) == [(1, 1.0, 100.0), (1, 2.0, 100.5), (1, 5.0, 101.0)]
    (c,) = events(r, "cancel")
    assert (c["reason"], c["qty"]) == ("no_liquidity", 2.0)


def test_marketable_gtc_limit_takes_up_to_its_price_and_rests_the_rest() -> None:
    evs = [*BOOK, trade(50, 100.5, 1.0, -1), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 5.0, {"type": "limit", "price": 100.5}]])
    assert [(f["qty"], f["price"], f["liquidity"]) for f in events(r, "fill")] == [
        (1.0, 100.0, "taker"),
        (2.0, 100.5, "taker"),
        (2.0, 100.5, "maker"),  # rested at 100.5; a sell at 100.5 filled it (queue "none")
    ]


def test_ioc_limit_on_a_book_fills_partially_and_cancels_the_rest() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "buy", 5.0, {"type": "limit", "price": 100.5, "tif": "IOC"}]])
    assert fills(r) == [(1, 1.0, 100.0), (1, 2.0, 100.5)]
    (c,) = events(r, "cancel")
    assert (c["reason"], c["qty"]) == ("ioc_remainder", 2.0)


def test_fok_fills_whole_or_nothing() -> None:
    acts = [
        [at(10), "submit", SYM, "buy", 4.0, {"type": "limit", "price": 100.5, "tif": "FOK"}],  # 3 available
        [at(10), "submit", SYM, "buy", 3.0, {"type": "limit", "price": 100.5, "tif": "FOK"}],
        [at(10), "submit", SYM, "sell", 6.0, {"tif": "FOK"}],  # market FOK: bids hold 5
    ]
    r = run([*BOOK, end(100)], acts)
    assert fills(r) == [(2, 1.0, 100.0), (2, 2.0, 100.5)]
    assert [(c["order_id"], c["reason"]) for c in events(r, "cancel")] == [(1, "fok_not_filled"), (3, "fok_not_filled")]


def test_fills_do_not_consume_the_tapes_book() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "buy", 1.0], [at(10), "submit", SYM, "buy", 1.0]])
    assert fills(r) == [(1, 1.0, 100.0), (2, 1.0, 100.0)]


def test_the_book_is_the_liquidity_even_when_a_quote_says_otherwise() -> None:
    r = run([*BOOK, quote(5, 98.0, 99.0), end(100)], [[at(10), "submit", SYM, "buy", 1.0]])
    assert fills(r) == [(1, 1.0, 100.0)]


def test_resting_bid_fills_as_maker_when_the_asks_reach_it() -> None:
    evs = [*BOOK, *book(30, [(99.5, 0.0)], [(99.5, 1.0)], seq=7), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.5}]])
    (f,) = events(r, "fill")
    assert (f["price"], f["liquidity"], f["ts"], f["text"]) == (99.5, "maker", at(30), f"book seq=7 clock={at(30)}")


def test_book_walk_sums_exact_decimals() -> None:
    evs = [*book(0, [(99.0, 1.0)], [(100.0, 0.1), (100.5, 0.2)]), end(100)]
    r = run(evs, [[at(10), "submit", SYM, "buy", 0.3]])
    assert fills(r) == [(1, 0.1, 100.0), (1, 0.2, 100.5)]
    assert events(r, "cancel") == []


def test_slippage_moves_touch_fills_away_rounded_to_the_tick_and_stops_at_a_limit() -> None:
    acts = [
        [at(10), "submit", SYM, "buy", 1.0],  # 100 * 1.001 = 100.1 -> 100.5
        [at(10), "submit", SYM, "sell", 1.0],  # 99.5 * 0.999 = 99.4005 -> 99.0
        [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 100.0, "tif": "IOC"}],  # capped at 100
    ]
    r = run([quote(0, 99.5, 100.0), end(100)], acts, venue={"slippage_bps": 10.0})
    assert fills(r) == [(1, 1.0, 100.5), (2, 1.0, 99.0), (3, 1.0, 100.0)]


def test_slippage_and_cap_do_not_apply_on_a_book() -> None:
    r = run([*BOOK, end(100)], [[at(10), "submit", SYM, "buy", 2.0]], venue={"slippage_bps": 50.0, "cap_to_top": True})
    assert fills(r) == [(1, 1.0, 100.0), (1, 1.0, 100.5)]


def test_market_order_with_nothing_to_price_it_is_rejected() -> None:
    r = run([end(0), end(100)], [[at(10), "submit", SYM, "buy", 1.0]])
    assert [x["reason"] for x in events(r, "reject")] == ["no_price"]
    one_sided = book(0, [(99.0, 1.0)], [(100.0, 0.0)])
    r2 = run([*one_sided, end(100)], [[at(10), "submit", SYM, "buy", 1.0]])
    assert [x["reason"] for x in events(r2, "reject")] == ["no_liquidity"]


def test_rest_of_a_taking_limit_is_not_filled_by_the_liquidity_it_already_took() -> None:
    evs = [
        *BOOK,
        *book(20, [(99.0, 4.0)], [], seq=2),  # another message; the asks it took are still displayed
        *book(30, [], [(100.0, 0.0), (100.5, 0.0)], seq=3),  # asks move away from 100.5
        *book(40, [], [(100.5, 1.0)], seq=4),  # a new ask at 100.5: crosses the resting bid
        end(100),
    ]
    r = run(evs, [[at(10), "submit", SYM, "buy", 5.0, {"type": "limit", "price": 100.5}]])
    assert [(f["qty"], f["liquidity"], f["ts"]) for f in events(r, "fill")] == [
        (1.0, "taker", at(10)),
        (2.0, "taker", at(10)),
        (2.0, "maker", at(40)),
    ]
