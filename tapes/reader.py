"""Tape reader (DESIGN.md §4): stream a tape's row groups as numpy column batches.

A tape is one Parquet file, a folder of them read in name order, or a list of either.
Opening reads only the footers (row counts, metadata, statistics); :meth:`Tape.batches`
then streams one row group at a time, so memory does not grow with tape length, and
converts each Arrow batch to a :class:`~perpsim.core.batch.Batch` with vectorized
numpy work only: the replay engine's hot path never sees Arrow or per-row Python.

A folder may also hold one *journal* (``NNNNNN.arrows``): the open segment of a live
recording (live/recorder.py), an Arrow IPC stream appended at every flush. It is read up
to its last complete record batch (a recorder killed mid-append leaves a torn tail), and
ignored when ``NNNNNN.parquet`` exists (the recorder was killed between writing the
segment and deleting its journal).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpsim.core.batch import NULL_SEQ, Batch
from perpsim.core.engine import PSEUDO_SYMBOL
from perpsim.core.errors import TapeError
from perpsim.core.events import KIND_NAMES
from perpsim.core.instruments import Instrument, resolve
from perpsim.tapes.malloc import tune_malloc
from perpsim.tapes.schema import COLUMNS, META_KEY, SCHEMA, WRITE_OPTIONS, TapeMeta, decode_meta
from perpsim.tapes.validate import Validator, check_columns, check_kinds

__all__ = ["DEFERRABLE", "JOURNAL_SUFFIX", "Tape", "complete", "cores", "open_tape", "read_journal", "to_batch"]

JOURNAL_SUFFIX = ".arrows"

_KIND_CODES: dict[str, int] = {name: i for i, name in enumerate(KIND_NAMES)}
_FLOATS = ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate")
# Integer columns and the value a null becomes (core/batch.py's encoding).
_INT_FILL: dict[str, tuple[int, type[np.integer[Any]]]] = {
    "side": (0, np.int8),
    "flags": (0, np.uint8),
    "next_ts": (0, np.int64),
    "seq": (NULL_SEQ, np.int64),
}
_DICT_COLUMNS = ("kind", "symbol")
_WHOLE_GROUP_ROWS = 1 << 20  # row groups up to this size are read whole


def cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one
    (``taskset``, a container's cpuset), which ``os.cpu_count()`` ignores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 2


# Reader threads: one more than the cores (a reader holds the GIL while it converts and
# checks a batch; the extra one decodes meanwhile), at most four (a replay reads four
# row groups ahead). On this 2-core machine, with 131,072-row groups, three against two:
# fast replays of the zstd tq_10m of session 12 took 0.718 and 0.714 s against 0.766
# and 0.721 s (means of six and eight alternating pairs), of its lz4 copy 0.611 s against
# 0.625 s (eight pairs). With session 13's cheaper reader and lz4 tapes the two were
# even (best of 3, three rounds: 0.462-0.477 s against 0.448-0.473 s; four threads
# 0.472-0.498 s). More cores: not measured.
_READERS = min(4, cores() + 1)
# Columns whose nulls are an error (to_batch names the row): always decoded.
_REQUIRED = frozenset(("ts", "kind", "symbol"))
# Columns that only row-by-row dispatch reads: no check reads them, nor a fast replay's
# searches (recv_ts only when it is not the clock). A fast replay dispatches few rows,
# so it asks Tape.batches(defer=True) to leave them unread until complete() needs them:
# they were 13% of decoding a trades-and-quotes tape (benchmarks/README.md, session 13).
# A corrupt page in one is then found only if it is read (`perpsim tapes validate` is).
DEFERRABLE: tuple[str, ...] = ("recv_ts", "seq", "flags")
# Tape.batches' ``defer``: always, never, or asked before each row group is read.
Defer = bool | Callable[[], bool]


@lru_cache(maxsize=256)
def _kind_table(values: tuple[str | None, ...]) -> tuple[np.ndarray[Any, Any], bool]:
    """Map a batch's kind dictionary to Kind codes (-1 unknown); True if it is the identity."""
    table = np.array([_KIND_CODES.get(v, -1) if v is not None else -1 for v in values], np.int8)
    identity = bool(np.array_equal(table, np.arange(len(values))))
    return table, identity


def _first_null(a: pa.Array) -> int:
    return int(np.flatnonzero(a.is_null().to_numpy(zero_copy_only=False))[0])


