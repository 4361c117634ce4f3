"""Fast-forward: advance market state over a batch without one Python step per row.

Between two points where something can happen (a timer is due, a row that is
not a trade, quote or mark arrives), nothing reads market state, so only the
last trade, quote and mark of each symbol before the next point matter. A
:class:`FastIndex` lists, per symbol, the rows of each of those kinds; :meth:`sync`
copies the last of each before a row index into the market state, exactly as the
reference loop would have left it. The driver uses it only while no strategy
hook wants ticks and the venue has no order that could fill (``venue.active``),
so the run's events are bit-identical to the reference engine's (DESIGN.md §5;
tests/sim/test_fastpath.py checks equal digests).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

import numpy as np

from perpsim.core.batch import Batch
from perpsim.core.events import Kind

if TYPE_CHECKING:
    from perpsim.core.engine import Engine

__all__ = ["FastIndex"]

_PLAIN = (Kind.TRADE, Kind.QUOTE, Kind.MARK)


class FastIndex:
    """Per-symbol row indices of trades, quotes and marks in one batch, and the other rows."""

    def __init__(self, batch: Batch, sids: list[int]) -> None:
        kind, code = batch.kind, batch.symbol
        self.batch = batch
        self.special: list[int] = np.flatnonzero(
            (kind != Kind.TRADE) & (kind != Kind.QUOTE) & (kind != Kind.MARK)
        ).tolist()
        self.by_symbol: list[tuple[int, list[int], list[int], list[int]]] = []
        # per engine symbol id: (row indices, the price that moves the venue mark) of its price rows
        self.prices: dict[int, tuple[Any, Any]] = {}
        present = np.unique(code).tolist()
        for c in present:
            mine = code == c
            trades = np.flatnonzero(mine & (kind == Kind.TRADE))
            quotes = np.flatnonzero(mine & (kind == Kind.QUOTE))
            marks = np.flatnonzero(mine & (kind == Kind.MARK))
            self.by_symbol.append((sids[c], trades.tolist(), quotes.tolist(), marks.tolist()))
            rows = np.flatnonzero(mine & ((kind == Kind.TRADE) | (kind == Kind.QUOTE) | (kind == Kind.MARK)))
            px = np.where(batch.kind[rows] == Kind.QUOTE, (batch.bid[rows] + batch.ask[rows]) / 2, batch.price[rows])
            self.prices[sids[c]] = (rows, px)

    def first_outside(self, sid: int, lo_row: int, hi_row: int, lo: float, hi: float) -> int:
        """The first row in ``[lo_row, hi_row)`` where ``sid``'s price (trade, mark, or quote mid)
        is not strictly inside ``(lo, hi)``; ``hi_row`` if none.

        Conservative: any row that might move the venue mark out of the band is a stop,
        and the reference loop dispatches it.
        """
        found = self.prices.get(sid)
        if found is None:
            return hi_row
        rows, px = found
        a, b = np.searchsorted(rows, (lo_row, hi_row))
        if a == b:
            return hi_row
        seg = px[a:b]
        out = np.flatnonzero((seg <= lo) | (seg >= hi) | (seg != seg))
        return int(rows[a + out[0]]) if out.size else hi_row

    def sync(self, engine: Engine, p: int) -> None:
        """Make market state what the reference loop leaves after rows ``< p`` of this batch."""
        b: Any = self.batch
        m = engine.market
        clk = b.clock
        for sid, trades, quotes, marks in self.by_symbol:
            if trades:
                t = bisect_left(trades, p) - 1
                if t >= 0:
                    r = trades[t]
                    m.last_px[sid] = float(b.price[r])
                    m.last_size[sid] = float(b.size[r])
                    m.last_ts[sid] = int(clk[r])
            if quotes:
                t = bisect_left(quotes, p) - 1
                if t >= 0:
                    r = quotes[t]
                    m.bid[sid] = float(b.bid[r])
                    m.bid_size[sid] = float(b.bid_size[r])
                    m.ask[sid] = float(b.ask[r])
                    m.ask_size[sid] = float(b.ask_size[r])
                    m.quote_ts[sid] = int(clk[r])
            if marks:
                t = bisect_left(marks, p) - 1
                if t >= 0:
                    r = marks[t]
                    m.mark_px[sid] = float(b.price[r])
                    m.mark_ts[sid] = int(clk[r])
                    engine.mark_seen(sid)
