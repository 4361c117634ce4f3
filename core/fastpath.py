"""Fast-forward: advance market state over a batch without one Python step per row.

Between two points where something can happen (a timer is due, a row that is
not a trade, quote or mark arrives), nothing reads market state, so only the
last trade, quote and mark of each symbol before the next point matter. A
:class:`BatchIndex` finds those rows with vectorized searches over the rows since
the previous point, and :meth:`FastIndex.sync` copies them into the market
state, exactly as the reference loop would have left it. The driver uses it only
while no strategy hook wants ticks and the venue has no order that could fill
(``venue.active``), so the run's events are bit-identical to the reference
engine's (DESIGN.md §5; tests/sim/test_fastpath.py checks equal digests).

A batch costs one pass to find its other rows; the rows of each symbol and kind
are found on first use, in one pass each, and every sync then finds its last
trade, quote and mark with a binary search. A margin-band search reads blocks of
prices by their least and greatest first, so the work stays linear in the batch
and shrinks where prices stay inside the band.

Book rows carry a level's absolute size, so the book at a point depends only on
the last row of each level: a sync stages the rows (:meth:`~perpsim.core.book.Book.stage`)
and the book applies each level's last size when it is next read (validation
guarantees each row is a valid level; rows that are not fall back to applying all
rows in order, so a bad row raises exactly where the reference loop would).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from perpsim.core.batch import Batch, first_true
from perpsim.core.book import Book, next_same
from perpsim.core.events import BOOK, MARK, QUOTE, TRADE

if TYPE_CHECKING:
    from perpsim.core.engine import Engine

__all__ = ["BatchIndex", "FastIndex"]

_BLOCK = 64  # prices per block of a band search


class BatchIndex:
    """What fast-forwarding needs to know about one batch: its rows other than trades,
    quotes, marks and book levels, and (made on first use) each symbol's price and book
    rows. It depends on the batch and the engine's symbol ids alone, so the engines that
    one decode feeds (sim/replay.py's ``replay_many``) share one.

    ``key`` packs each row's symbol code and kind (``code * 8 + kind``), so "the last
    trade of BTC before row p" is one comparison over a slice.
    """

    def __init__(self, batch: Batch, sids: list[int]) -> None:
        kind = batch.kind
        self.batch = batch
        self.key = batch.symbol * 8 + kind  # int32: every Batch maker gives symbol codes as int32
        plain = kind <= BOOK
        plain |= kind == MARK
        self.special: list[int] = np.flatnonzero(~plain).tolist()
        present = np.bincount(self.key, minlength=len(batch.symbols) * 8)
        # (engine symbol id, the keys of its trade, quote, mark and book rows in this batch; -1: none)
        self.targets: list[tuple[int, int, int, int, int]] = []
        for c, sid in enumerate(sids):
            t, q, m, bk = (c * 8 + k if present[c * 8 + k] else -1 for k in (TRADE, QUOTE, MARK, BOOK))
            if t >= 0 or q >= 0 or m >= 0 or bk >= 0:
                self.targets.append((sid, t, q, m, bk))
        self._code = {sid: c for c, sid in enumerate(sids)}
        self._keys = {target[0]: target[1:4] for target in self.targets}
        self._bounds: dict[int, tuple[float, float]] = {}
        self._rows: dict[int, Any] = {}
        self._prices: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._books: dict[int, tuple[Any, Any, Any]] = {}
        self._px: Any = None
        self._moves: Any = None

    def rows_of(self, target: int) -> Any:
        """The rows with key ``target``, ascending; found on first use."""
        found = self._rows.get(target)
        if found is None:
            found = self._rows[target] = np.flatnonzero(self.key == target)
        return found

    def last(self, target: int, a: int, p: int) -> int:
        """The last row in ``[a, p)`` with key ``target``, or -1."""
        rows = self.rows_of(target)
        j = int(rows.searchsorted(p)) - 1
        return int(rows[j]) if j >= 0 and rows[j] >= a else -1

    def book_rows(self, target: int) -> tuple[Any, Any, Any]:
        """Row indices of one symbol's book rows in this batch, and what
        :meth:`~perpsim.core.book.Book.stage` takes of them: each row's level
        (``price * side``), size and next row of the same level; made on first use. A batch
        with a row that is not a valid level (not a validated tape) gets ``raw`` (side,
        price, size) instead: applied row by row, so a bad row raises where the reference
        loop would."""
        found = self._books.get(target)
        if found is None:
            b = self.batch
            rows = self.rows_of(target)
            side, price, size = b.side[rows], b.price[rows], b.size[rows]
            if ((side == 1) | (side == -1)).all() and (price > 0).all() and (size >= 0).all():
                levels = price * side
                found = (rows, (levels, size, next_same(levels)), None)
            else:
                found = (rows, None, (side.tolist(), price.tolist(), size.tolist()))
            self._books[target] = found
        return found

    def _range(self, sid: int) -> tuple[float, float]:
        """Bounds on every price ``sid``'s rows move the mark to in this batch: its trades'
        and marks' prices, its quotes' bids and asks (a mid lies between them). NaN when
        a price is NaN, so no band holds them. Made on first use, from the rows a sync
        finds anyway."""
        found = self._bounds.get(sid)
        if found is None:
            b = self.batch
            t, q, m = self._keys.get(sid, (-1, -1, -1))
            # a key >= 0 has rows (BatchIndex.targets); numpy's min and max keep a NaN, Python's drop it
            sources = ((t, b.price), (q, b.bid), (q, b.ask), (m, b.price))
            cols = [col[self.rows_of(key)] for key, col in sources if key >= 0]
            lows, highs = [x.min() for x in cols], [x.max() for x in cols]
            found = self._bounds[sid] = (float(np.min(lows)), float(np.max(highs))) if cols else (np.inf, -np.inf)
        return found

    def _price_rows(self, sid: int) -> tuple[Any, Any, Any, Any]:
        """Row indices of ``sid``'s trades, quotes and marks in this batch, the price each
        moves the venue mark to (quote: the mid; NaN as +inf, outside every band), and
        each block of :data:`_BLOCK` prices' least and greatest; made on first use."""
        found = self._prices.get(sid)
        if found is None:
            b = self.batch
            if self._px is None:  # once per batch, for every symbol: price rows and their prices
                kind = b.kind
                self._moves = (kind <= QUOTE) | (kind == MARK)
                px = np.where(kind == QUOTE, (b.bid + b.ask) / 2, b.price)
                px[np.isnan(px)] = np.inf
                self._px = px
            rows = np.flatnonzero(self._moves & (b.symbol == self._code[sid]))
            px = self._px[rows]
            starts = np.arange(0, len(px), _BLOCK)
            if len(px):
                found = (rows, px, np.minimum.reduceat(px, starts), np.maximum.reduceat(px, starts))
            else:
                found = (rows, px, px, px)
            self._prices[sid] = found
        return found

    def first_outside(self, sid: int, lo_row: int, hi_row: int, lo: float, hi: float) -> int:
        """The first row in ``[lo_row, hi_row)`` where ``sid``'s price (trade, mark, or quote mid)
        is not strictly inside ``(lo, hi)``; ``hi_row`` if none.

        Conservative: any row that might move the venue mark out of the band is a stop,
        and the reference loop dispatches it. Whole blocks whose least and greatest
        prices lie inside are passed over unread; so is a whole batch whose prices lie
        inside a wide band (low leverage, a position far from liquidation), with no
        per-row prices made for it.
        """
        if sid not in self._code:
            return hi_row
        if lo != lo or hi != hi:  # a NaN bound: no price is strictly inside
            lo, hi = np.inf, -np.inf
        low, high = self._range(sid)
        if lo < low and high < hi:
            return hi_row
        rows, px, least, most = self._price_rows(sid)
        a, b = int(rows.searchsorted(lo_row)), int(rows.searchsorted(hi_row))
        while a < b:
            end = min(b, (a // _BLOCK + 1) * _BLOCK)
            seg = px[a:end]
            k = first_true((seg <= lo) | (seg >= hi))
            if k >= 0:
                return int(rows[a + k])
            if end == b:
                break
            k0, k1 = end // _BLOCK, (b - 1) // _BLOCK + 1
            k = first_true((least[k0:k1] <= lo) | (most[k0:k1] >= hi))
            if k < 0:
                break
            a = (k0 + k) * _BLOCK
        return hi_row


class FastIndex:
    """One engine's pass over a batch: syncs its market state from the :class:`BatchIndex`."""

    def __init__(self, rows: BatchIndex) -> None:
        self.rows = rows
        self._synced = 0

    def dispatched(self, p: int) -> None:
        """Rows before ``p`` went through the reference loop: their state is in place."""
        self._synced = max(self._synced, p)

    def sync(self, engine: Engine, p: int) -> None:
        """Make market state what the reference loop leaves after rows ``< p`` of this batch.

        Rows before the previous sync point are already in the state (synced, or
        dispatched by the reference loop), so only the rows since then are searched.
        """
        a = self._synced
        if p <= a:
            return
        self._synced = p
        rows = self.rows
        b: Any = rows.batch
        m = engine.market
        clk = b.clock
        last = rows.last
        for sid, t, q, k, bk in rows.targets:
            if bk >= 0:
                self._book(engine, sid, bk, a, p)
            if t >= 0 and (r := last(t, a, p)) >= 0:
                m.last_px[sid] = float(b.price[r])
                m.last_size[sid] = float(b.size[r])
                m.last_ts[sid] = int(clk[r])
            if q >= 0 and (r := last(q, a, p)) >= 0:
                m.bid[sid] = float(b.bid[r])
                m.bid_size[sid] = float(b.bid_size[r])
                m.ask[sid] = float(b.ask[r])
                m.ask_size[sid] = float(b.ask_size[r])
                m.quote_ts[sid] = int(clk[r])
            if k >= 0 and (r := last(k, a, p)) >= 0:
                m.mark_px[sid] = float(b.price[r])
                m.mark_ts[sid] = int(clk[r])
                engine.mark_seen(sid)

    def _book(self, engine: Engine, sid: int, target: int, a: int, p: int) -> None:
        rows, staged, raw = self.rows.book_rows(target)
        lo, hi = int(rows.searchsorted(a)), int(rows.searchsorted(p))
        if lo == hi:
            return
        m = engine.market
        book = m.books[sid]
        if book is None:
            book = m.books[sid] = Book()
        engine.mark_seen(sid)
        if raw is None:
            levels, sizes, nxt = staged
            book.stage(levels, sizes, nxt, lo, hi)
        else:
            for s_, px, sz in zip(*(col[lo:hi] for col in raw), strict=True):
                book.apply(s_, px, sz)