@lru_cache(maxsize=32)
def _constant(n: int, fill: float, dtype: Any) -> np.ndarray[Any, Any]:
    """A read-only column of ``n`` copies of ``fill``, shared by every batch of that length.

    A tape's all-null columns (``rate`` and ``next_ts`` on a tape without funding or
    timer rows, ``side`` without trades or book rows) would otherwise cost fresh memory
    per batch; read-only, so a write raises instead of reaching other batches.
    """
    out = np.full(n, fill, dtype)
    out.flags.writeable = False
    return out


# Byte value -> its eight bits as nan_addend values, least significant bit first.
_ADDEND = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").view(bool), -0.0, np.nan
)


@lru_cache(maxsize=32)
def _no_text(n: int) -> tuple[None, ...]:
    """The ``text`` of ``n`` rows without any, shared by every batch of that length: a
    list per batch was half a megabyte of Python heap per 65,536 rows, made for nothing
    on a tape without status or timer rows (a tuple: no batch can change another's)."""
    return (None,) * n


class _Validity:
    """One batch's validity bitmaps, unpacked once per distinct bitmap.

    A tape's nullable columns share a few null patterns (the four quote columns are
    null on the same rows, as are a trade's price, size and side), so a batch's seven
    nullable columns have two or three distinct bitmaps; each is unpacked once, with
    the addend that turns its nulls into NaN.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._seen: dict[tuple[int, bytes], list[np.ndarray[Any, Any] | None]] = {}

    def _entry(self, a: pa.Array) -> tuple[tuple[int, bytes], list[np.ndarray[Any, Any] | None]]:
        off = a.offset
        key = (off % 8, a.buffers()[0].to_pybytes()[off // 8 : (off + self.n + 7) // 8])
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = [None, None]
        return key, entry

    def valid(self, a: pa.Array) -> np.ndarray[Any, Any]:
        """1 where ``a`` has a value, 0 where it is null (uint8)."""
        (skip, packed), entry = self._entry(a)
        valid = entry[0]
        if valid is None:
            bits = np.unpackbits(np.frombuffer(packed, np.uint8), count=skip + self.n, bitorder="little")
            valid = entry[0] = bits[skip:]
        return valid

    def nan_addend(self, a: pa.Array) -> np.ndarray[Any, Any]:
        """-0.0 where ``a`` has a value, NaN where it is null.

        ``x + -0.0`` is ``x`` for every float ``x`` (signed zeros included) and anything
        plus NaN is NaN, so one branch-free add fills the nulls: a masked copy cost
        eight times as much on the interleaved null patterns of a busy tape. Each bitmap
        byte looks up its eight addends at once (``_ADDEND``): less than half the time
        of unpacking the bits and choosing between two values for each.
        """
        (skip, packed), entry = self._entry(a)
        addend = entry[1]
        if addend is None:
            addend = entry[1] = _ADDEND.take(np.frombuffer(packed, np.uint8), axis=0).reshape(-1)[skip : skip + self.n]
        return addend


def _ints(a: pa.Array | None, name: str, n: int, nulls: _Validity) -> np.ndarray[Any, Any]:
    fill, dtype = _INT_FILL[name]
    if a is None or a.null_count == n:
        return _constant(n, fill, np.dtype(dtype))
    if not a.null_count:
        out: np.ndarray[Any, Any] = a.to_numpy().astype(dtype, copy=False)
        return out
    v = np.frombuffer(a.buffers()[1], dtype=a.type.to_pandas_dtype(), count=n, offset=a.offset * a.type.byte_width)
    valid = nulls.valid(a)
    if fill == 0 and v.flags.writeable:
        np.multiply(v, valid, out=v, casting="unsafe")  # 0 or the value: no overflow
        return v.astype(dtype, copy=False)
    return np.where(valid.view(bool), v, fill).astype(dtype, copy=False)


def _floats(a: pa.Array | None, n: int, nulls: _Validity) -> np.ndarray[Any, Any]:
    """A float64 column with nulls as NaN.

    Reads the values and validity buffers directly: three times faster than
    ``to_numpy(zero_copy_only=False)`` on the half-null columns tapes are made of.
    A decoded column's values buffer is its own and mutable, and what lies under a
    null is unspecified in Arrow, so the NaNs are written into it: no new array (and
    no fresh memory to fault in) per column.
    """
    if a is None or a.null_count == n:
        return _constant(n, np.nan, np.float64)
    if a.null_count == 0:
        out: np.ndarray[Any, Any] = a.to_numpy()
        return out
    v = np.frombuffer(a.buffers()[1], dtype=np.float64, count=n, offset=a.offset * 8)
    addend = nulls.nan_addend(a)
    if not v.flags.writeable:  # a buffer Arrow does not own (memory-mapped, foreign)
        copied: np.ndarray[Any, Any] = v + addend
        return copied
    np.add(v, addend, out=v)
    return v


def _recv_ts(a: pa.Array | None, ts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The ``recv_ts`` column; DESIGN.md §3: it equals ``ts`` where unknown (null)."""
    if a is None or a.null_count == len(ts):
        return ts
    if a.null_count:
        out: np.ndarray[Any, Any] = pc.coalesce(a, pa.array(ts)).to_numpy()
        return out
    return a.to_numpy()  # type: ignore[no-any-return]


