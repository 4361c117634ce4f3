"""A column batch: tape rows as numpy arrays, the engine's fast input (DESIGN.md §5).

The tape reader builds these from Arrow row groups; the engine never sees Arrow.
Nulls are encoded so the hot path needs no masks: NaN for floats, 0 for ``side``,
``flags`` and ``next_ts``, -1 for ``seq``, None in ``text``.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Sequence
from itertools import chain, compress
from typing import Any

import msgspec
import numpy as np

from perpsim.core.events import (
    BOOK,
    BOOK_RESET,
    FUNDING,
    MARK,
    QUOTE,
    STATUS,
    TIMER,
    TRADE,
    BookLevel,
    BookReset,
    Funding,
    Mark,
    MarketEvent,
    Quote,
    Status,
    TimerFired,
    Trade,
)

__all__ = [
    "NULL_SEQ",
    "Batch",
    "Rows",
    "batch_events",
    "batch_from_events",
    "concat_batches",
    "event_rows",
    "finish_steps",
    "first_true",
    "rows_batch",
    "rows_batch_steps",
    "symbol_mask",
]

NULL_SEQ = -1


class Batch(msgspec.Struct, kw_only=True):
    """Rows of one or more tape row groups, sorted by ``clock``.

    ``symbol`` holds codes into ``symbols`` (the batch's dictionary).
    ``clock`` is the column the tape is sorted by (``ts`` or ``recv_ts``).

    ``pending`` is set when a tape reader left columns that only row-by-row dispatch
    reads unread (``recv_ts``, ``seq``, ``flags``; None here until then): it follows
    :meth:`rows`, and :func:`perpsim.tapes.reader.complete` reads them. Core reads no
    file, so its drivers complete a batch before the engine loads it.
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
    text: Sequence[str | None]
    pending: Any = None

    def __len__(self) -> int:
        return int(self.clock.shape[0])

    def require_columns(self) -> None:
        """Refuse a batch with columns still unread (``pending``): they are None."""
        if self.pending is not None:
            raise ValueError("a batch with columns left unread: perpsim.tapes.reader.complete(batch) reads them")

    def rows(self, sel: slice | np.ndarray[Any, Any]) -> Batch:
        """The rows ``sel`` picks: a slice gives views, a boolean mask copies; the
        symbol dictionary is shared. The whole batch itself when nothing is dropped."""
        if isinstance(sel, slice):
            if sel.indices(len(self)) == (0, len(self), 1):
                return self
            text = self.text[sel]
        else:
            if sel.all():
                return self
            text = list(compress(self.text, sel.tolist()))
        fields = {f: None if (a := getattr(self, f)) is None else a[sel] for f in _ARRAYS}
        pending = None if self.pending is None else self.pending.select(sel)
        return Batch(symbols=self.symbols, text=text, pending=pending, **fields)


def first_true(mask: np.ndarray[Any, Any]) -> int:
    """Index of the first True, or -1; ``argmax`` stops scanning at the first hit, and
    costs less than ``flatnonzero`` on the short masks of a fast-forward search."""
    if mask.shape[0] == 0:
        return -1
    i = int(mask.argmax())
    return i if mask[i] else -1


def symbol_mask(b: Batch, allowed: Collection[str]) -> np.ndarray[Any, Any]:
    """Which rows are about one of the ``allowed`` symbols."""
    keep = [i for i, s in enumerate(b.symbols) if s in allowed]
    mask: np.ndarray[Any, Any] = np.isin(b.symbol, np.asarray(keep, dtype=b.symbol.dtype))
    return mask


_ARRAYS = tuple(f for f in Batch.__struct_fields__ if f not in ("symbols", "text", "pending"))


_NAN = float("nan")


class Rows(msgspec.Struct):
    """Rows as one Python list per column, with :class:`Batch`'s null encoding and
    ``symbol`` as names: a feed message's rows as the engine takes them.

    A message has a few rows, and the engine indexes Python lists faster than numpy
    arrays, so the live path goes from events to lists without numpy (about 2 µs a
    message, against 25 µs through a :class:`Batch` and back to lists).
    """

    ts: list[int]
    recv_ts: list[int]
    kind: list[int]
    symbol: list[str]
    price: list[float]
    size: list[float]
    side: list[int]
    bid: list[float]
    bid_size: list[float]
    ask: list[float]
    ask_size: list[float]
    rate: list[float]
    next_ts: list[int]
    seq: list[int]
    flags: list[int]
    text: list[str | None]

    def __len__(self) -> int:
        return len(self.ts)


def event_rows(events: Sequence[MarketEvent]) -> Rows:
    """Market events as :class:`Rows`, in one pass (the live path: every feed message)."""
    n = len(events)
    ts, rts, kind, sym = [0] * n, [0] * n, [0] * n, [""] * n
    seq, flags, side, next_ts = [NULL_SEQ] * n, [0] * n, [0] * n, [0] * n
    price, size, rate = [_NAN] * n, [_NAN] * n, [_NAN] * n
    bid, bid_size, ask, ask_size = [_NAN] * n, [_NAN] * n, [_NAN] * n, [_NAN] * n
    text: list[str | None] = [None] * n
    for i, ev in enumerate(events):
        sym[i], ts[i], rts[i], flags[i] = ev.symbol, ev.ts, ev.recv_ts, ev.flags
        if ev.seq is not None:
            seq[i] = ev.seq
        if type(ev) is Quote:  # most frequent first; `type() is` is the cheapest test
            kind[i] = QUOTE
            bid[i], bid_size[i], ask[i], ask_size[i] = ev.bid, ev.bid_size, ev.ask, ev.ask_size
        elif type(ev) is BookLevel or type(ev) is Trade:
            kind[i] = BOOK if type(ev) is BookLevel else TRADE
            price[i], size[i], side[i] = ev.price, ev.size, ev.side
        elif type(ev) is BookReset:
            kind[i] = BOOK_RESET
        elif type(ev) is Status:
            kind[i] = STATUS
            text[i] = ev.text
        elif type(ev) is Funding:
            kind[i] = FUNDING
            rate[i], next_ts[i] = ev.rate, ev.next_ts or 0
        elif type(ev) is Mark:
            kind[i] = MARK
            price[i] = ev.price
        elif type(ev) is TimerFired:
            kind[i] = TIMER
            text[i], next_ts[i] = ev.text, ev.next_ts
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"not a market event: {ev!r}")
    return Rows(ts, rts, kind, sym, price, size, side, bid, bid_size, ask, ask_size, rate, next_ts, seq, flags, text)


