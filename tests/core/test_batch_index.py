"""BatchIndex's searches against a row-by-row scan (core/fastpath.py).

The replays' equivalence tests use small batches; these searches also skip whole
blocks of rows and binary-search per-key row lists, so they are checked here on
batches many blocks long.
"""

from __future__ import annotations

import numpy as np
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
        k = int(b.kind[r])
        if b.symbol[r] != code or k not in (int(Kind.TRADE), int(Kind.QUOTE), int(Kind.MARK)):
            continue
        px = (b.bid[r] + b.ask[r]) / 2 if k == int(Kind.QUOTE) else b.price[r]
        if not lo < px < hi:  # NaN is never inside
            return r
    return hi_row


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
        lo, hi = data.draw(bound), data.draw(bound)
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