def _dict(a: pa.Array) -> pa.DictionaryArray:
    if not pa.types.is_dictionary(a.type):
        a = pc.dictionary_encode(a.cast(pa.string()))
    return a


def to_batch(
    rb: pa.RecordBatch, *, clock: str = "ts", file: str = "<batch>", row0: int = 0, later: Collection[str] = ()
) -> Batch:
    """Convert one Arrow record batch with the tape columns to a numpy :class:`Batch`.

    Nulls become core/batch.py's encoding; ``kind`` strings become ``Kind`` codes, with
    -1 for an unknown name (the :class:`~perpsim.tapes.validate.Validator` reports it);
    ``symbol`` keeps the batch's own dictionary codes and values. A column ``rb`` lacks,
    other than ``ts``, ``kind`` and ``symbol``, is all null (the reader does not decode
    the columns a row group's statistics say are), except those named in ``later``
    (columns of :data:`DEFERRABLE` left to be read), which are None.

    Raises:
        TapeError: a null ``ts``, ``kind`` or ``symbol`` ("<file> row <n> column ts: null").
    """
    n = rb.num_rows
    names = rb.schema.names
    col = {name: rb.column(i) for i, name in enumerate(names)}
    for name in ("ts", "kind", "symbol"):
        a = col[name]
        if a.null_count:
            raise TapeError(f"{file} row {row0 + _first_null(a)} column {name}: null")
    ts = col["ts"].to_numpy()
    recv_ts = None if "recv_ts" in later else _recv_ts(col.get("recv_ts"), ts)

    kind_a = _dict(col["kind"])
    kind_idx = kind_a.indices.to_numpy()
    table, identity = _kind_table(tuple(kind_a.dictionary.to_pylist()))
    kind = kind_idx.astype(np.int8, copy=False) if identity else table[kind_idx]

    sym_a = _dict(col["symbol"])
    symbol = sym_a.indices.to_numpy().astype(np.int32, copy=False)
    symbols = tuple(sym_a.dictionary.to_pylist())

    nulls = _Validity(n)
    floats = {name: _floats(col.get(name), n, nulls) for name in _FLOATS}
    ints = {name: None if name in later else _ints(col.get(name), name, n, nulls) for name in _INT_FILL}
    text_a = col.get("text")
    text = _no_text(n) if text_a is None or text_a.null_count == n else text_a.to_pylist()
    return Batch(
        clock=recv_ts if clock == "recv_ts" else ts,
        ts=ts,
        recv_ts=recv_ts,
        kind=kind,
        symbol=symbol,
        symbols=symbols,
        text=text,
        **floats,
        **ints,
    )


class _File(msgspec.Struct):
    path: Path
    footer: Any  # pq.FileMetaData
    schema: pa.Schema  # as stored (before casts)
    meta: TapeMeta
    casts: dict[str, pa.DataType]
    read_dictionary: list[str]
    clock_stats: list[tuple[int, int] | None]
    start_ns: int | None
    end_ns: int | None
    source: Any = None  # a journal's rows as an in-memory Parquet file (pa.Buffer)


def read_journal(path: Path) -> pa.Table:
    """A recorder journal's complete record batches (see the module docstring).

    The tape metadata is the schema's ``perpsim.tape`` entry, or the last complete
    batch's (the recorder attaches the current one to each batch).

    Raises:
        TapeError: the file is not an Arrow IPC stream at all.
    """
    data = path.read_bytes()
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
    except (pa.ArrowException, OSError) as e:
        if len(data) < 4 or data.startswith(b"\xff\xff\xff\xff"):  # killed before its schema was out
            return SCHEMA.empty_table()
        raise TapeError(f"{path}: not a recorder journal ({_one_line(e)})") from e
    batches: list[pa.RecordBatch] = []
    meta = (reader.schema.metadata or {}).get(META_KEY)
    while True:
        try:
            rb, custom = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        except (pa.ArrowException, OSError):  # a torn last message
            break
        batches.append(rb)
        if custom is not None and META_KEY in custom:
            meta = custom[META_KEY]
    schema = reader.schema.with_metadata({META_KEY: meta} if meta is not None else {})
    return pa.Table.from_batches(batches, schema=schema)


