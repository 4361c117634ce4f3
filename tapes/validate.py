"""Tape validation (DESIGN.md §4): find the first bad value, name its file, row and column.

Checks run vectorized on :class:`~perpsim.core.batch.Batch` columns, so validating
costs a few numpy passes per batch, not Python per row. A :class:`Validator` carries
the last clock value across batches and files, so a tape that is sorted inside each
file but not across them is caught at the first row of the later file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa

from perpsim.core.batch import first_true
from perpsim.core.errors import TapeError
from perpsim.core.events import BOOK, FUNDING, KIND_NAMES, MARK, QUOTE, TRADE
from perpsim.tapes.schema import COLUMNS, TapeMeta

if TYPE_CHECKING:
    from perpsim.core.batch import Batch

__all__ = [
    "REQUIRED_COLUMNS",
    "TapeReport",
    "Validator",
    "check_columns",
    "check_kinds",
    "inspect_tape",
    "validate_tape",
]

# Columns a tape file must have: all of them (the writer fills unused ones with null).
REQUIRED_COLUMNS: tuple[str, ...] = COLUMNS

_UNKNOWN_KIND = -1


def check_columns(names: Iterable[str], file: str) -> None:
    """Raise if any tape column is missing from ``names``.

    Raises:
        TapeError: "<file>: missing columns a, b" naming every missing column.
    """
    have = set(names)
    missing = [c for c in REQUIRED_COLUMNS if c not in have]
    if missing:
        word = "column" if len(missing) == 1 else "columns"
        raise TapeError(f"{file}: missing {word} {', '.join(missing)}")


def _describe(value: float, is_null: bool) -> str:
    if is_null:
        return "null"
    if np.isnan(value):
        return "NaN"
    if value == 0:
        return "zero"
    if np.isinf(value):
        return repr(float(value))
    return f"negative ({float(value)!r})"


class Validator:
    """Validate batches of one tape in order.

    Create one per tape and call :meth:`check` on every batch in clock order; it keeps
    the previous batch's last clock value (and its file) to check sorting across
    batch and file boundaries.
    """

    def __init__(self, clock: str = "ts") -> None:
        self.clock = clock
        self.last_clock: int | None = None
        self.last_file: str | None = None

    def check(self, b: Batch, *, file: str, row0: int = 0, source: pa.RecordBatch | None = None) -> None:
        """Check one batch; rows are numbered ``row0 + i`` within ``file``.

        Args:
            b: the batch, as built by :func:`perpsim.tapes.reader.to_batch` (unknown
                kinds carry code -1).
            file: the file name used in messages.
            row0: the file row number of the batch's first row.
            source: the Arrow batch ``b`` came from, to tell null from NaN in messages
                (a column it lacks is all null).

        Raises:
            TapeError: for the first bad value: "<file> row <n> column <col>: <problem>".
        """
        self.check_boundary(b, file=file, row0=row0)
        self.check_rows(b, file=file, row0=row0, source=source)
        self.passed(b, file=file)

    def check_boundary(self, b: Batch, *, file: str, row0: int = 0) -> None:
        """The one check that needs the previous batch: sorted across the boundary.

        Its row is the batch's first, so it comes before anything :meth:`check_rows`
        finds in the same batch.
        """
        if len(b) and self.last_clock is not None and b.clock[0] < self.last_clock:
            prev, prev_file = self.last_clock, self.last_file
            where = "the previous row" if prev_file == file else f"the last row of {prev_file}"
            raise TapeError(
                f"{file} row {row0} column {self.clock}: {int(b.clock[0])} is before {prev} in {where} (not sorted)"
            )

    def passed(self, b: Batch, *, file: str) -> None:
        """Remember a checked batch's last clock value for the next boundary."""
        if len(b):
            self.last_clock = int(b.clock[-1])
            self.last_file = file

    def check_rows(self, b: Batch, *, file: str, row0: int = 0, source: pa.RecordBatch | None = None) -> None:
        """Every check inside one batch; uses no state, so batches can be checked in any
        order or on any thread (the reader checks row groups as it decodes them)."""
        n = len(b)
        if n == 0:
            return
        found: list[tuple[int, int, str, str]] = []  # (row, check order, column, problem)

        def hit(order: int, mask: np.ndarray[Any, Any], col: str, problem: Any) -> None:
            i = first_true(mask)
            if i >= 0:
                found.append((i, order, col, problem(i)))

        clock = b.clock
        # DESIGN.md §3: the tape is sorted by its clock column; ties keep row order.
        if n > 1:
            down = clock[1:] < clock[:-1]
            i = first_true(down)
            if i >= 0:
                found.append(
                    (
                        i + 1,
                        0,
                        self.clock,
                        f"{int(clock[i + 1])} is before {int(clock[i])} in the previous row (not sorted)",
                    )
                )

        kind = b.kind
        hit(1, kind == _UNKNOWN_KIND, "kind", lambda i: _unknown_kind(source, i))

        is_trade = kind == TRADE
        is_book = kind == BOOK
        is_mark = kind == MARK
        is_quote = kind == QUOTE
        is_funding = kind == FUNDING

        # Prices must be finite and positive where the row kind needs one.
        def bad_price(col: str, rows: np.ndarray[Any, Any], order: int) -> None:
            v = getattr(b, col)
            mask = rows & ~((v > 0) & (v < np.inf))
            hit(order, mask, col, lambda i: self._value(source, col, v, i, kind))

        bad_price("price", is_trade | is_book | is_mark, 2)
        bad_price("bid", is_quote, 3)
        bad_price("ask", is_quote, 4)

        rate = b.rate
        hit(
            5,
            is_funding & ~np.isfinite(rate),
            "rate",
            lambda i: f"{_describe(rate[i], _null(source, 'rate', i))} in a funding row",
        )

        # Sizes: trade and book sizes are required (0 deletes a book level); quote sizes
        # may be unknown (NaN) but never negative.
        size = b.size
        need_size = is_trade | is_book
        hit(
            6,
            need_size & ~((size >= 0) & (size < np.inf)),
            "size",
            lambda i: self._value(source, "size", size, i, kind),
        )
        for order, col in ((7, "bid_size"), (8, "ask_size")):
            v = getattr(b, col)
            hit(order, is_quote & (v < 0), col, lambda i, v=v, c=col: self._value(source, c, v, i, kind))

        bid, ask = b.bid, b.ask
        hit(
            9,
            is_quote & (bid > ask),
            "bid",
            lambda i: f"crossed quote: bid {float(bid[i])!r} > ask {float(ask[i])!r}",
        )

        side = b.side
        hit(
            10,
            is_book & (side != 1) & (side != -1),
            "side",
            lambda i: f"{int(side[i])} in a book row (must be +1 bid or -1 ask)",
        )
        hit(
            11,
            (side > 1) | (side < -1),
            "side",
            lambda i: f"{int(side[i])} (must be +1, -1 or 0)",
        )

        if found:
            row, _, col, problem = min(found)
            raise TapeError(f"{file} row {row0 + row} column {col}: {problem}")

    @staticmethod
    def _value(
        source: pa.RecordBatch | None,
        col: str,
        v: np.ndarray[Any, Any],
        i: int,
        kind: np.ndarray[Any, Any],
    ) -> str:
        return f"{_describe(v[i], _null(source, col, i))} in a {KIND_NAMES[int(kind[i])]} row"


