"""Where a taking order fills, and what a resting order sees (issue 4 item 2).

Liquidity source, per symbol and per decision: the L2 book when the symbol has one
that is not empty (``book`` rows), else the top-of-book quote, else the last trade
(the foundation rule: "the last quote, however old, else the last trade"). With a
book, quotes are not used for matching (the book is the consistent depth picture;
quotes may be from another stream and another moment).

Taking (market orders, the marketable part of limit orders, triggered stops):

- **With a book** the order walks the opposite side level by level, best first,
  up to its limit price; the result is **one fill per level**, each at that level's
  price, so every fill is at a price the book displayed, and the order's VWAP is
  :attr:`perpsim.core.orders.Order.avg_price`. What the book cannot fill is left
  to the time in force (IOC/market: cancelled; FOK: nothing fills; GTC: rests).
  Fills do **not** consume the tape's book: the book is the tape's record of other
  people's orders and the next ``book`` row overwrites it anyway; a strategy that
  takes the same level twice before the tape updates it is assumed small against it.
  The remainder of a limit order that took liquidity and rests facing what is left
  displayed of it is not filled by that stale liquidity: the opposite side must move
  away from its price once before a crossing fills it again (trades still fill it).
  ``cap_to_top`` and ``slippage_bps`` do not apply (the walk is the slippage).
- **Without a book** the foundation rule: the whole quantity at the touch (ask for a
  buy, bid for a sell; the last trade when there is no quote). Options:
  ``cap_to_top`` caps the fill at the displayed top size (the quote's size, or the
  last trade's size), the rest is left to the time in force as above (a market
  order's rest is cancelled, reason ``cap_to_top``); ``slippage_bps`` moves the fill
  price against the order by that many basis points of the touch, rounded to the
  tick away from the order (never beyond a limit price).

A limit order is marketable when the opposite touch is at or through its price
(buy: ``ask <= limit``). Without a quote or book the last trade is the touch on both
sides.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

from perpsim.core.book import Book
from perpsim.core.config import VenueConfig
from perpsim.core.instruments import Instrument, exact
from perpsim.core.market import MarketState

__all__ = ["Take", "book_of", "crossed", "take", "touch", "visible"]

_BPS: Final = Fraction(1, 10_000)


def book_of(market: MarketState, sid: int) -> Book | None:
    """The symbol's L2 book when it has one with at least one level."""
    b = market.books[sid]
    if isinstance(b, Book) and not b.empty:
        return b
    return None


def touch(market: MarketState, sid: int, side: int) -> tuple[float, float] | None:
    """The price and size an order of ``side`` (+1 buy) would take first, or None.

    Book best level, else the quote's ask/bid, else the last trade (its size).
    """
    book = book_of(market, sid)
    if book is not None:
        return book.best_ask() if side > 0 else book.best_bid()
    px = market.ask[sid] if side > 0 else market.bid[sid]
    if px == px:
        return px, market.ask_size[sid] if side > 0 else market.bid_size[sid]
    px = market.last_px[sid]
    if px == px:
        return px, market.last_size[sid]
    return None


class Take:
    """The fills a taking order gets now: ``fills`` as ``(price, qty)``, ``short`` why not more."""

    __slots__ = ("fills", "short")

    def __init__(self, fills: list[tuple[float, Fraction]], short: str | None) -> None:
        self.fills = fills
        self.short = short

    @property
    def qty(self) -> Fraction:
        return sum((q for _, q in self.fills), Fraction(0))


def _snap_out(px: Fraction, tick: float | None, side: int) -> Fraction:
    if tick is None:
        return px
    t = exact(tick)
    n = px / t
    return (math.ceil(n) if side > 0 else math.floor(n)) * t


def _walk(book: Book, side: int, qty: Fraction, limit: Fraction | None) -> Take:
    fills: list[tuple[float, Fraction]] = []
    short: str | None = None
    for px, lvl in book.walk(-side, float(qty)):
        if limit is not None and (exact(px) > limit if side > 0 else exact(px) < limit):
            short = "limit"
            break
        fills.append((px, exact(lvl)))
    got = sum((q for _, q in fills), Fraction(0))
    if short is None and got < qty:
        short = "no_liquidity"
    return Take(fills, short)


def take(
    market: MarketState,
    sid: int,
    side: int,
    qty: Fraction,
    limit: Fraction | None,
    cfg: VenueConfig,
    inst: Instrument,
) -> Take:
    """Price a taking order of ``qty`` (+1 buy) up to ``limit`` (None: any price).

    Returns:
        The fills, and ``short`` = None (all of ``qty``), ``"limit"`` (the rest is
        beyond the limit), ``"no_liquidity"`` (the book or touch ran out) or
        ``"cap_to_top"``.
    """
    book = book_of(market, sid)
    if book is not None:
        return _walk(book, side, qty, limit)
    t = touch(market, sid, side)
    if t is None:
        return Take([], "no_liquidity")
    px, size = t
    ex = exact(px)
    if limit is not None and (ex > limit if side > 0 else ex < limit):
        return Take([], "limit")
    q: Fraction = qty
    short: str | None = None
    if cfg.cap_to_top:
        lot_size: Fraction = exact(inst.lot)
        top: Fraction = math.floor(exact(size) / lot_size) * lot_size if size == size and size > 0 else Fraction(0)
        if top < qty:
            q, short = top, "cap_to_top"
    fill_px: float = px
    if cfg.slippage_bps:
        slipped = _snap_out(ex * (1 + side * exact(cfg.slippage_bps) * _BPS), inst.tick, side)
        if limit is not None:
            slipped = min(slipped, limit) if side > 0 else max(slipped, limit)
        fill_px = float(slipped)
    return Take([(fill_px, q)] if q > 0 else [], short)


def crossed(market: MarketState, sid: int, side: int, limit: Fraction) -> bool:
    """True when the opposite side of the book (else the quote) is at or through ``limit``.

    A resting order of ``side`` at ``limit`` is then filled: the level it sat in was consumed.
    The last trade does not count here (trades are handled as trades).
    """
    book = book_of(market, sid)
    if book is not None:
        best = book.best_ask() if side > 0 else book.best_bid()
        if best is None:
            return False
        px = best[0]
    else:
        px = market.ask[sid] if side > 0 else market.bid[sid]
        if px != px:
            return False
    ex = exact(px)
    return ex <= limit if side > 0 else ex >= limit


def visible(market: MarketState, sid: int, side: int, limit: Fraction) -> Fraction | None:
    """The displayed size at ``limit`` on the order's own side, or None when not visible.

    Book: the level's size (0 when no level). Quote: its size at the touch, 0 when the
    price improves on the touch, None behind it (or with no quote).
    """
    book = book_of(market, sid)
    if book is not None:
        return exact(book.size_at(side, float(limit)))
    px = market.bid[sid] if side > 0 else market.ask[sid]
    if px != px:
        return None
    ex = exact(px)
    if ex == limit:
        return exact(market.bid_size[sid] if side > 0 else market.ask_size[sid])
    if (limit > ex) if side > 0 else (limit < ex):
        return Fraction(0)
    return None