def _journal_parquet(path: Path) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(read_journal(path), sink, **WRITE_OPTIONS)
    return sink.getvalue()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _clock_stats(footer: Any, clock: str, stored: pa.DataType) -> list[tuple[int, int] | None]:
    """Per row group, the clock column's (min, max) from the footer, or None if unknown.

    Only for int64 or ns timestamps: other units' raw values are not ns.
    """
    if not (stored == pa.int64() or (pa.types.is_timestamp(stored) and stored.unit == "ns")):
        return [None] * footer.num_row_groups
    schema = footer.schema
    leaf = next(i for i in range(len(schema)) if schema.column(i).path == clock)
    out: list[tuple[int, int] | None] = []
    for g in range(footer.num_row_groups):
        st = footer.row_group(g).column(leaf).statistics
        ok = st is not None and st.has_min_max and footer.row_group(g).num_rows > 0
        out.append((int(st.min_raw), int(st.max_raw)) if ok else None)
    return out


def _open_file(path: Path) -> _File:
    source = _journal_parquet(path) if path.suffix == JOURNAL_SUFFIX else None
    try:
        footer = pq.read_metadata(path if source is None else pa.BufferReader(source))
        schema = footer.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as e:
        raise TapeError(f"{path}: not a Parquet file ({_one_line(e)})") from e
    check_columns(schema.names, str(path))
    kv = footer.metadata or {}
    try:
        meta = decode_meta(kv.get(META_KEY))
    except msgspec.MsgspecError as e:
        raise TapeError(f"{path}: bad {META_KEY.decode()} metadata ({_one_line(e)})") from e
    casts: dict[str, pa.DataType] = {}
    read_dictionary: list[str] = []
    for field in SCHEMA:
        have = schema.field(field.name).type
        if field.name in _DICT_COLUMNS:
            if not pa.types.is_dictionary(have):
                read_dictionary.append(field.name)  # Parquet can hand strings over encoded
        elif have != field.type:
            casts[field.name] = field.type
    stats = _clock_stats(footer, meta.clock, schema.field(meta.clock).type)
    start, end = meta.start_ns, meta.end_ns
    if (start is None or end is None) and stats and all(x is not None for x in stats):
        start = min(x[0] for x in stats if x is not None)
        end = max(x[1] for x in stats if x is not None)
    return _File(
        path=path,
        footer=footer,
        schema=schema,
        meta=meta,
        casts=casts,
        read_dictionary=read_dictionary,
        clock_stats=stats,
        start_ns=start,
        end_ns=end,
        source=source,
    )


def _expand(p: str | Path) -> list[Path]:
    path = Path(p)
    if path.is_dir():
        files = sorted(
            f
            for f in path.iterdir()
            if f.suffix in (".parquet", JOURNAL_SUFFIX) and not f.name.startswith(".") and f.is_file()
        )
        written = {f.stem for f in files if f.suffix == ".parquet"}
        files = [f for f in files if f.suffix == ".parquet" or f.stem not in written]
        if not files:
            raise TapeError(f"{path}: folder has no .parquet files")
        return files
    if not path.exists():
        raise TapeError(f"{path}: no such file or folder")
    return [path]


def _merge_meta(files: list[_File]) -> TapeMeta:
    """One TapeMeta for several files: the first file's clock, source, timers and warm
    start; the instruments' union."""
    first = files[0].meta
    instruments: dict[str, Instrument] = {}
    for f in files:
        if f.meta.clock != first.clock:
            raise TapeError(f"{f.path}: clock column {f.meta.clock!r} differs from {first.clock!r} of {files[0].path}")
        for sym, ins in f.meta.instruments.items():
            instruments.setdefault(sym, ins)
    starts = [f.start_ns for f in files if f.start_ns is not None]
    ends = [f.end_ns for f in files if f.end_ns is not None]
    return TapeMeta(
        schema_version=first.schema_version,
        clock=first.clock,
        source=first.source,
        instruments=instruments,
        timers=first.timers,
        warm=first.warm,
        start_ns=min(starts) if starts else None,
        end_ns=max(ends) if ends else None,
        rows=sum(f.footer.num_rows for f in files),
    )