def _unknown_kind(source: pa.RecordBatch | None, i: int) -> str:
    known = ", ".join(KIND_NAMES)
    if source is None:
        return f"unknown kind (known: {known})"
    name = source.column(source.schema.get_field_index("kind"))[i].as_py()
    return f"unknown kind {name!r} (known: {known})"


def check_kinds(b: Batch, *, file: str, row0: int = 0, source: pa.RecordBatch | None = None) -> None:
    """The one check even an unvalidated read needs: every kind must map to a code.

    Raises:
        TapeError: "<file> row <n> column kind: unknown kind 'x' (known: ...)".
    """
    if len(b) and int(b.kind.min()) < 0:
        i = first_true(b.kind == _UNKNOWN_KIND)
        raise TapeError(f"{file} row {row0 + i} column kind: {_unknown_kind(source, i)}")


def _null(source: pa.RecordBatch | None, col: str, i: int) -> bool:
    """Whether ``source`` has a null at row ``i`` of ``col``; a column it lacks is all
    null (the tape reader leaves out the columns a row group has no value in)."""
    if source is None:
        return False
    idx = source.schema.get_field_index(col)
    return idx < 0 or not source.column(idx)[i].is_valid


class TapeReport(msgspec.Struct, kw_only=True):
    """What a tape holds: the summary ``perpsim tapes inspect`` prints.

    ``counts`` maps symbol → kind → rows; ``start_ns``/``end_ns`` are the first and
    last clock values (None for an empty tape); ``codecs`` the files' compression.
    """

    path: str
    files: list[str]
    rows: int
    start_ns: int | None
    end_ns: int | None
    symbols: list[str]
    counts: dict[str, dict[str, int]]
    meta: TapeMeta
    validated: bool
    codecs: tuple[str, ...] = ()


def inspect_tape(path: str | Path | Sequence[str | Path], *, validate: bool = False) -> TapeReport:
    """Stream a whole tape and count rows per symbol and kind.

    Memory stays flat: one batch at a time. With ``validate`` every batch is checked.

    Raises:
        TapeError: the tape cannot be read, or (with ``validate``) a value is bad.
    """
    # Imported here: the reader uses this module's Validator.
    from perpsim.tapes.reader import open_tape

    tape = open_tape(path)
    nk = len(KIND_NAMES)
    counts: dict[str, np.ndarray[Any, Any]] = {}
    rows = 0
    start: int | None = None
    end: int | None = None
    for b in tape.batches(validate=validate):
        n = len(b)
        if n == 0:
            continue
        rows += n
        if start is None:
            start = int(b.clock[0])
        end = int(b.clock[-1])
        # One bincount per batch: key = symbol code * kinds + kind code.
        key = b.symbol.astype(np.int64) * nk + b.kind.astype(np.int64)
        per = np.bincount(key, minlength=len(b.symbols) * nk).reshape(-1, nk)
        for code, sym in enumerate(b.symbols):
            if per[code].any():
                acc = counts.get(sym)
                counts[sym] = per[code] if acc is None else acc + per[code]
    symbols = sorted(counts)
    return TapeReport(
        path=str(path) if isinstance(path, (str, Path)) else ", ".join(map(str, path)),
        files=[str(f) for f in tape.files],
        rows=rows,
        start_ns=start,
        end_ns=end,
        symbols=symbols,
        counts={s: {KIND_NAMES[k]: int(c) for k, c in enumerate(counts[s]) if c} for s in symbols},
        meta=tape.meta,
        validated=validate,
        codecs=tape.codecs,
    )


def validate_tape(path: str | Path | Sequence[str | Path]) -> TapeReport:
    """Validate a whole tape, streaming it; return its report when every row is good.

    Raises:
        TapeError: naming the file, row and column of the first bad value.
    """
    return inspect_tape(path, validate=True)