_DTYPES: dict[str, Any] = {
    "ts": np.int64, "recv_ts": np.int64, "kind": np.int8, "side": np.int8, "next_ts": np.int64,
    "seq": np.int64, "flags": np.uint8,
    **dict.fromkeys(("price", "size", "bid", "bid_size", "ask", "ask_size", "rate"), np.float64),
}  # fmt: skip


def rows_batch(rows: Rows, clock: str = "ts", names: dict[str, int] | None = None) -> Batch:
    """:class:`Rows` as a numpy :class:`Batch`, symbols numbered in order of first appearance.

    ``names`` carries the numbering over from earlier batches (new names are added to
    it), so that batches made with one dict can be joined by :func:`concat_batches`.
    """
    return finish_steps(rows_batch_steps(rows, clock, names, per_step=len(_DTYPES)))


def finish_steps(steps: Generator[None, None, Batch]) -> Batch:
    """Run the rest of :func:`rows_batch_steps` at once; the batch."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def rows_batch_steps(
    rows: Rows, clock: str = "ts", names: dict[str, int] | None = None, *, per_step: int = 4
) -> Generator[None, None, Batch]:
    """:func:`rows_batch` in steps of ``per_step`` columns; the generator returns the batch.

    The live recorder converts a chunk between socket reads, one step per event loop
    iteration, so a read that arrives meanwhile waits for one step, not for the chunk.
    """
    if names is None:
        names = {}
    n = len(rows)
    try:
        symbol = np.fromiter(map(names.__getitem__, rows.symbol), np.int32, n)
    except KeyError:  # a name not numbered yet
        for s in rows.symbol:
            if s not in names:
                names[s] = len(names)
        symbol = np.fromiter(map(names.__getitem__, rows.symbol), np.int32, n)
    symbols = tuple(names)  # as numbered now: later chunks may add names before this one is done
    cols: dict[str, np.ndarray[Any, Any]] = {}
    for k, (name, dtype) in enumerate(_DTYPES.items(), 1):
        cols[name] = np.fromiter(getattr(rows, name), dtype, n)
        if k % per_step == 0 and k < len(_DTYPES):
            yield
    return Batch(
        clock=cols["recv_ts" if clock == "recv_ts" else "ts"],
        symbol=symbol,
        symbols=symbols,
        text=list(rows.text),
        **cols,
    )


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Batches one after another; their symbol numberings must agree (the longest wins)."""
    for b in batches:
        b.require_columns()
    if len(batches) == 1:
        return batches[0]
    symbols = max((b.symbols for b in batches), key=len)
    for b in batches:
        if symbols[: len(b.symbols)] != b.symbols:
            raise ValueError("concat_batches: batches number their symbols differently")
    arrays = {f: np.concatenate([getattr(b, f) for b in batches]) for f in _ARRAYS if f != "clock"}
    # the clock column is one of the time columns: joined once, shared again
    for name in ("recv_ts", "ts"):
        if all(b.clock is getattr(b, name) for b in batches):
            arrays["clock"] = arrays[name]
            break
    else:
        arrays["clock"] = np.concatenate([b.clock for b in batches])
    return Batch(symbols=symbols, text=list(chain.from_iterable(b.text for b in batches)), **arrays)


