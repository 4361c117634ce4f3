"""Tape writer (DESIGN.md §4): validated, compressed Parquet with ``perpsim.tape`` metadata.

:class:`TapeWriter` streams: rows are buffered only up to one row group, and the
metadata (row count, clock range) is added to the footer at :meth:`TapeWriter.close`,
so a live recorder can flush and rotate files without holding a tape in memory.
:func:`write` is the friendly entry point for a DataFrame; it never leaves a partial
file behind (it writes a temporary file in the same folder, then renames it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpsim.core.errors import TapeError
from perpsim.core.events import KIND_NAMES
from perpsim.core.instruments import Instrument
from perpsim.tapes.reader import to_batch
from perpsim.tapes.schema import (
    COLUMNS,
    DEFAULT_CODEC,
    META_KEY,
    ROW_GROUP_ROWS,
    SCHEMA,
    TapeMeta,
    TimerSpec,
    encode_meta,
    write_options,
)
from perpsim.tapes.validate import Validator, check_columns

__all__ = ["TapeWriter", "write", "write_table"]

_KIND_DICT = pa.array(KIND_NAMES, pa.string())
_REQUIRED = ("ts", "kind", "symbol")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class TapeWriter:
    """Write a tape incrementally; call :meth:`write` with sorted rows, then :meth:`close`.

    Rows are validated on each :meth:`write` (a rejected write changes nothing) and
    buffered until a full row group of ``row_group_rows`` is ready, so the file layout
    does not depend on how the rows were chunked. :meth:`flush` forces a (short) row
    group out. Use it as a context manager; on an exception the file is still closed
    with what was written, which is what a recorder wants (call :meth:`abort` to
    delete it instead).
    """

    def __init__(
        self,
        path: str | Path,
        meta: TapeMeta,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        validate: bool = True,
        name: str | None = None,
        codec: str = DEFAULT_CODEC,
    ) -> None:
        """Open ``path`` for writing (it is truncated).

        Args:
            path: the Parquet file to create.
            meta: metadata to store; ``rows``, ``start_ns`` and ``end_ns`` are filled
                in at close from the rows written (clock column ``meta.clock``).
            row_group_rows: rows per row group (the reader's unit of streaming).
            validate: check each write (sorted clock, prices, sizes, kinds).
            name: the file name used in error messages (default: ``path``).
            codec: ``lz4`` (fastest to read) or ``zstd`` (smallest; tapes/schema.py).

        Raises:
            TapeError: the file cannot be created, or an argument is out of range.
        """
        if row_group_rows < 1:
            raise TapeError(f"{path}: row_group_rows must be >= 1, not {row_group_rows}")
        try:
            options = write_options(codec)
        except ValueError as e:
            raise TapeError(f"{name if name is not None else path}: {e}") from e
        self.path = Path(path)
        self.name = name if name is not None else str(path)
        self.meta = meta
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self._validator = Validator(meta.clock) if validate else None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._bytes = 0
        self._closed = False
        try:
            self._sink = pa.OSFile(str(self.path), "wb")
        except (OSError, pa.ArrowException) as e:
            raise TapeError(f"{self.name}: cannot create ({_one_line(e)})") from e
        self._writer = pq.ParquetWriter(self._sink, SCHEMA, **options)

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (complete row groups; the whole file after close)."""
        return self._bytes if self._closed else int(self._sink.tell())

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rows (cast to the tape schema), continuing the clock order.

        Raises:
            TapeError: missing columns, an uncastable column, or a bad value
                ("<file> row <n> column <col>: <problem>", rows counted from the
                start of the file); nothing of this call is written then.
        """
        if self._closed:
            raise TapeError(f"{self.name}: write after close")
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        check_columns(table.schema.names, self.name)
        table = table.select(list(COLUMNS))
        if table.schema != SCHEMA:
            try:
                table = table.cast(SCHEMA)
            except (pa.ArrowException, ValueError) as e:
                raise TapeError(f"{self.name}: cannot cast to the tape schema ({_one_line(e)})") from e
        n = table.num_rows
        if n == 0:
            return
        batches = table.to_batches()
        clock = self.meta.clock
        if self._validator is not None:
            v = self._validator
            saved = (v.last_clock, v.last_file)
            row0 = self.rows
            try:
                for rb in batches:
                    b = to_batch(rb, clock=clock, file=self.name, row0=row0)
                    v.check(b, file=self.name, row0=row0, source=rb)
                    row0 += rb.num_rows
            except TapeError:
                v.last_clock, v.last_file = saved
                raise
        mm = pc.min_max(table.column(clock)).as_py()
        if mm["min"] is not None:
            lo, hi = int(mm["min"]), int(mm["max"])
            self.start_ns = lo if self.start_ns is None else min(self.start_ns, lo)
            self.end_ns = hi if self.end_ns is None else max(self.end_ns, hi)
        self.rows += n
        self._pending.extend(batches)
        self._pending_rows += n
        while self._pending_rows >= self.row_group_rows:
            self._write_group(self.row_group_rows)

    def _write_group(self, n: int) -> None:
        """Write the first ``n`` pending rows as one row group."""
        pending = pa.Table.from_batches(self._pending, schema=SCHEMA)
        self._writer.write_table(pending.slice(0, n), row_group_size=n)
        rest = pending.slice(n)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows

    def flush(self) -> None:
        """Write buffered rows now as a (possibly short) row group."""
        if not self._closed and self._pending_rows:
            self._write_group(self._pending_rows)

    def close(self) -> None:
        """Flush, store the metadata with the exact row count and clock range, close."""
        if self._closed:
            return
        try:
            self.flush()
            meta = msgspec.structs.replace(self.meta, rows=self.rows, start_ns=self.start_ns, end_ns=self.end_ns)
            self._writer.add_key_value_metadata({META_KEY: encode_meta(meta)})
            self._writer.close()
            self._bytes = int(self._sink.tell())
        finally:
            self._sink.close()
            self._closed = True

    def abort(self) -> None:
        """Close and delete the file (nothing of it is kept)."""
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _temp_path(path: Path) -> Path:
    # Same folder, so os.replace is an atomic rename; hidden, so folder readers skip it.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_table(
    table: pa.Table,
    path: str | Path,
    meta: TapeMeta,
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
    codec: str = DEFAULT_CODEC,
) -> Path:
    """Validate and write a whole Arrow table as one tape file, atomically (``codec``: see
    :class:`TapeWriter`).

    Returns:
        The path written.

    Raises:
        TapeError: a bad value (naming ``path``, row and column), or ``path`` cannot be
            replaced (a folder, no permission); no file is left.
    """
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with TapeWriter(tmp, meta, row_group_rows=row_group_rows, name=str(path), codec=codec) as w:
            w.write(table)
        try:
            os.replace(tmp, path)
        except OSError as e:  # e.g. ``path`` is a folder: one line, not the temp file's name
            raise TapeError(f"{path}: cannot write ({e.strerror or _one_line(e)})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# -- write(): DataFrame in, tape out -------------------------------------------------


def _to_arrow(data: Any, path: Path) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".")[0]
    if module == "polars" and hasattr(data, "to_arrow"):
        table = data.to_arrow()
        assert isinstance(table, pa.Table)
        return table
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TapeError(
        f"{path}: cannot write a {type(data).__name__}; give a polars or pandas DataFrame or an Arrow Table"
    )


def _first_invalid(a: pa.Array) -> int:
    return int(np.flatnonzero(a.is_null().to_numpy(zero_copy_only=False))[0])


def _plain(col: pa.ChunkedArray) -> pa.Array:
    """One contiguous array; dictionaries and string variants decoded to plain strings."""
    t = col.type
    if pa.types.is_dictionary(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        col = col.cast(pa.string())
    return col.combine_chunks()


def _ns(a: pa.Array, name: str, path: Path) -> pa.Array:
    try:
        if pa.types.is_timestamp(a.type):
            return a.cast(pa.timestamp("ns", a.type.tz)).cast(pa.int64())
        return a.cast(pa.int64())
    except pa.ArrowException as e:
        raise TapeError(f"{path} column {name}: cannot read {a.type} as ns ({_one_line(e)})") from e


def _kinds(a: pa.Array, path: Path) -> pa.DictionaryArray:
    """Kind names (or codes) → the canonical dictionary, whose indices are Kind codes."""
    if pa.types.is_integer(a.type):
        codes = a.cast(pa.int64())
        ok = pc.and_(pc.greater_equal(codes, 0), pc.less(codes, len(KIND_NAMES)))
        idx = pc.if_else(ok, codes, None)
        if idx.null_count > codes.null_count:
            i = int(np.flatnonzero(pc.fill_null(pc.invert(ok), False).to_numpy(zero_copy_only=False))[0])
            raise TapeError(
                f"{path} row {i} column kind: unknown kind code {codes[i].as_py()} (known: 0-{len(KIND_NAMES) - 1})"
            )
    else:
        try:
            a = a.cast(pa.string())
        except pa.ArrowException as e:
            raise TapeError(f"{path} column kind: cannot read {a.type} as text") from e
        idx = pc.index_in(a, value_set=_KIND_DICT)
    if idx.null_count:
        i = _first_invalid(idx)
        name = a[i].as_py()
        problem = "null" if name is None else f"unknown kind {name!r} (known: {', '.join(KIND_NAMES)})"
        raise TapeError(f"{path} row {i} column kind: {problem}")
    return pa.DictionaryArray.from_arrays(idx.cast(pa.int8()), _KIND_DICT)


def _normalize(table: pa.Table, path: Path) -> pa.Table:
    """Any reasonable column types → the tape schema, optional columns filled."""
    names = table.schema.names
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise TapeError(f"{path} column {', '.join(unknown)}: not a tape column (columns: {', '.join(COLUMNS)})")
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise TapeError(f"{path}: missing required column{'s' * (len(missing) > 1)} {', '.join(missing)}")
    n = table.num_rows
    cols: dict[str, pa.Array] = {}
    for field in SCHEMA:
        name = field.name
        if name not in names:
            continue
        a = _plain(table.column(name))
        if name in ("ts", "recv_ts", "next_ts"):
            a = _ns(a, name, path)
        elif name == "kind":
            a = _kinds(a, path)
        elif name == "symbol":
            if a.null_count:
                raise TapeError(f"{path} row {_first_invalid(a)} column symbol: null")
            a = pc.dictionary_encode(a.cast(pa.string())).cast(field.type)
        else:
            try:
                a = a.cast(field.type)
            except pa.ArrowException as e:
                raise TapeError(f"{path} column {name}: cannot read {a.type} as {field.type} ({_one_line(e)})") from e
        cols[name] = a
    ts = cols["ts"]
    if ts.null_count:
        raise TapeError(f"{path} row {_first_invalid(ts)} column ts: null")
    recv = cols.get("recv_ts")
    # DESIGN.md §3: recv_ts equals ts when unknown.
    cols["recv_ts"] = ts if recv is None else pc.coalesce(recv, ts)
    flags = cols.get("flags")
    cols["flags"] = pa.array(np.zeros(n, np.uint8)) if flags is None else pc.fill_null(flags, 0).cast(pa.uint8())
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


_INSTRUMENT_KEYS: tuple[str, ...] = tuple(k for k in Instrument.__struct_fields__ if k != "symbol")


def _instruments(instruments: Mapping[str, Instrument | Mapping[str, Any]] | None, path: Path) -> dict[str, Instrument]:
    """Instruments from objects or field mappings, refusing unknown keys: Instrument reads
    tape metadata leniently, so a misspelled ``tik`` would otherwise vanish from the tape."""
    out: dict[str, Instrument] = {}
    for sym, ins in (instruments or {}).items():
        if isinstance(ins, Instrument):
            if ins.symbol != sym:
                raise TapeError(f"{path}: instrument {sym}: its symbol is {ins.symbol!r}, not {sym!r}")
            out[sym] = ins
            continue
        if not isinstance(ins, Mapping):
            raise TapeError(
                f"{path}: instrument {sym}: give an Instrument or a dict of its fields, not a {type(ins).__name__}"
            )
        fields = dict(ins)
        if fields.setdefault("symbol", sym) != sym:
            raise TapeError(f"{path}: instrument {sym}: key 'symbol' is {fields['symbol']!r}, not {sym!r}")
        unknown = [k for k in fields if k != "symbol" and k not in _INSTRUMENT_KEYS]
        if unknown:
            raise TapeError(
                f"{path}: instrument {sym}: unknown key {unknown[0]!r} (allowed: {', '.join(_INSTRUMENT_KEYS)})"
            )
        try:
            out[sym] = msgspec.convert(fields, Instrument)
        except msgspec.ValidationError as e:
            raise TapeError(f"{path}: instrument {sym}: {e}") from e
    return out


def write(
    data: Any,
    path: str | Path,
    *,
    instruments: Mapping[str, Instrument | Mapping[str, Any]] | None = None,
    source: str = "user",
    clock: Literal["ts", "recv_ts"] = "ts",
    timers: Sequence[TimerSpec | Mapping[str, Any]] | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    codec: str = DEFAULT_CODEC,
) -> Path:
    """Write a validated tape from a polars/pandas DataFrame or an Arrow Table.

    ``ts``, ``kind`` and ``symbol`` are required; every other tape column is optional
    (null when absent; ``recv_ts`` defaults to ``ts`` and ``flags`` to 0). ``ts``
    columns may be integers (ns) or timestamps; ``kind`` may be names or Kind codes.
    Rows must already be sorted by the ``clock`` column.

    Args:
        data: the rows.
        path: the Parquet file to create (replaced atomically if it exists).
        instruments: symbol → Instrument (or a dict of its fields) for the metadata; an
            unknown key or a value of the wrong type is an error.
        source: where the rows came from, stored in the metadata.
        clock: the column the tape is sorted by and replayed on.
        timers: the recorded timer set, if the rows include ``timer`` rows.
        row_group_rows: rows per row group.
        codec: ``lz4`` (fastest to read, the default) or ``zstd`` (smallest files).

    Returns:
        The path written.

    Raises:
        TapeError: naming the path, and the row and column of the first bad value (or
            the symbol and key of a bad instrument); no file is left behind.
    """
    path = Path(path)
    if clock not in ("ts", "recv_ts"):
        raise TapeError(f"{path}: clock must be 'ts' or 'recv_ts', not {clock!r}")
    ins = _instruments(instruments, path)  # the arguments first: cheap, before the rows are read
    try:
        timer_specs = (
            None
            if timers is None
            else [t if isinstance(t, TimerSpec) else msgspec.convert(t, TimerSpec) for t in timers]
        )
    except msgspec.ValidationError as e:
        raise TapeError(f"{path}: timers: {e}") from e
    table = _normalize(_to_arrow(data, path), path)
    meta = TapeMeta(clock=clock, source=source, instruments=ins, timers=timer_specs)
    return write_table(table, path, meta, row_group_rows=row_group_rows, codec=codec)
