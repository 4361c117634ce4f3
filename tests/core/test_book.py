"""core/book.py: the L2 book the engine rebuilds from ``book`` rows and the venue walks.

The real-data oracle (a book rebuilt from the shipped Binance tape matches every
bookTicker at the same update id) lives in tests/tapes/test_convert_binance.py, next to
the converter that produces the rows.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpsim.core import book as book_module
from perpsim.core.book import ASK, BID, Book, next_same
from perpsim.core.errors import InputError


def _stage(b: Book, levels: list[float], sizes: list[float]) -> None:
    lv = np.array(levels, dtype=np.float64)
    b.stage(lv, np.array(sizes, dtype=np.float64), next_same(lv))


def _book(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> Book:
    b = Book("TEST")
    for p, s in bids:
        b.apply(BID, p, s)
    for p, s in asks:
        b.apply(ASK, p, s)
    return b


def test_book_new_is_empty() -> None:
    b = Book()
    assert b.empty
    assert b.best_bid() is None
    assert b.best_ask() is None
    assert b.levels(BID, 5) == []
    assert b.depth(ASK) == 0
    assert b.walk(ASK, 1.0) == []


def test_book_apply_orders_levels_best_first() -> None:
    b = _book([(100.0, 1.0), (100.2, 2.0), (99.9, 3.0)], [(100.5, 1.5), (100.3, 0.5), (101.0, 4.0)])
    assert b.best_bid() == (100.2, 2.0)
    assert b.best_ask() == (100.3, 0.5)
    assert b.levels(BID, 2) == [(100.2, 2.0), (100.0, 1.0)]
    assert b.levels(ASK) == [(100.3, 0.5), (100.5, 1.5), (101.0, 4.0)]
    assert b.levels(BID, 0) == []
    assert b.depth(BID) == 3 and b.depth(ASK) == 3
    assert not b.empty


def test_book_apply_absolute_size_replaces_level() -> None:
    b = _book([(100.0, 1.0)], [])
    b.apply(BID, 100.0, 0.25)
    assert b.levels(BID) == [(100.0, 0.25)]
    assert b.depth(BID) == 1


def test_book_apply_zero_deletes_and_missing_delete_is_noop() -> None:
    b = _book([(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0)])
    b.apply(BID, 100.0, 0.0)
    assert b.best_bid() == (99.0, 1.0)
    b.apply(ASK, 150.0, 0.0)  # Binance deletes levels outside the snapshot's depth
    assert b.levels(ASK) == [(101.0, 1.0)]
    b.apply(ASK, 101.0, 0.0)
    assert b.best_ask() is None


def test_book_reset_clears_and_bumps_version() -> None:
    b = _book([(100.0, 1.0)], [(101.0, 1.0)])
    v = b.version
    b.reset()
    assert b.empty and b.version == v + 1
    b.apply(ASK, 101.0, 2.0)
    assert b.version == v + 2


def test_book_apply_negative_size_is_rejected_with_context() -> None:
    b = Book("BTCUSDT")
    with pytest.raises(InputError, match=r"book 'BTCUSDT': negative size -1\.0 at price 100\.0 side 1"):
        b.apply(BID, 100.0, -1.0)
    with pytest.raises(InputError, match=r"side 0 at price 100\.0 is not \+1 or -1"):
        b.apply(0, 100.0, 1.0)
    assert b.empty


def test_book_walk_buy_consumes_asks_with_partial_last_level() -> None:
    b = _book([(99.0, 5.0)], [(100.0, 0.4), (100.5, 1.0), (101.0, 3.0)])
    assert b.walk(ASK, 1.0) == [(100.0, 0.4), (100.5, 0.6)]
    assert b.walk(ASK, 0.4) == [(100.0, 0.4)]
    assert b.walk(BID, 2.0) == [(99.0, 2.0)]
    assert b.walk(ASK, 0.0) == []


def test_book_walk_sums_decimal_quantities_exactly() -> None:
    b = _book([], [(100.0, 0.1), (100.1, 0.2), (100.2, 5.0)])
    # 0.3 - 0.1 in binary floats is 0.19999999999999998; the walk must say 0.2.
    assert b.walk(ASK, 0.3) == [(100.0, 0.1), (100.1, 0.2)]
    assert b.walk(ASK, 0.7) == [(100.0, 0.1), (100.1, 0.2), (100.2, 0.4)]


def test_book_walk_thin_book_returns_what_there_is() -> None:
    b = _book([(99.0, 1.0), (98.0, 2.0)], [])
    fills = b.walk(BID, 10.0)
    assert fills == [(99.0, 1.0), (98.0, 2.0)]
    assert sum(q for _, q in fills) < 10.0


_prices = st.integers(min_value=1, max_value=60).map(lambda i: i / 10)
_ops = st.lists(
    st.tuples(st.sampled_from([BID, ASK]), _prices, st.sampled_from([0.0, 0.001, 0.5, 1.25, 3.0])),
    max_size=200,
)


@given(_ops)
def test_book_matches_a_dict_model(ops: list[tuple[int, float, float]]) -> None:
    b = Book()
    model: dict[int, dict[float, float]] = {BID: {}, ASK: {}}
    for side, price, size in ops:
        b.apply(side, price, size)
        if size == 0.0:
            model[side].pop(price, None)
        else:
            model[side][price] = size
    bids = sorted(model[BID].items(), reverse=True)
    asks = sorted(model[ASK].items())
    assert b.levels(BID) == bids
    assert b.levels(ASK) == asks
    assert b.best_bid() == (bids[0] if bids else None)
    assert b.best_ask() == (asks[0] if asks else None)
    assert b.depth(BID) == len(bids) and b.depth(ASK) == len(asks)
    assert b.empty == (not bids and not asks)


_staged_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("stage"),
            st.lists(st.tuples(st.sampled_from([BID, ASK]), _prices, st.sampled_from([0.0, 0.5, 3.0]))),
        ),
        st.tuples(st.just("apply"), st.tuples(st.sampled_from([BID, ASK]), _prices, st.sampled_from([0.0, 1.25]))),
        st.tuples(st.just("reset"), st.none()),
        st.tuples(st.just("read"), st.none()),
    ),
    max_size=40,
)


@given(_staged_ops, st.sampled_from([1 << 20, 3]))
def test_staged_rows_read_as_if_applied_in_order(ops: list[tuple[str, Any]], compact_rows: int) -> None:
    # Book.stage is the fast-forward path; every read must see what apply() row by row leaves,
    # also when staged rows are merged before a read (every 3 rows here).
    staged, applied = Book(), Book()
    with patch.object(book_module, "_COMPACT_ROWS", compact_rows):
        _play(ops, staged, applied)


@given(
    st.lists(st.tuples(st.sampled_from([BID, ASK]), _prices, st.sampled_from([0.0, 0.5, 3.0])), max_size=60),
    st.lists(st.tuples(st.integers(0, 60), st.booleans()), max_size=12),
    st.sampled_from([1 << 20, 4]),
)
def test_ranges_of_one_batch_read_as_if_applied_in_order(
    rows: list[tuple[int, float, float]], cuts: list[tuple[int, bool]], compact_rows: int
) -> None:
    # A fast replay stages consecutive ranges of one batch's book rows (they extend the
    # last range) with reads between some of them: each level's last row in a range is
    # found from next_same, not a sort.
    levels = np.array([price * side for side, price, _ in rows], dtype=np.float64)
    sizes = np.array([size for _, _, size in rows], dtype=np.float64)
    nxt = next_same(levels)
    staged, applied = Book(), Book()
    lo = 0
    with patch.object(book_module, "_COMPACT_ROWS", compact_rows):
        for at, read in [*sorted(cuts), (len(rows), True)]:
            hi = max(lo, min(at, len(rows)))
            staged.stage(levels, sizes, nxt, lo, hi)
            for row in rows[lo:hi]:
                applied.apply(*row)
            lo = hi
            if read:
                assert staged.levels(BID) == applied.levels(BID)
                assert staged.levels(ASK) == applied.levels(ASK)


def test_a_range_that_skips_rows_is_staged_on_its_own() -> None:
    levels = np.array([100.0, 100.0, 100.0, -101.0], dtype=np.float64)
    sizes = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float64)
    b = Book()
    b.stage(levels, sizes, next_same(levels), 0, 1)
    b.stage(levels, sizes, next_same(levels), 3, 4)  # rows 1 and 2 were never staged
    assert b.levels(BID) == [(100.0, 1.0)] and b.levels(ASK) == [(101.0, 4.0)]


def test_next_same_points_at_each_rows_next_occurrence() -> None:
    # levels 5, -5, 5, 7, -5, 5: rows 0 -> 2 -> 5, 1 -> 4; the rest have none (6)
    assert next_same(np.array([5.0, -5.0, 5.0, 7.0, -5.0, 5.0])).tolist() == [2, 4, 5, 6, 6, 6]


def _play(ops: list[tuple[str, Any]], staged: Book, applied: Book) -> None:
    for op, arg in ops:
        if op == "stage":
            _stage(staged, [price * side for side, price, _ in arg], [size for _, _, size in arg])
            for row in arg:
                applied.apply(*row)
        elif op == "apply":
            staged.apply(*arg)
            applied.apply(*arg)
        elif op == "reset":
            staged.reset()
            applied.reset()
        else:
            assert staged.levels(BID) == applied.levels(BID)
            assert staged.levels(ASK) == applied.levels(ASK)
    for side in (BID, ASK):
        assert staged.levels(side) == applied.levels(side)
        assert staged.depth(side) == applied.depth(side)
        for p in (0.1, 1.0, 2.5, 6.0):
            assert staged.size_at(side, p) == applied.size_at(side, p)
    assert staged.best_bid() == applied.best_bid() and staged.best_ask() == applied.best_ask()
    assert staged.empty == applied.empty
    assert staged.walk(BID, 2.0) == applied.walk(BID, 2.0) and staged.walk(ASK, 2.0) == applied.walk(ASK, 2.0)


def test_staging_changes_the_version_a_reader_sees() -> None:
    b = _book([(100.0, 1.0)], [(101.0, 1.0)])
    before = b.version
    _stage(b, [100.0, -101.0, 99.5], [2.0, 0.0, 1.0])
    assert b.version > before
    assert b.levels(BID) == [(100.0, 2.0), (99.5, 1.0)]
    assert b.levels(ASK) == []


def test_an_unread_book_keeps_a_bounded_number_of_staged_rows() -> None:
    # A long tape whose book is never read must not keep every row it staged.
    b = Book()
    with patch.object(book_module, "_COMPACT_ROWS", 64):
        for i in range(1000):
            _stage(b, [100.0 + i % 5, -(101.0 + i % 3)], [float(i % 4), 1.0])
            assert sum(hi - lo for _, _, _, lo, hi in b._staged) <= 64 + 8
    assert b.levels(ASK) == [(101.0, 1.0), (102.0, 1.0), (103.0, 1.0)]
    # bid levels' last rows: 100 at i=995 (size 3), 101 at 996 (0: gone), 102 at 997 (1), 103 (2), 104 (3)
    assert b.levels(BID) == [(104.0, 3.0), (103.0, 2.0), (102.0, 1.0), (100.0, 3.0)]
