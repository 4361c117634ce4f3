"""BatchIndex's searches against a row-by-row scan (core/fastpath.py).

The replays' equivalence tests use small batches; these searches also skip whole
blocks of rows and binary-search per-key row lists, so they are checked here on
batches many blocks long.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpsim.core.batch import Batch
from perpsim.core.events import Kind
from perpsim.core.fastpath import _BLOCK, BatchIndex

KINDS = [int(Kind.TRADE), int(Kind.QUOTE), int(Kind.MARK), int(Kind.BOOK), int(Kind.FUNDING)]


def batch(kinds: list[int], symbols: list[int], prices: list[float]) -> Batch:
    n = len(kinds)
    px = np.array(prices, np.float64)
    f = np.zeros(n)
    return Batch(
        clock=np.arange(n, dtype=np.int64),
        ts=np.arange(n, dtype=np.int64),
        recv_ts=np.arange(n, dtype=np.int64),
        kind=np.array(kinds, np.int8),
        symbol=np.array(symbols, np.int32),
        symbols=("A", "B"),
        price=px,
        size=f + 1,
        side=np.ones(n, np.int8),
        bid=px - 1,
        bid_size=f + 1,
        ask=px + 1,
        ask_size=f + 1,
        rate=f,
        next_ts=np.zeros(n, np.int64),
        seq=np.zeros(n, np.int64),
        flags=np.zeros(n, np.uint8),
        text=[None] * n,
    )


def scan_outside(b: Batch, code: int, lo_row: int, hi_row: int, lo: float, hi: float) -> int:
    """The first price row of symbol ``code`` in the range whose price is not inside (lo, hi)."""
    for r in range(lo_row, hi_row):
        if is_price_row(b, code, r) and not lo < scan_price(b, r) < hi:  # NaN is never inside
            return r
    return hi_row


def is_price_row(b: Batch, code: int, r: int) -> bool:
    return b.symbol[r] == code and int(b.kind[r]) in (int(Kind.TRADE), int(Kind.QUOTE), int(Kind.MARK))


def scan_price(b: Batch, r: int) -> float:
    return float((b.bid[r] + b.ask[r]) / 2 if int(b.kind[r]) == int(Kind.QUOTE) else b.price[r])


def extremes(b: Batch, code: int) -> st.SearchStrategy[float]:
    """The symbol's least and greatest price, bid or ask in the batch: a bound equal to
    one is the edge between a whole batch inside the band and a row on its border."""
    rows = [r for r in range(len(b)) if is_price_row(b, code, r)]
    quotes = [r for r in rows if int(b.kind[r]) == int(Kind.QUOTE)]
    edges = [scan_price(b, r) for r in rows] + [float(b.bid[r]) for r in quotes] + [float(b.ask[r]) for r in quotes]
    edges = [p for p in edges if p == p]
    return st.sampled_from([min(edges), max(edges)]) if edges else bound


def calm_with_spikes(n: int) -> st.SearchStrategy[list[float]]:
    """Prices near 100 with a few spikes (NaN among them): a band search that passes
    whole blocks and must stop inside a later one."""
    spike = st.tuples(st.integers(0, n - 1), st.one_of(st.floats(80, 120), st.just(float("nan"))))

    def build(drift: list[float], spikes: list[tuple[int, float]]) -> list[float]:
        px = [100.0 + d for d in drift]
        for i, v in spikes:
            px[i] = v
        return px

    drift = st.lists(st.floats(-0.5, 0.5), min_size=n, max_size=n)
    return st.builds(build, drift, st.lists(spike, max_size=6))


rows = st.integers(_BLOCK * 3, _BLOCK * 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(KINDS), min_size=n, max_size=n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        calm_with_spikes(n),
    )
)
bound = st.one_of(
    st.floats(98, 102), st.floats(85, 115), st.just(float("inf")), st.just(float("-inf")), st.just(float("nan"))
)


@settings(max_examples=80, deadline=None)
@given(rows, st.data())
def test_first_outside_finds_the_first_row_a_scan_finds(cols: tuple[list[int], list[int], list[float]], data) -> None:
    b = batch(*cols)
    index = BatchIndex(b, [0, 1])
    n = len(b)
    for _ in range(8):
        code = data.draw(st.integers(0, 1))
        lo_row = data.draw(st.integers(0, n))
        hi_row = data.draw(st.integers(lo_row, n))
        edge = st.one_of(bound, extremes(b, code))
        lo, hi = data.draw(edge), data.draw(edge)
        got = index.first_outside(code, lo_row, hi_row, lo, hi)
        want = scan_outside(b, code, lo_row, hi_row, lo, hi)
        assert got == want, (code, lo_row, hi_row, lo, hi)


@settings(max_examples=50, deadline=None)
@given(rows, st.data())
def test_last_finds_the_last_row_of_a_key_before_a_point(cols: tuple[list[int], list[int], list[float]], data) -> None:
    b = batch(*cols)
    index = BatchIndex(b, [0, 1])
    n = len(b)
    for _ in range(8):
        target = data.draw(st.integers(0, 1)) * 8 + data.draw(st.sampled_from(KINDS))
        a = data.draw(st.integers(0, n))
        p = data.draw(st.integers(a, n))
        want = max((r for r in range(a, p) if int(index.key[r]) == target), default=-1)
        assert index.last(target, a, p) == want


def test_a_wide_band_passes_a_batch_whose_every_block_is_inside() -> None:
    n = _BLOCK * 5 + 3  # a short last block
    prices = [100.0] * n
    b = batch([int(Kind.TRADE)] * n, [0] * n, prices)
    assert BatchIndex(b, [0, 1]).first_outside(0, 0, n, 90.0, 110.0) == n
    for r in (0, _BLOCK * 2 + 7, n - 1):  # first block, a middle one, the last one
        spiked = batch([int(Kind.TRADE)] * n, [0] * n, [*prices[:r], 110.0, *prices[r + 1 :]])
        assert BatchIndex(spiked, [0, 1]).first_outside(0, 0, n, 90.0, 110.0) == r  # 110 is not inside
        assert BatchIndex(spiked, [0, 1]).first_outside(0, 0, n, 90.0, 110.5) == n


def test_a_crossed_quote_is_bounded_by_its_bid_and_ask_whichever_is_higher() -> None:
    # An unvalidated tape: bid 130 over ask 100, mid 115, on the upper edge of (90, 115).
    n = 4
    b = batch([int(Kind.TRADE), int(Kind.QUOTE), int(Kind.TRADE), int(Kind.TRADE)], [0] * n, [100.0] * n)
    b.bid[1], b.ask[1] = 130.0, 100.0
    assert BatchIndex(b, [0, 1]).first_outside(0, 0, n, 90.0, 115.0) == 1
    assert BatchIndex(b, [0, 1]).first_outside(0, 0, n, 90.0, 116.0) == n


@pytest.mark.parametrize("kind", [Kind.TRADE, Kind.QUOTE, Kind.MARK], ids=["trade", "quote", "mark"])
def test_a_batch_is_passed_only_when_every_kind_of_price_row_is_inside(kind: Kind) -> None:
    # Trades at 100 and one row of ``kind`` at 112 (a quote: bid 111, ask 113, mid 112).
    n = _BLOCK * 3
    prices = [100.0] * n
    prices[150] = 112.0
    kinds = [int(Kind.TRADE)] * n
    kinds[150] = int(kind)
    b = batch(kinds, [0] * n, prices)
    assert BatchIndex(b, [0, 1]).first_outside(0, 0, n, 90.0, 111.5) == 150
    assert BatchIndex(b, [0, 1]).first_outside(0, 0, n, 90.0, 112.5) == n