def batch_from_events(events: Sequence[MarketEvent], clock: str = "ts") -> Batch:
    """Build a batch from market events (in-memory tapes, tests)."""
    return rows_batch(event_rows(events), clock)


def batch_events(b: Batch) -> list[MarketEvent]:
    """The inverse of :func:`batch_from_events`: one event per row (tests, warm starts and
    the feed server, which plays tapes as messages).

    Columns become Python lists once, so each row costs one event's construction.
    """
    b.require_columns()
    ts, recv, kinds, flags = b.ts.tolist(), b.recv_ts.tolist(), b.kind.tolist(), b.flags.tolist()
    names = b.symbols
    syms = [names[c] for c in b.symbol.tolist()]
    seqs = [None if q == NULL_SEQ else q for q in b.seq.tolist()]
    price, size, side = b.price.tolist(), b.size.tolist(), b.side.tolist()
    bid, bsz, ask, asz = b.bid.tolist(), b.bid_size.tolist(), b.ask.tolist(), b.ask_size.tolist()
    rate, next_ts, text = b.rate.tolist(), b.next_ts.tolist(), b.text
    out: list[MarketEvent] = []
    append = out.append
    for i, k in enumerate(kinds):
        t, r, s, q, f = ts[i], recv[i], syms[i], seqs[i], flags[i]
        if k == QUOTE:
            append(
                Quote(
                    ts=t, recv_ts=r, symbol=s, seq=q, flags=f, bid=bid[i], bid_size=bsz[i], ask=ask[i], ask_size=asz[i]
                )
            )
        elif k == BOOK:
            append(BookLevel(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, price=price[i], size=size[i], side=side[i]))
        elif k == TRADE:
            append(Trade(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, price=price[i], size=size[i], side=side[i]))
        elif k == BOOK_RESET:
            append(BookReset(ts=t, recv_ts=r, symbol=s, seq=q, flags=f))
        elif k == FUNDING:
            append(Funding(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, rate=rate[i], next_ts=next_ts[i] or None))
        elif k == MARK:
            append(Mark(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, price=price[i]))
        elif k == STATUS:
            append(Status(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, text=text[i] or ""))
        else:
            append(TimerFired(ts=t, recv_ts=r, symbol=s, seq=q, flags=f, text=text[i] or "", next_ts=next_ts[i]))
    return out
