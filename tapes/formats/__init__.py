"""Converters from venue recordings to tapes, and what they share (DESIGN.md §4).

Each format module turns one kind of recording into tape rows: :mod:`.binance` (a Binance
USD-M websocket recording), :mod:`.coinbase` (Coinbase Advanced Trade messages; its
:class:`~perpsim.tapes.formats.coinbase.Normalizer` is also the live feed's decoder) and
:mod:`.funding_csv` (funding-rate histories). They fill a :class:`RowBuffer` and describe
what they did in a :class:`ConvertReport`; :func:`perpsim.tapes.convert.convert` writes the
table.

Malformed input never stops a conversion unless ``strict`` is set: a bad line is counted
and its line number kept (:class:`Skipped`), so a long recording with one torn line still
converts, and the report says how much was lost.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np
import pyarrow as pa

from perpsim.core.events import (
    KIND_NAMES,
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
from perpsim.tapes.schema import SCHEMA

__all__ = ["MAX_SKIPPED_KEPT", "ConvertReport", "RowBuffer", "Skipped"]

MAX_SKIPPED_KEPT: Final = 1000
"""At most this many skipped lines keep their number and reason; all are counted."""


class Skipped(msgspec.Struct, frozen=True, kw_only=True):
    """One input line that was not converted, and why."""

    line: int
    reason: str


class ConvertReport(msgspec.Struct, kw_only=True):
    """What a conversion read, wrote and dropped; printed by ``perpsim tapes convert``.

    Attributes:
        kind: the input format (``binance``, ``coinbase``, ``funding-csv``).
        source: the input path.
        out: the written tape, or None before it is written.
        lines_read: non-empty input lines (or CSV data rows) seen.
        rows: tape rows written per ``kind``.
        skipped: malformed lines skipped (all of them; ``skipped_lines`` keeps the first
            :data:`MAX_SKIPPED_KEPT`).
        ignored: well-formed messages of types a tape does not carry, per type.
        gaps: sequence gaps found (each also written as a ``status`` row ``gap``).
        gap_lines: where the first :data:`MAX_SKIPPED_KEPT` gaps were found, and the ids.
        counters: format-specific counts (for Binance: depth diffs read, applied, dropped
            as stale, buffered before a snapshot; lines whose receive stamp went backwards).
        clock: the clock column of the tape.
        start_ns, end_ns: the first and last clock values written.
        size_bytes: the written file's size.
    """

    kind: str
    source: str
    out: str | None = None
    lines_read: int = 0
    rows: dict[str, int] = {}
    skipped: int = 0
    skipped_lines: list[Skipped] = []
    ignored: dict[str, int] = {}
    gaps: int = 0
    gap_lines: list[Skipped] = []
    counters: dict[str, int] = {}
    clock: str = "recv_ts"
    start_ns: int | None = None
    end_ns: int | None = None
    size_bytes: int | None = None

    @property
    def rows_total(self) -> int:
        """All tape rows written."""
        return sum(self.rows.values())

    def skip(self, line: int, reason: str) -> None:
        """Count one malformed line, keeping its number and reason while there is room."""
        self.skipped += 1
        if len(self.skipped_lines) < MAX_SKIPPED_KEPT:
            self.skipped_lines.append(Skipped(line=line, reason=reason))

    def gap(self, line: int, detail: str) -> None:
        """Count one sequence gap found at ``line``."""
        self.gaps += 1
        if len(self.gap_lines) < MAX_SKIPPED_KEPT:
            self.gap_lines.append(Skipped(line=line, reason=detail))

    def ignore(self, what: str) -> None:
        """Count one well-formed message the tape does not carry."""
        self.ignored[what] = self.ignored.get(what, 0) + 1

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to a format-specific counter."""
        self.counters[what] = self.counters.get(what, 0) + n


_FLOAT_COLS: Final = ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate")


