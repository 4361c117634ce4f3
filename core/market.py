"""Per-symbol market state: last trade, top of book, L2 book, mark, funding, mark window.

Symbols are small integers on the hot path; state lives in parallel lists indexed
by symbol id so one row costs a few list stores.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

from perpsim.core.book import Book
from perpsim.core.instruments import exact

__all__ = ["MarketState", "mid_exact"]

_NAN = math.nan


def mid_exact(bid: float, ask: float) -> Fraction:
    """The exact midpoint of two snapped prices."""
    return (exact(bid) + exact(ask)) / 2


class MarketState:
    """What the tape has said so far, per symbol."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self.last_px: list[float] = []
        self.last_size: list[float] = []
        self.last_ts: list[int] = []
        self.bid: list[float] = []
        self.bid_size: list[float] = []
        self.ask: list[float] = []
        self.ask_size: list[float] = []
        self.quote_ts: list[int] = []
        self.mark_px: list[float] = []
        self.mark_ts: list[int] = []
        self.rate: list[float] = []
        self.next_funding: list[int] = []
        self.windows: list[deque[float]] = []
        self.window_ts: list[int] = []
        self.books: list[Book | None] = []

    def intern(self, name: str, window: int) -> int:
        sid = self.ids.get(name)
        if sid is not None:
            return sid
        sid = len(self.names)
        self.ids[name] = sid
        self.names.append(name)
        for col in (self.last_px, self.last_size, self.bid, self.bid_size, self.ask, self.ask_size):
            col.append(_NAN)
        for col in (self.mark_px, self.rate):
            col.append(_NAN)
        for icol in (self.last_ts, self.quote_ts, self.mark_ts, self.next_funding, self.window_ts):
            icol.append(0)
        self.windows.append(deque(maxlen=window))
        self.books.append(None)
        return sid

    def has_price(self, sid: int) -> bool:
        """True once the symbol has a trade or a quote (eligible for the cycle)."""
        return self.last_px[sid] == self.last_px[sid] or self.bid[sid] == self.bid[sid]

    def strategy_mark(self, sid: int) -> float | None:
        """Last trade price, else the last quote's mid (DESIGN: Marks), else None."""
        px = self.last_px[sid]
        if px == px:
            return px
        b, a = self.bid[sid], self.ask[sid]
        if b == b and a == a:
            return float(mid_exact(b, a))
        return None

    def venue_mark(self, sid: int) -> float | None:
        """Last ``mark`` row, else last trade, else mid, else None."""
        px = self.mark_px[sid]
        if px == px:
            return px
        return self.strategy_mark(sid)

    def mark_age_ns(self, sid: int, now: int) -> int | None:
        """How old the newest price information for the symbol is."""
        t = max(self.last_ts[sid], self.quote_ts[sid], self.mark_ts[sid])
        return now - t if t else None
