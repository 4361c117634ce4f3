"""A column batch: tape rows as numpy arrays, the engine's fast input (DESIGN.md §5).

The tape reader builds these from Arrow row groups; the engine never sees Arrow.
Nulls are encoded so the hot path needs no masks: NaN for floats, 0 for ``side``,
``flags`` and ``next_ts``, -1 for ``seq``, None in ``text``.
"""

from __future__ import annotations

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

__all__ = ["NULL_SEQ", "Batch", "batch_events", "batch_from_events"]

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


def batch_from_events(events: list[MarketEvent], clock: str = "ts") -> Batch:
    """Build a batch from market events (tests, the live path, small fixtures)."""
    n = len(events)
    names: dict[str, int] = {}
    f = {k: np.full(n, np.nan) for k in ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate")}
    i64 = {k: np.zeros(n, dtype=np.int64) for k in ("ts", "recv_ts", "next_ts")}
    seq = np.full(n, NULL_SEQ, dtype=np.int64)
    kind = np.zeros(n, dtype=np.int8)
    side = np.zeros(n, dtype=np.int8)
    flags = np.zeros(n, dtype=np.uint8)
    sym = np.zeros(n, dtype=np.int32)
    text: list[str | None] = [None] * n
    for i, ev in enumerate(events):
        sym[i] = names.setdefault(ev.symbol, len(names))
        i64["ts"][i] = ev.ts
        i64["recv_ts"][i] = ev.recv_ts
        if ev.seq is not None:
            seq[i] = ev.seq
        flags[i] = ev.flags
        match ev:
            case Trade():
                kind[i] = Kind.TRADE
                f["price"][i], f["size"][i], side[i] = ev.price, ev.size, ev.side
            case Quote():
                kind[i] = Kind.QUOTE
                f["bid"][i], f["bid_size"][i] = ev.bid, ev.bid_size
                f["ask"][i], f["ask_size"][i] = ev.ask, ev.ask_size
            case BookLevel():
                kind[i] = Kind.BOOK
                f["price"][i], f["size"][i], side[i] = ev.price, ev.size, ev.side
            case BookReset():
                kind[i] = Kind.BOOK_RESET
            case Funding():
                kind[i] = Kind.FUNDING
                f["rate"][i] = ev.rate
                i64["next_ts"][i] = ev.next_ts or 0
            case Mark():
                kind[i] = Kind.MARK
                f["price"][i] = ev.price
            case Status():
                kind[i] = Kind.STATUS
                text[i] = ev.text
            case TimerFired():
                kind[i] = Kind.TIMER
                text[i] = ev.text
                i64["next_ts"][i] = ev.next_ts
            case _:  # pragma: no cover - the union is closed
                raise TypeError(f"not a market event: {ev!r}")
    clock_col = i64["recv_ts"] if clock == "recv_ts" else i64["ts"]
    return Batch(
        clock=clock_col,
        kind=kind,
        symbol=sym,
        symbols=tuple(names),
        side=side,
        seq=seq,
        flags=flags,
        text=text,
        **i64,
        **f,
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