class RowBuffer:
    """Tape rows collected column by column, then turned into one Arrow table.

    Appending to Python lists and building each Arrow column once is several times faster
    than building a table per message, and keeps the converters free of Arrow details.
    Null cells are written as None (floats, ``next_ts``, ``seq``, ``text``).
    """

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.recv_ts: list[int] = []
        self.kind: list[int] = []
        self.symbol: list[str] = []
        self.price: list[float | None] = []
        self.size: list[float | None] = []
        self.side: list[int] = []
        self.bid: list[float | None] = []
        self.bid_size: list[float | None] = []
        self.ask: list[float | None] = []
        self.ask_size: list[float | None] = []
        self.rate: list[float | None] = []
        self.next_ts: list[int | None] = []
        self.text: list[str | None] = []
        self.seq: list[int | None] = []
        self.flags: list[int] = []

    def __len__(self) -> int:
        return len(self.ts)

    def add(
        self,
        kind: int,
        ts: int,
        recv_ts: int,
        symbol: str,
        *,
        price: float | None = None,
        size: float | None = None,
        side: int = 0,
        bid: float | None = None,
        bid_size: float | None = None,
        ask: float | None = None,
        ask_size: float | None = None,
        rate: float | None = None,
        next_ts: int | None = None,
        text: str | None = None,
        seq: int | None = None,
        flags: int = 0,
    ) -> None:
        """Append one row; ``kind`` is a :class:`~perpsim.core.events.Kind` code."""
        self.ts.append(ts)
        self.recv_ts.append(recv_ts)
        self.kind.append(kind)
        self.symbol.append(symbol)
        self.price.append(price)
        self.size.append(size)
        self.side.append(side)
        self.bid.append(bid)
        self.bid_size.append(bid_size)
        self.ask.append(ask)
        self.ask_size.append(ask_size)
        self.rate.append(rate)
        self.next_ts.append(next_ts)
        self.text.append(text)
        self.seq.append(seq)
        self.flags.append(flags)

    def add_event(self, ev: MarketEvent) -> None:
        """Append one market event as a row (the Coinbase path, tests)."""
        c = (ev.ts, ev.recv_ts, ev.symbol)
        common: dict[str, Any] = {"seq": ev.seq, "flags": ev.flags}
        match ev:
            case Trade():
                self.add(Kind.TRADE, *c, price=ev.price, size=ev.size, side=ev.side, **common)
            case Quote():
                self.add(Kind.QUOTE, *c, bid=ev.bid, bid_size=ev.bid_size, ask=ev.ask, ask_size=ev.ask_size, **common)
            case BookLevel():
                self.add(Kind.BOOK, *c, price=ev.price, size=ev.size, side=ev.side, **common)
            case BookReset():
                self.add(Kind.BOOK_RESET, *c, **common)
            case Funding():
                self.add(Kind.FUNDING, *c, rate=ev.rate, next_ts=ev.next_ts, **common)
            case Mark():
                self.add(Kind.MARK, *c, price=ev.price, **common)
            case Status():
                self.add(Kind.STATUS, *c, text=ev.text, **common)
            case TimerFired():
                self.add(Kind.TIMER, *c, text=ev.text, next_ts=ev.next_ts, **common)
            case _:  # pragma: no cover - the union is closed
                raise TypeError(f"not a market event: {ev!r}")

    def counts(self) -> dict[str, int]:
        """Rows per kind name, in :class:`~perpsim.core.events.Kind` order, kinds present only."""
        bc = np.bincount(np.asarray(self.kind, dtype=np.int64), minlength=len(KIND_NAMES))
        return {KIND_NAMES[i]: int(n) for i, n in enumerate(bc) if n}

    def table(self, clock: str = "recv_ts") -> tuple[pa.Table, int]:
        """The rows as a table in :data:`~perpsim.tapes.schema.SCHEMA`, sorted by ``clock``.

        The sort is stable (DESIGN.md §4: ties keep row order), so rows of one message stay
        together and in order whenever the input's clock never goes backwards.

        Returns:
            The table and how many rows the sort moved (0 when the input was in order).
        """
        clock_vals = np.asarray(self.recv_ts if clock == "recv_ts" else self.ts, dtype=np.int64)
        order: Any = None
        moved = 0
        if clock_vals.size > 1 and bool(np.any(clock_vals[1:] < clock_vals[:-1])):
            order = np.argsort(clock_vals, kind="stable")
            moved = int(np.count_nonzero(order != np.arange(order.size)))
        kind_idx = pa.array(np.asarray(self.kind, dtype=np.int8))
        kind_col = pa.DictionaryArray.from_arrays(kind_idx, pa.array(list(KIND_NAMES), pa.string()))
        sym_col = pa.array(self.symbol, pa.string()).dictionary_encode()
        if sym_col.indices.type != pa.int32():
            sym_col = pa.DictionaryArray.from_arrays(sym_col.indices.cast(pa.int32()), sym_col.dictionary)
        cols: dict[str, pa.Array] = {
            "ts": pa.array(np.asarray(self.ts, dtype=np.int64)),
            "recv_ts": pa.array(np.asarray(self.recv_ts, dtype=np.int64)),
            "kind": kind_col,
            "symbol": sym_col,
            "side": pa.array(np.asarray(self.side, dtype=np.int8)),
            "next_ts": pa.array(self.next_ts, pa.int64()),
            "text": pa.array(self.text, pa.string()),
            "seq": pa.array(self.seq, pa.int64()),
            "flags": pa.array(np.asarray(self.flags, dtype=np.uint8)),
        }
        for name in _FLOAT_COLS:
            cols[name] = pa.array(getattr(self, name), pa.float64())
        table = pa.table([cols[n] for n in SCHEMA.names], schema=SCHEMA)
        if order is not None:
            table = table.take(pa.array(order))
        return table, moved
