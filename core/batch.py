"""A column batch: tape rows as numpy arrays, the engine's fast input (DESIGN.md §5).

The tape reader builds these from Arrow row groups; the engine never sees Arrow.
Nulls are encoded so the hot path needs no masks: NaN for floats, 0 for ``side``,
``flags`` and ``next_ts``, -1 for ``seq``, None in ``text``.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import compress
from typing import Any

import msgspec
import numpy as np

from perpsim.core.events import (
    BookLevel,
    BookReset,
    Funding,
    Kind,
    Mark,
    MarketEvent,
    Quote,
    Status,
    TimerFired,
    Trade,
)

__all__ = ["NULL_SEQ", "Batch", "batch_events", "batch_from_events", "symbol_mask"]

NULL_SEQ = -1


class Batch(msgspec.Struct, kw_only=True):
    """Rows of one or more tape row groups, sorted by ``clock``.

    ``symbol`` holds codes into ``symbols`` (the batch's dictionary).
    ``clock`` is the column the tape is sorted by (``ts`` or ``recv_ts``).
    """

    clock: Any
    ts: Any
    recv_ts: Any
    kind: Any
    symbol: Any
    symbols: tuple[str, ...]
    price: Any
    size: Any
    side: Any
    bid: Any
    bid_size: Any
    ask: Any
    ask_size: Any
    rate: Any
    next_ts: Any
    seq: Any
    flags: Any
    text: list[str | None]

    def __len__(self) -> int:
        return int(self.clock.shape[0])

    def rows(self, sel: slice | np.ndarray[Any, Any]) -> Batch:
        """The rows ``sel`` picks: a slice gives views, a boolean mask copies; the
        symbol dictionary is shared. The whole batch itself when nothing is dropped."""
        if isinstance(sel, slice):
            if sel.indices(len(self))[:2] == (0, len(self)):
                return self
            text = self.text[sel]
        else:
            if sel.all():
                return self
            text = list(compress(self.text, sel.tolist()))
        fields = {f: getattr(self, f)[sel] for f in _ARRAYS}
        return Batch(symbols=self.symbols, text=text, **fields)


def symbol_mask(b: Batch, allowed: Collection[str]) -> np.ndarray[Any, Any]:
    """Which rows are about one of the ``allowed`` symbols."""
    keep = [i for i, s in enumerate(b.symbols) if s in allowed]
    mask: np.ndarray[Any, Any] = np.isin(b.symbol, np.asarray(keep, dtype=b.symbol.dtype))
    return mask


_ARRAYS = tuple(f for f in Batch.__struct_fields__ if f not in ("symbols", "text"))


_NAN = float("nan")
_TRADE, _QUOTE, _BOOK, _BOOK_RESET = int(Kind.TRADE), int(Kind.QUOTE), int(Kind.BOOK), int(Kind.BOOK_RESET)
_FUNDING, _MARK, _STATUS, _TIMER = int(Kind.FUNDING), int(Kind.MARK), int(Kind.STATUS), int(Kind.TIMER)
_SHARED_MAX = 64  # constant columns up to this length are shared (one feed message's rows)
_NAN_COLS: dict[int, np.ndarray[Any, Any]] = {}
_ZERO_COLS: dict[int, np.ndarray[Any, Any]] = {}


def _constant(cache: dict[int, np.ndarray[Any, Any]], n: int, value: float, dtype: Any) -> np.ndarray[Any, Any]:
    """A column of ``n`` times ``value``; short ones are shared and read-only."""
    if n > _SHARED_MAX:
        return np.full(n, value, dtype=dtype)
    col = cache.get(n)
    if col is None:
        col = cache[n] = np.full(n, value, dtype=dtype)
        col.flags.writeable = False  # shared by every batch of this length
    return col


def batch_from_events(events: list[MarketEvent], clock: str = "ts") -> Batch:
    """Build a batch from market events (the live path, one message at a time; tests).

    One pass into Python lists, then one array per column that varies; a column no
    event uses is a shared constant. This is on the live path for every message.
    """
    n = len(events)
    ts, rts, kind, sym = [0] * n, [0] * n, [0] * n, [0] * n
    seq, flags, side = [NULL_SEQ] * n, [0] * n, [0] * n
    text: list[str | None] = [None] * n
    price: list[float] | None = None
    size: list[float] | None = None
    quote: list[list[float]] | None = None  # bid, bid_size, ask, ask_size
    rate: list[float] | None = None
    next_ts: list[int] | None = None
    names: dict[str, int] = {}
    for i, ev in enumerate(events):
        code = names.get(ev.symbol)
        if code is None:
            code = names[ev.symbol] = len(names)
        sym[i], ts[i], rts[i], flags[i] = code, ev.ts, ev.recv_ts, ev.flags
        if ev.seq is not None:
            seq[i] = ev.seq
        if type(ev) is Quote:  # most frequent first; `type() is` is the cheapest test
            kind[i] = _QUOTE
            if quote is None:
                quote = [[_NAN] * n, [_NAN] * n, [_NAN] * n, [_NAN] * n]
            quote[0][i], quote[1][i], quote[2][i], quote[3][i] = ev.bid, ev.bid_size, ev.ask, ev.ask_size
        elif type(ev) is BookLevel or type(ev) is Trade:
            kind[i] = _BOOK if type(ev) is BookLevel else _TRADE
            if price is None:
                price = [_NAN] * n
            if size is None:
                size = [_NAN] * n
            price[i], size[i], side[i] = ev.price, ev.size, ev.side
        elif type(ev) is BookReset:
            kind[i] = _BOOK_RESET
        elif type(ev) is Status:
            kind[i] = _STATUS
            text[i] = ev.text
        elif type(ev) is Funding:
            kind[i] = _FUNDING
            if rate is None:
                rate = [_NAN] * n
            if next_ts is None:
                next_ts = [0] * n
            rate[i], next_ts[i] = ev.rate, ev.next_ts or 0
        elif type(ev) is Mark:
            kind[i] = _MARK
            if price is None:
                price = [_NAN] * n
            price[i] = ev.price
        elif type(ev) is TimerFired:
            kind[i] = _TIMER
            text[i] = ev.text
            if next_ts is None:
                next_ts = [0] * n
            next_ts[i] = ev.next_ts
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"not a market event: {ev!r}")

    def f64(col: list[float] | None) -> np.ndarray[Any, Any]:
        return _constant(_NAN_COLS, n, _NAN, np.float64) if col is None else np.array(col, np.float64)

    ts_a, rts_a = np.array(ts, np.int64), np.array(rts, np.int64)
    bid, bid_size, ask, ask_size = quote if quote is not None else (None, None, None, None)
    return Batch(
        clock=rts_a if clock == "recv_ts" else ts_a,
        ts=ts_a,
        recv_ts=rts_a,
        next_ts=_constant(_ZERO_COLS, n, 0, np.int64) if next_ts is None else np.array(next_ts, np.int64),
        kind=np.array(kind, np.int8),
        symbol=np.array(sym, np.int32),
        symbols=tuple(names),
        side=np.array(side, np.int8),
        seq=np.array(seq, np.int64),
        flags=np.array(flags, np.uint8),
        text=text,
        price=f64(price),
        size=f64(size),
        bid=f64(bid),
        bid_size=f64(bid_size),
        ask=f64(ask),
        ask_size=f64(ask_size),
        rate=f64(rate),
    )


def batch_events(b: Batch) -> list[MarketEvent]:
    """The inverse of :func:`batch_from_events`: one event per row (tests and the feed server)."""
    out: list[MarketEvent] = []
    for i in range(len(b)):
        common: dict[str, Any] = {
            "ts": int(b.ts[i]),
            "recv_ts": int(b.recv_ts[i]),
            "symbol": b.symbols[int(b.symbol[i])],
            "seq": None if int(b.seq[i]) == NULL_SEQ else int(b.seq[i]),
            "flags": int(b.flags[i]),
        }
        k = int(b.kind[i])
        ev: MarketEvent
        if k == Kind.TRADE:
            ev = Trade(price=float(b.price[i]), size=float(b.size[i]), side=int(b.side[i]), **common)
        elif k == Kind.QUOTE:
            ev = Quote(
                bid=float(b.bid[i]),
                bid_size=float(b.bid_size[i]),
                ask=float(b.ask[i]),
                ask_size=float(b.ask_size[i]),
                **common,
            )
        elif k == Kind.BOOK:
            ev = BookLevel(price=float(b.price[i]), size=float(b.size[i]), side=int(b.side[i]), **common)
        elif k == Kind.BOOK_RESET:
            ev = BookReset(**common)
        elif k == Kind.FUNDING:
            nt = int(b.next_ts[i])
            ev = Funding(rate=float(b.rate[i]), next_ts=nt or None, **common)
        elif k == Kind.MARK:
            ev = Mark(price=float(b.price[i]), **common)
        elif k == Kind.STATUS:
            ev = Status(text=b.text[i] or "", **common)
        else:
            ev = TimerFired(text=b.text[i] or "", next_ts=int(b.next_ts[i]), **common)
        out.append(ev)
    return out