class Tape:
    """An opened tape: footers read, data not yet.

    Iterate :meth:`batches` to replay it; ``meta`` is the merged metadata of its files.
    """

    def __init__(self, files: list[_File]) -> None:
        self._files = files
        self.meta: TapeMeta = _merge_meta(files)

    @property
    def files(self) -> tuple[Path, ...]:
        """The Parquet files, in read order."""
        return tuple(f.path for f in self._files)

    @property
    def num_rows(self) -> int:
        """Total rows, from the Parquet footers."""
        return sum(f.footer.num_rows for f in self._files)

    @property
    def num_row_groups(self) -> int:
        return sum(f.footer.num_row_groups for f in self._files)

    @property
    def codecs(self) -> tuple[str, ...]:
        """The compression codecs its column chunks use, lower case, sorted (``zstd``, ``lz4``...)."""
        found = {
            f.footer.row_group(g).column(c).compression.lower()
            for f in self._files
            for g in range(f.footer.num_row_groups)
            for c in range(f.footer.num_columns)
        }
        return tuple(sorted(found))

    @cached_property
    def symbols(self) -> tuple[str, ...]:
        """The instruments its rows name, in code-point order.

        Read from the ``symbol`` column alone (about 80 ms for 10M rows), so a run asked
        for a symbol the tape lacks can say so before it starts instead of replaying nothing.
        """
        found: set[str] = set()
        for f in self._files:
            with _parquet(f) as pf:
                for g in range(f.footer.num_row_groups):
                    for ch in pf.read_row_group(g, columns=["symbol"], use_threads=False).column(0).chunks:
                        used = np.bincount(ch.indices.drop_null().to_numpy(), minlength=len(ch.dictionary))
                        found.update(s for s, n in zip(ch.dictionary.to_pylist(), used, strict=True) if n)
        found.discard(PSEUDO_SYMBOL)
        return tuple(sorted(found))

    @property
    def instruments(self) -> dict[str, Instrument]:
        """Instruments recorded in the tape's metadata (may be empty)."""
        return self.meta.instruments

    def instrument(self, symbol: str) -> tuple[Instrument, bool]:
        """The instrument for ``symbol`` (tape, then built-in table, then defaults).

        Returns:
            ``(instrument, fell_back)``; warn the user when ``fell_back`` is True.
        """
        return resolve(symbol, self.meta.instruments)

    def __repr__(self) -> str:
        return f"Tape({len(self._files)} files, {self.num_rows} rows, clock={self.meta.clock!r})"

    def batches(
        self,
        *,
        validate: bool = True,
        start_ns: int | None = None,
        end_ns: int | None = None,
        batch_rows: int = 65536,
        prefetch: int = 0,
        defer: Defer = False,
    ) -> Iterator[Batch]:
        """Stream the tape as column batches in clock order, one row group at a time.

        Args:
            validate: check every batch (DESIGN.md §4); rows are counted per file.
            start_ns: keep rows whose clock value is >= this.
            end_ns: keep rows whose clock value is < this.
            batch_rows: the most rows in one batch; a batch never spans row groups.
            prefetch: decode up to this many row groups ahead on reader threads,
                so decoding overlaps the consumer's work (0: decode on demand). Order,
                values and errors are the same either way.
            defer: leave the :data:`DEFERRABLE` columns (but the clock) unread, None,
                in batches that say so in ``pending``, until :func:`complete` reads
                them. A function is asked, on the calling thread, before each row group
                is read. Row groups too large to read whole are read in full anyway.

        Raises:
            TapeError: the first bad value, naming file, row and column.
        """
        for b, _ in self._iter(validate, start_ns, end_ns, batch_rows, prefetch, defer):
            yield b

    def record_batches(
        self,
        *,
        validate: bool = True,
        start_ns: int | None = None,
        end_ns: int | None = None,
        batch_rows: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        """Like :meth:`batches`, as Arrow record batches in the tape schema (for copying).

        Raises:
            TapeError: the first bad value, naming file, row and column.
        """
        for _, rb in self._iter(validate, start_ns, end_ns, batch_rows):
            yield _full(rb)

    def _iter(
        self,
        validate: bool,
        start_ns: int | None,
        end_ns: int | None,
        batch_rows: int,
        prefetch: int = 0,
        defer: Defer = False,
    ) -> Iterator[tuple[Batch, pa.RecordBatch]]:
        if batch_rows < 1:
            raise TapeError(f"batch_rows must be >= 1, not {batch_rows}")
        tune_malloc()
        clock = self.meta.clock
        window = start_ns is not None or end_ns is not None
        validator = Validator(clock) if validate else None
        groups = self._groups(start_ns, end_ns, stop_early=validate)
        for name, row0, parts in _decoded(groups, clock, batch_rows, prefetch, validate, defer):
            for b, rb, problem in parts:
                if validator is not None:  # the rows were checked as they were decoded
                    validator.check_boundary(b, file=name, row0=row0)
                    if problem is not None:
                        raise problem
                    validator.passed(b, file=name)
                else:
                    check_kinds(b, file=name, row0=row0, source=rb)
                row0 += len(b)
                if window:
                    sel, done = _window(b.clock, start_ns, end_ns, sorted_=validate)
                    if sel is not None:
                        b, rb = b.rows(sel), _select_arrow(rb, sel)
                    if len(b):
                        yield b, rb
                    if done:
                        return
                elif len(b):
                    yield b, rb

    def _groups(self, start_ns: int | None, end_ns: int | None, *, stop_early: bool) -> Iterator[_Group]:
        """The row groups to read, in order; row-group statistics let a window skip the rest."""
        window = start_ns is not None or end_ns is not None
        for f in self._files:
            row0 = 0
            for g in range(f.footer.num_row_groups):
                rows = f.footer.row_group(g).num_rows
                st = f.clock_stats[g]
                if window and st is not None:
                    lo, hi = st
                    if end_ns is not None and lo >= end_ns and stop_early:
                        return  # sorted: nothing later can be in range
                    if (start_ns is not None and hi < start_ns) or (end_ns is not None and lo >= end_ns):
                        row0 += rows
                        continue
                yield _Group(f, g, row0, rows)
                row0 += rows


class _Group(msgspec.Struct, frozen=True):
    """One row group to read: its file, index, first row in the file and row count."""

    file: _File
    index: int
    row0: int
    rows: int


_Part = tuple[Batch, pa.RecordBatch, TapeError | None]


def _decode(
    group: _Group, clock: str, batch_rows: int, validate: bool, *, threads: bool = True, defer: bool = False
) -> Iterator[_Part]:
    """Read, convert and (with ``validate``) check the rows of one row group, a batch at a time.

    Thread-safe: it opens its own reader, and :meth:`Validator.check_rows` keeps no
    state. A bad row is returned with its batch, for the consumer to raise in order.
    ``threads``: let Arrow decode the columns on its own threads; not on the reader
    threads, which keep both cores busy already (a fast replay of 10M rows: 0.940 s
    without, 0.983 s with, the means of eight alternating pairs of runs).
    """
    f, g = group.file, group.index
    name = str(f.path)
    empty = _null_columns(f, g)
    whole = group.rows <= _WHOLE_GROUP_ROWS
    # An all-null column costs nothing to make (to_batch); the clock is always read; a
    # column stored with another type is cast as it is read, so a bad value is found
    # where a whole read finds it.
    names = frozenset(c for c in DEFERRABLE if defer and whole and c not in empty and c != clock and c not in f.casts)
    later = _Later(group, names) if names else None
    columns = [c for c in COLUMNS if c not in empty and c not in names]
    row0 = group.row0
    rows = Validator(clock) if validate else None
    for rb in _read(f, g, columns, batch_rows, whole=whole, threads=threads):
        if f.casts:
            rb = _cast(rb, f.casts, name, row0)
        b = to_batch(rb, clock=clock, file=name, row0=row0, later=names)
        if later is not None:
            b.pending = _Pending(later, slice(row0 - group.row0, row0 - group.row0 + rb.num_rows))
        problem = None
        if rows is not None:
            try:
                rows.check_rows(b, file=name, row0=row0, source=rb)
            except TapeError as e:
                problem = e
        yield b, rb, problem
        row0 += len(b)


def _read(
    f: _File, g: int, columns: list[str], batch_rows: int, *, whole: bool, threads: bool
) -> Iterator[pa.RecordBatch]:
    """Row group ``g``'s record batches of ``columns``.

    Raises:
        TapeError: the file cannot be read (gone, corrupt), naming it and the row group.
    """
    try:
        with _parquet(f) as pf:
            if whole:  # one read: much faster than iter_batches
                yield from pf.read_row_group(g, columns=columns, use_threads=threads).to_batches(
                    max_chunksize=batch_rows
                )
            else:  # a foreign writer's huge row group: stream it
                yield from pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise TapeError(f"{f.path}: row group {g} cannot be read ({_one_line(e)})") from e


class _Later:
    """A row group's :data:`DEFERRABLE` columns, read once, when a batch of it needs them."""

    def __init__(self, group: _Group, names: frozenset[str]) -> None:
        self.group = group
        self.names = names
        self._columns: dict[str, pa.Array] | None = None

    def columns(self) -> dict[str, pa.Array]:
        if self._columns is None:
            # no column that needs a cast is deferred (_decode)
            parts = _read(
                self.group.file, self.group.index, sorted(self.names), self.group.rows, whole=True, threads=False
            )
            table = pa.Table.from_batches(list(parts))
            self._columns = {c: table.column(c).combine_chunks() for c in table.column_names}
        return self._columns


class _Pending:
    """Which rows of a :class:`_Later` a batch holds: a slice of its row group, or indices."""

    __slots__ = ("later", "rows")

    def __init__(self, later: _Later, rows: slice | np.ndarray[Any, Any]) -> None:
        self.later = later
        self.rows = rows

    def select(self, sel: slice | np.ndarray[Any, Any]) -> _Pending:
        """The rows ``sel`` picks of these (what :meth:`Batch.rows` picks of the batch)."""
        rows = self.rows
        if isinstance(rows, slice):
            if isinstance(sel, slice) and sel.step in (None, 1):
                lo, hi, _ = sel.indices(rows.stop - rows.start)
                return _Pending(self.later, slice(rows.start + lo, rows.start + max(lo, hi)))
            rows = np.arange(rows.start, rows.stop)
        return _Pending(self.later, rows[sel])

    def fill(self, b: Batch) -> None:
        rows, n = self.rows, len(b)
        nulls = _Validity(n)
        for name, a in self.later.columns().items():
            a = a.slice(rows.start, n) if isinstance(rows, slice) else a.take(pa.array(rows))
            setattr(b, name, _recv_ts(a, b.ts) if name == "recv_ts" else _ints(a, name, n, nulls))
        b.pending = None


def complete(b: Batch) -> Batch:
    """Read the columns ``b`` left for later (``Tape.batches(defer=True)``) into it; ``b``.

    Raises:
        TapeError: the tape's file can no longer be read.
    """
    if b.pending is not None:
        b.pending.fill(b)
    return b


def _parquet(f: _File) -> pq.ParquetFile:
    """A reader of ``f`` that reuses its footer and hands its string columns over as dictionaries."""
    src = f.path if f.source is None else pa.BufferReader(f.source)
    return pq.ParquetFile(src, metadata=f.footer, read_dictionary=f.read_dictionary or None)


def _null_columns(f: _File, g: int) -> frozenset[str]:
    """The columns that the footer's statistics say are all null in row group ``g``.

    Decoding one still builds a validity bitmap and a values buffer for every row: on a
    trades-and-quotes tape the three such columns (``rate``, ``next_ts``, ``text``) were
    13% of the decode, for nothing. Without statistics, the column is decoded.
    """
    rg = f.footer.row_group(g)
    n = rg.num_rows
    out = []
    for i in range(rg.num_columns):
        c = rg.column(i)
        name = c.path_in_schema
        if name in _REQUIRED or name not in COLUMNS:
            continue
        st = c.statistics
        if st is not None and st.has_null_count and st.null_count == n:
            out.append(name)
    return frozenset(out)


def _full(rb: pa.RecordBatch) -> pa.RecordBatch:
    """``rb`` with every tape column, in the tape schema: the all-null columns a row
    group is read without (:func:`_null_columns`) put back, for copying."""
    if rb.schema.names != list(COLUMNS):
        have = dict(zip(rb.schema.names, rb.columns, strict=True))
        arrays = [have[c] if c in have else pa.nulls(rb.num_rows, SCHEMA.field(c).type) for c in COLUMNS]
        rb = pa.RecordBatch.from_arrays(arrays, names=list(COLUMNS))
    return rb if rb.schema == SCHEMA else rb.cast(SCHEMA)


def _decoded(
    groups: Iterator[_Group], clock: str, batch_rows: int, ahead: int, validate: bool, defer: Defer = False
) -> Iterator[tuple[str, int, Iterable[_Part]]]:
    """``(file name, first row, converted batches)`` per row group, in order.

    With ``ahead > 0``, up to that many row groups are read at once on ``_READERS``
    threads (Parquet decoding releases the GIL); results, and the first error, still arrive
    in row-group order. A row group too large to read whole streams on the calling
    thread instead, so memory stays bounded. Closing the iterator cancels what has
    not started.
    """

    def deferring() -> bool:
        return defer() if callable(defer) else defer

    def whole(grp: _Group, later: bool) -> list[_Part]:
        return list(_decode(grp, clock, batch_rows, validate, threads=False, defer=later))

    if ahead <= 0:
        for grp in groups:
            yield str(grp.file.path), grp.row0, _decode(grp, clock, batch_rows, validate, defer=deferring())
        return
    pending: deque[tuple[_Group, Future[list[_Part]]]] = deque()
    with ThreadPoolExecutor(_READERS, thread_name_prefix="perpsim-tape-reader") as pool:
        try:
            for grp in groups:
                if grp.rows > _WHOLE_GROUP_ROWS:
                    while pending:
                        done, fut = pending.popleft()
                        yield str(done.file.path), done.row0, fut.result()
                    yield str(grp.file.path), grp.row0, _decode(grp, clock, batch_rows, validate)
                    continue
                pending.append((grp, pool.submit(whole, grp, deferring())))
                if len(pending) > ahead:
                    done, fut = pending.popleft()
                    yield str(done.file.path), done.row0, fut.result()
            while pending:
                done, fut = pending.popleft()
                yield str(done.file.path), done.row0, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def _window(
    c: np.ndarray[Any, Any], start_ns: int | None, end_ns: int | None, *, sorted_: bool
) -> tuple[slice | np.ndarray[Any, Any] | None, bool]:
    """Rows with clock in [start_ns, end_ns) (None: all), and whether the end is passed."""
    if sorted_:
        lo = 0 if start_ns is None else int(np.searchsorted(c, start_ns, "left"))
        hi = len(c) if end_ns is None else int(np.searchsorted(c, end_ns, "left"))
        done = hi < len(c)
        return (None if lo == 0 and hi == len(c) else slice(lo, hi)), done
    mask = np.ones(len(c), bool)
    if start_ns is not None:
        mask &= c >= start_ns
    if end_ns is not None:
        mask &= c < end_ns
    return (None if mask.all() else mask), False


def _select_arrow(rb: pa.RecordBatch, sel: slice | np.ndarray[Any, Any]) -> pa.RecordBatch:
    if isinstance(sel, slice):
        return rb.slice(sel.start, sel.stop - sel.start)
    return rb.filter(pa.array(sel))


def _cast(rb: pa.RecordBatch, casts: dict[str, pa.DataType], file: str, row0: int) -> pa.RecordBatch:
    """Cast columns stored with another type (e.g. timestamps, float32) to the schema's."""
    arrays = []
    for i, name in enumerate(rb.schema.names):
        a = rb.column(i)
        target = casts.get(name)
        if target is not None:
            try:
                if pa.types.is_timestamp(a.type) and pa.types.is_integer(target):
                    a = a.cast(pa.timestamp("ns", a.type.tz)).cast(pa.int64())
                else:
                    a = a.cast(target)
            except pa.ArrowException as e:
                raise TapeError(
                    f"{file} row {row0} column {name}: cannot read {a.type} as {target} ({_one_line(e)})"
                ) from e
        arrays.append(a)
    return pa.RecordBatch.from_arrays(arrays, names=rb.schema.names)


def open_tape(path: str | Path | Sequence[str | Path]) -> Tape:
    """Open a tape: a Parquet file, a folder of ``*.parquet`` (name order), or a list.

    Only footers are read here; call :meth:`Tape.batches` to stream the rows.

    Raises:
        TapeError: a missing path, a file that is not Parquet, an empty folder, a file
            given twice, missing columns, or files whose clock columns differ.
    """
    items: Sequence[str | Path] = [path] if isinstance(path, (str, Path)) else path
    if not items:
        raise TapeError("no tape given")
    paths: list[Path] = []
    seen: dict[Path, Path] = {}
    for item in items:
        for p in _expand(item):
            first = seen.setdefault(p.resolve(), p)
            if first is not p:
                also = "" if str(first) == str(p) else f" (also as {first})"
                raise TapeError(f"{p}: given twice{also}; each file is read once")
            paths.append(p)
    files = [_open_file(p) for p in paths]
    # A journal with no complete batch (a recorder killed at once) has no rows nor metadata.
    return Tape([f for f in files if f.source is None or f.footer.num_rows] or files)
