"""The live tape recorder: every row the engine saw, on disk within a second (DESIGN.md §3, §4).

Crash safety, decided here. Rows are recorded into *segments* ``000000.parquet``,
``000001.parquet``, … (zero-padded, so the folder reads in name order). A segment is
closed (rotated) once it holds ``rotate_rows`` rows or spans ``rotate_s`` seconds, and a
closed segment is a complete Parquet file, written to a hidden temporary, fsynced and
renamed (``os.replace``, atomic on POSIX). Each flush (at least every ``flush_s``,
default 0.5 s) puts the rows since the previous one on disk, in one of two ways:

- **rewrite** (the default): the open segment is rewritten whole — all its rows so far
  — the same way. The folder only ever holds complete Parquet files, which any Parquet
  tool can read while the recording runs; the price is re-encoding the open segment at
  every flush, bounded by ``rotate_rows`` (about 4 ms per flush at the live default of
  20,000 rows). At a busy feed's rates every flush fills a segment and nothing is
  written twice.
- **journal** (``journal=True``): the open segment is ``NNNNNN.arrows``, an Arrow IPC
  stream to which each flush appends one record batch and fsyncs, so a flush costs the
  rows since the last flush whatever the segment size; the segment is encoded to Parquet
  once, when it closes, and its journal is then deleted. The perpsim tape reader reads a
  journal up to its last complete batch (a SIGKILL mid-append leaves a torn last
  message) and ignores one whose Parquet file exists (killed between the rename and the
  delete); other Parquet tools see closed segments only. At start-up the recorder turns
  a journal left by a killed run into its segment (:func:`recover_journals`).

Either way a SIGKILL loses the rows not yet flushed: at most ``flush_s`` plus the time of
one write; hidden temporaries are skipped by the reader and removed at the next start.
Segments keep the file count low (a 48-hour canary makes a few thousand files, not
hundreds of thousands).

Rows arrive as the market events the engine was given, so recording costs the event loop
one list extend per message. A flush hands them to two background threads in a
pipeline, each working in submission order (so a later version of a segment never loses
to an earlier one): a *converter* turns them into Arrow columns (:func:`events_columns`,
Python work that holds the GIL) and validates them, and a *writer* encodes and writes
files (pyarrow, which releases the GIL). A flush goes over in pieces of 16,384 rows
that the writer streams into the file, in full row groups, as they come, so encoding
overlaps conversion (on two cores, about 1.3-1.5x the throughput of one thread). With
``background=False`` both run on the calling thread, and a flush returns once on disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from io import FileIO
from itertools import chain, compress, repeat
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpsim.core.batch import NULL_SEQ, Batch
from perpsim.core.errors import TapeError
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
from perpsim.tapes.reader import JOURNAL_SUFFIX, read_journal
from perpsim.tapes.schema import META_KEY, SCHEMA, WRITE_OPTIONS, TapeMeta, TimerSpec, decode_meta, encode_meta
from perpsim.tapes.validate import Validator

__all__ = [
    "Recorder",
    "RecorderStats",
    "clean_temporaries",
    "events_columns",
    "events_table",
    "journal_name",
    "recover_journals",
    "segment_name",
]

log = logging.getLogger("perpsim.live.recorder")

_KIND_DICT = pa.array(KIND_NAMES, pa.string())
_FLOAT_COLS = ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate")
_SIDED = np.array([Kind.TRADE, Kind.BOOK], np.int8)
_NEXT_TS = np.array([Kind.FUNDING, Kind.TIMER], np.int8)
_ROW_GROUP = 65536  # rows per row group, the reader's unit of streaming
# Rows converted at a time: a flush's events were made long before and are scattered in
# memory, and converting is a dozen passes over them, so a piece that stays in the CPU
# cache across its passes converts about 20 % faster than a whole 500,000-row flush.
_PIECE = 16_384
# The tape writer's options (zstd, delta-encoded clocks), with statistics only for the
# two clock columns, the ones the reader uses (row-group skipping), and pages cut per
# row group's worth of rows rather than per 1,024: together about 15 % off the encoding.
_PARQUET: dict[str, Any] = {**WRITE_OPTIONS, "write_statistics": ["ts", "recv_ts"], "write_batch_size": _ROW_GROUP}


# lz4 journal batches: a fifth of the uncompressed bytes (about 20 a row) for about
# 30 ns a row, off the GIL; zstd would be 12 bytes for 65 ns more.
_JOURNAL_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


def segment_name(index: int) -> str:
    """The file name of segment ``index`` (zero-padded: name order is time order)."""
    return f"{index:06d}.parquet"


def journal_name(index: int) -> str:
    """The file name of segment ``index`` while it is open (its journal)."""
    return f"{index:06d}{JOURNAL_SUFFIX}"


def clean_temporaries(folder: Path) -> int:
    """Remove hidden temporaries a killed recorder left in ``folder``; returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def recover_journals(folder: Path, *, fsync: bool = True) -> int:
    """Turn the journals a killed recorder left in ``folder`` into Parquet segments.

    A journal whose segment already exists is deleted (the kill came between the
    rename and the delete); one with no complete batch is deleted; the others are
    written as their segment, with the metadata they carry. Returns the number of
    segments written.

    Raises:
        TapeError: a journal that is not an Arrow IPC stream.
    """
    n = 0
    for j in sorted(folder.glob(f"[0-9]*{JOURNAL_SUFFIX}")):
        seg = j.with_suffix(".parquet")
        if not seg.exists():
            table = read_journal(j)
            if table.num_rows:
                meta = decode_meta((table.schema.metadata or {}).get(META_KEY))
                _write_parquet(seg, table, meta, fsync=fsync)
                log.warning("recorder: recovered %s (%d rows) from its journal", seg.name, table.num_rows)
                n += 1
        j.unlink()
    return n


class RecorderStats(msgspec.Struct, kw_only=True):
    """Counters for metrics and the closing summary.

    ``rows`` counts rows handed to the writer (at each flush); ``bytes_written`` is the
    size of the recording (its growth per flush); ``io_bytes`` counts every byte written,
    journals included, the price of crash safety.
    """

    rows: int = 0
    rows_written: int = 0
    bytes_written: int = 0
    io_bytes: int = 0
    flushes: int = 0
    segments: int = 0
    write_errors: int = 0
    invalid_rows: int = 0
    last_flush_ns: int = 0


class _Job(msgspec.Struct):
    segment: int
    events: list[MarketEvent]
    close: bool


class _Write(NamedTuple):
    """A converted piece of a flush, from the converter to the writer."""

    segment: int
    batch: pa.RecordBatch | None
    meta: TapeMeta  # the segment's, rows and time range included
    close: bool
    last: bool  # the last piece of its flush


class _Segment:
    """The open segment as the converter sees it (rows, time range) or the writer does
    (also its rows kept for the next version, the version being written, its journal)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.batches: list[pa.RecordBatch] = []  # writer: one contiguous batch after each flush
        self.rows = 0
        self.start_ns = 0  # clock of the first row
        self.end_ns = 0  # clock of the last row
        self.size = 0  # bytes on disk: its current version, or its journal so far
        self.unsaved = 0  # rows of the flush being written, not yet on disk
        self.out: _ParquetOut | None = None  # the version being written
        self.file: FileIO | None = None
        self.journal: pa.ipc.RecordBatchStreamWriter | None = None

    def close_journal(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self.file is not None:
            self.file.close()
            self.file = None


class Recorder:
    """Record tape rows to a folder of segment files; see the module docstring.

    Args:
        folder: the recording folder (created). Existing segments are kept and new ones
            numbered after them, so a folder can be appended to by a restart; a journal a
            killed run left is turned into its segment first.
        meta: metadata for every file (clock ``recv_ts``, source, instruments); the timer
            set is added by :meth:`set_timers`.
        flush_s: the most time rows wait in memory.
        rotate_rows: close a segment at this many rows.
        rotate_s: close a segment when it spans this many seconds of clock time.
        fsync: fsync each file before its rename, and each journal append (durability
            against power loss, not only process death).
        background: flush on a writer thread (the live default); False writes inline.
        journal: keep the open segment as an appended journal instead of rewriting it at
            each flush (see the module docstring).

    Raises:
        TapeError: the folder cannot be created, or holds a journal that is not one.
    """

    def __init__(
        self,
        folder: str | Path,
        meta: TapeMeta,
        *,
        flush_s: float = 0.5,
        rotate_rows: int = 20_000,
        rotate_s: float = 300.0,
        fsync: bool = True,
        background: bool = True,
        journal: bool = False,
    ) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TapeError(f"{self.folder}: cannot create the recording folder ({e})") from e
        clean_temporaries(self.folder)
        recover_journals(self.folder, fsync=fsync)
        existing = sorted(p.name for p in self.folder.glob("[0-9]*.parquet"))
        self._segment = int(existing[-1].split(".")[0]) + 1 if existing else 0
        self.meta = msgspec.structs.replace(meta, clock="recv_ts")
        self.flush_s = flush_s
        self.rotate_rows = rotate_rows
        self.rotate_ns = int(rotate_s * 1e9)
        self.fsync = fsync
        self.journal = journal
        self.stats = RecorderStats()
        self._pending: list[MarketEvent] = []
        self._seg_rows = 0
        self._seg_start: int | None = None
        self._closed = False
        self._lock = threading.Lock()  # guards stats and meta between the threads
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="perpsim-recorder-convert") if background else None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="perpsim-recorder-write") if background else None
        self._futures: list[Future[None]] = []  # converter jobs (event loop side)
        self._written: list[Future[None]] = []  # writer jobs (submitted by the converter; under _lock)
        # converter state: the segment being converted
        self._validator = Validator("recv_ts")
        self._conv = _Segment(-1)
        # writer state: the segment on disk
        self._open: _Segment | None = None

    # -- event loop side ----------------------------------------------------------

    def set_timers(self, timers: Sequence[TimerSpec]) -> None:
        """Store the run's timer set in every file's metadata (DESIGN.md §3)."""
        with self._lock:
            self.meta = msgspec.structs.replace(self.meta, timers=list(timers))

    def add(self, events: Sequence[MarketEvent]) -> None:
        """Record rows (one message's, or a timer firing), in clock (``recv_ts``) order.

        Called once per message on the event loop, so it is one list extend and
        nothing else: counting, rotation and conversion happen at :meth:`flush` and on
        the writer thread.
        """
        if not self._closed:
            self._pending += events

    @property
    def pending_rows(self) -> int:
        """Rows added since the last flush (held in memory until it)."""
        return len(self._pending)

    def flush(self) -> None:
        """Hand the rows recorded since the last flush to the writer (call every ``flush_s``).

        The open segment is rewritten with them (or they are appended to its journal),
        or it is closed when it is full by rows or by time.
        """
        if self._closed or not self._pending:
            return
        events, self._pending = self._pending, []
        n = len(events)
        self.stats.rows += n
        self._seg_rows += n
        if self._seg_start is None:
            self._seg_start = events[0].recv_ts
        span = events[-1].recv_ts - self._seg_start
        close = self._seg_rows >= self.rotate_rows or span >= self.rotate_ns
        job = _Job(segment=self._segment, events=events, close=close)
        if close:
            self._segment += 1
            self._seg_rows = 0
            self._seg_start = None
        self._submit(job)

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is left, write the open segment as Parquet and wait for the writer.

        Args:
            timeout: the most seconds to wait for pending writes.

        Returns:
            True when every write finished in time.
        """
        if self._closed:
            return True
        if self._pending or self._seg_rows:
            events, self._pending = self._pending, []
            self.stats.rows += len(events)
            self._submit(_Job(segment=self._segment, events=events, close=True))
            self._seg_rows = 0
        self._closed = True
        ok = self.wait(timeout)
        for ex in (self._executor, self._writer):
            if ex is not None:
                ex.shutdown(wait=ok, cancel_futures=not ok)
        if ok and self._open is not None:  # a failed write left it open: keep what the journal has
            self._open.close_journal()
            self._open = None
        return ok

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is on disk; False on timeout."""
        futures, self._futures = self._futures, []
        if not _wait_all(futures, timeout):
            return False
        with self._lock:  # every converted flush has been handed to the writer by now
            written, self._written = self._written, []
        return _wait_all(written, timeout)

    def files(self) -> list[Path]:
        """The closed segment files written so far, in name order."""
        return sorted(self.folder.glob("[0-9]*.parquet"))

    def _submit(self, job: _Job) -> None:
        if self._executor is None:
            for w in self._pieces(job):
                self._write(w)
            return
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._executor.submit(self._convert_and_hand_over, job))

    # -- converter thread ----------------------------------------------------------

    def _convert_and_hand_over(self, job: _Job) -> None:
        """Hand each converted piece to the writer as soon as it is ready.

        The writer streams them into the segment's file, so a large flush is encoded
        while its later pieces are still being converted.
        """
        assert self._writer is not None
        for w in self._pieces(job):
            with self._lock:
                self._written = [f for f in self._written if not f.done()]
                self._written.append(self._writer.submit(self._write, w))

    def _pieces(self, job: _Job) -> Iterator[_Write]:
        """Convert a flush in pieces of ``_PIECE`` rows (see there)."""
        events = job.events
        starts = range(0, len(events), _PIECE) if events else range(1)
        for k in starts:
            piece = _Job(segment=job.segment, events=events[k : k + _PIECE], close=job.close)
            yield self._convert(piece, last=k == starts[-1])

    def _convert(self, job: _Job, *, last: bool) -> _Write:
        """Rows → Arrow columns, validated; the segment's metadata as of this flush."""
        seg = self._conv
        if seg.index != job.segment:
            seg = self._conv = _Segment(job.segment)
        try:
            rb = None
            if job.events:
                rb, batch = events_columns(job.events)
                try:
                    self._validator.check(batch, file=segment_name(job.segment), row0=seg.rows, source=rb)
                except TapeError as e:  # record what the engine saw anyway; say so loudly
                    with self._lock:
                        self.stats.invalid_rows += 1
                    log.error("recorder: %s", e)
                    self._validator.last_clock = None
                if seg.rows == 0:
                    seg.start_ns = int(batch.recv_ts[0])
                seg.rows += rb.num_rows
                seg.end_ns = int(batch.recv_ts[-1])
            with self._lock:
                meta = msgspec.structs.replace(self.meta, rows=seg.rows, start_ns=seg.start_ns, end_ns=seg.end_ns)
        except Exception as e:
            with self._lock:
                self.stats.write_errors += 1
            log.exception("recorder: converting rows for %s failed: %s", segment_name(job.segment), e)
            raise
        return _Write(segment=job.segment, batch=rb, meta=meta, close=job.close, last=last)

    # -- writer thread -------------------------------------------------------------

    def _write(self, job: _Write) -> None:
        seg = self._open
        if seg is None or seg.index != job.segment:
            if seg is not None:  # pragma: no cover - a failed close left it behind
                seg.close_journal()
            seg = self._open = _Segment(job.segment)
        name = segment_name(job.segment)
        meta = job.meta
        try:
            added = 0
            if job.batch is not None:
                seg.batches.append(job.batch)
                seg.rows = meta.rows or 0
                seg.end_ns = meta.end_ns or 0
                added = job.batch.num_rows
                seg.unsaved += added
            size = grew = saved = 0
            if self.journal and not job.close:
                if added:
                    size = grew = self._append(seg, meta)
                    saved, seg.unsaved = seg.unsaved, 0
            elif seg.rows and (seg.unsaved or self.journal):  # (rewrite: unchanged since its last flush)
                if seg.out is None:  # a new version: the segment so far, this piece included
                    seg.out = _ParquetOut(self.folder / name)
                    seg.out.add(seg.batches)
                elif job.batch is not None:
                    seg.out.add([job.batch])
                if job.last:
                    size = seg.out.finish(meta, fsync=self.fsync)
                    seg.out = None
                    grew, seg.size = size - seg.size, size  # the journal, or the previous version, goes
                    saved, seg.unsaved = seg.unsaved, 0
                    if len(seg.batches) > 1:  # keep one contiguous table, not one small batch per flush
                        seg.batches = pa.Table.from_batches(seg.batches, schema=SCHEMA).combine_chunks().to_batches()
            if job.close and job.last:
                if seg.file is not None:
                    seg.close_journal()
                    (self.folder / journal_name(job.segment)).unlink(missing_ok=True)
                self._open = None
            with self._lock:
                st = self.stats
                st.rows_written += saved
                st.flushes += job.last and bool(added)
                st.bytes_written += grew  # the recording's growth
                st.io_bytes += size
                if saved:
                    st.last_flush_ns = seg.end_ns
                if job.close and job.last and seg.rows:
                    st.segments += 1
        except Exception as e:
            if seg.out is not None:
                seg.out.abort()
                seg.out = None
            with self._lock:
                self.stats.write_errors += 1
            log.exception("recorder: writing %s failed: %s", name, e)
            raise

    def _append(self, seg: _Segment, meta: TapeMeta) -> int:
        """Append the segment's newest batch to its journal (created on the first); returns the bytes."""
        raw = encode_meta(meta)
        if seg.journal is None:
            path = self.folder / journal_name(seg.index)
            seg.file = FileIO(path, "w")
            seg.journal = pa.ipc.new_stream(seg.file, SCHEMA.with_metadata({META_KEY: raw}), options=_JOURNAL_IPC)
            if self.fsync:
                _fsync_dir(self.folder)
        seg.journal.write_batch(seg.batches[-1], custom_metadata={META_KEY: raw})
        assert seg.file is not None
        if self.fsync:
            os.fsync(seg.file.fileno())
        size = seg.file.tell() - seg.size
        seg.size += size
        return size


def _wait_all(futures: list[Future[None]], timeout: float | None) -> bool:
    for f in futures:
        try:
            f.result(timeout=timeout)
        except TimeoutError:
            return False
        except Exception:  # already logged and counted where it was raised
            continue
    return True


def _write_parquet(path: Path, table: pa.Table, meta: TapeMeta, *, fsync: bool) -> int:
    """Write ``table`` as the Parquet file ``path`` (see :class:`_ParquetOut`); returns its size."""
    out = _ParquetOut(path)
    try:
        out.add(table.to_batches())
    except BaseException:
        out.abort()
        raise
    return out.finish(meta, fsync=fsync)


class _ParquetOut:
    """A Parquet file being written to a hidden temporary, renamed over ``path`` when finished.

    Rows are added in pieces and written in full row groups of ``_ROW_GROUP`` (the last
    one shorter), whatever the pieces' sizes. Until :meth:`finish` renames it, readers
    see the previous version of ``path`` (or none); a kill leaves only the temporary,
    which readers skip.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA, **_PARQUET)
        self.held: list[pa.RecordBatch] = []  # rows short of a row group
        self.held_rows = 0

    def add(self, batches: Sequence[pa.RecordBatch]) -> None:
        self.held.extend(batches)
        self.held_rows += sum(b.num_rows for b in batches)
        full = self.held_rows - self.held_rows % _ROW_GROUP
        if full:
            table = pa.Table.from_batches(self.held, schema=SCHEMA)
            self.writer.write_table(table.slice(0, full), row_group_size=_ROW_GROUP)
            self.held = table.slice(full).to_batches()
            self.held_rows -= full

    def finish(self, meta: TapeMeta, *, fsync: bool) -> int:
        """Write the rest, add the metadata, close, fsync and rename; returns the file's size."""
        try:
            if self.held_rows:
                self.writer.write_table(pa.Table.from_batches(self.held, schema=SCHEMA), row_group_size=_ROW_GROUP)
            self.writer.add_key_value_metadata({META_KEY: encode_meta(meta)})
            self.writer.close()
            size = self.tmp.stat().st_size
            if fsync:
                fd = os.open(self.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if fsync:
            _fsync_dir(self.path.parent)
        return size

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def events_table(events: Sequence[MarketEvent]) -> pa.Table:
    """Market events → one Arrow table in the tape schema (see :func:`events_columns`)."""
    return pa.Table.from_batches([events_columns(events)[0]], schema=SCHEMA)


def events_columns(events: Sequence[MarketEvent]) -> tuple[pa.RecordBatch, Batch]:
    """Market events → the same rows as an Arrow record batch and as a numpy :class:`Batch`.

    This is the recorder's per-row cost, so it is one C-level pass per column
    (``map`` of a getter into numpy or pyarrow) and no per-row Python: a field carried
    by at least half the rows is read from every event with ``getattr(ev, field,
    default)`` (absent on the other kinds); a rarer one only from the events of the
    kinds that carry it. The :class:`Batch` (core/batch.py's null encoding) is built
    from the same numpy arrays, so the recorder validates rows without converting the
    Arrow batch back. Null cells follow the tape conventions (DESIGN.md §4: unused
    prices, sizes, ``side``, ``next_ts``, ``seq``, ``text`` are null; a NaN float is
    written as null).
    """
    n = len(events)
    kind = np.fromiter(map(_CODE.__getitem__, map(type, events)), np.int8, n)
    present = np.bincount(kind, minlength=len(KIND_NAMES))
    ts = np.fromiter(map(_TS, events), np.int64, n)
    recv = np.fromiter(map(_RECV, events), np.int64, n)
    flags = np.fromiter(map(_FLAGS, events), np.uint8, n)
    codes = _Codes()
    sym_codes = np.fromiter(map(codes.__getitem__, map(_SYMBOL, events)), np.int32, n)
    symbols = list(codes)
    seq_a = pa.array(list(map(_SEQ, events)), pa.int64())
    seq = seq_a.to_numpy() if not seq_a.null_count else pc.fill_null(seq_a, NULL_SEQ).to_numpy()
    cols: dict[str, Any] = {}
    subsets: dict[tuple[int, ...], tuple[np.ndarray[Any, Any], list[MarketEvent]]] = {}
    mq = int(present[Kind.QUOTE])
    if 0 < 2 * mq < n:
        # A minority kind's events are scattered in memory, so each visit costs a cache
        # miss: read a quote's four fields in one visit (about 40 % off four passes).
        mask = kind == Kind.QUOTE
        where = np.flatnonzero(mask)
        sub = list(compress(events, mask.tolist()))
        subsets[(Kind.QUOTE,)] = (where, sub)
        quad = np.fromiter(chain.from_iterable(map(_QUOTE, sub)), np.float64, 4 * mq).reshape(mq, 4)
        for j, name in enumerate(_QUOTE_FIELDS):
            full = np.full(n, np.nan)
            full[where] = quad[:, j]
            cols[name] = full
    for name, (kinds, dtype, default) in _KIND_FIELDS.items():
        m = int(present[list(kinds)].sum())
        if name in cols:
            continue
        if m == 0:
            cols[name] = None
        elif 2 * m >= n:  # one pass over every event; the other kinds give the default
            if dtype is None:
                cols[name] = list(map(getattr, events, repeat(name), repeat(None)))
            elif dtype is np.int64:  # next_ts: a funding row may not know it (None)
                vals = pa.array(list(map(getattr, events, repeat(name), repeat(None))), pa.int64())
                cols[name] = pc.fill_null(vals, default).to_numpy()
            else:
                cols[name] = np.fromiter(map(getattr, events, repeat(name), repeat(default)), dtype, n)
        else:  # only the rows of the kinds that carry it
            if kinds not in subsets:
                mask = np.isin(kind, kinds) if len(kinds) > 1 else kind == kinds[0]
                subsets[kinds] = (np.flatnonzero(mask), list(compress(events, mask.tolist())))
            where, sub = subsets[kinds]
            vals = list(map(_GETTERS[name], sub))
            if dtype is None:
                text: list[Any] = [None] * n
                for i, v in zip(where.tolist(), vals):
                    text[i] = v
                cols[name] = text
            else:
                full = np.full(n, default, dtype)
                if dtype is np.int64:  # next_ts: a funding row may not know it (None)
                    vals = [default if v is None else v for v in vals]
                full[where] = np.fromiter(vals, dtype, len(vals))
                cols[name] = full
    arrays: dict[str, pa.Array] = {
        "ts": pa.array(ts, pa.int64()),
        "recv_ts": pa.array(recv, pa.int64()),
        "kind": pa.DictionaryArray.from_arrays(pa.array(kind, pa.int8()), _KIND_DICT),
        "symbol": pa.DictionaryArray.from_arrays(pa.array(sym_codes, pa.int32()), pa.array(symbols, pa.string())),
        "seq": seq_a,
        "flags": pa.array(flags, pa.uint8()),
    }
    batch: dict[str, Any] = {}
    for name in _FLOAT_COLS:
        v = cols[name]
        if v is None:
            v = np.full(n, np.nan)
            arrays[name] = pa.nulls(n, pa.float64())
        else:
            arrays[name] = pa.array(v, pa.float64(), mask=np.isnan(v))
        batch[name] = v
    side = cols["side"]
    if side is None:
        side = np.zeros(n, np.int8)
        arrays["side"] = pa.nulls(n, pa.int8())
    else:
        arrays["side"] = pa.array(side, pa.int8(), mask=~np.isin(kind, _SIDED))
    next_ts = cols["next_ts"]
    if next_ts is None:
        next_ts = np.zeros(n, np.int64)
        arrays["next_ts"] = pa.nulls(n, pa.int64())
    else:
        # null where the kind has none, or a funding row did not know it (stored as 0)
        null = ~np.isin(kind, _NEXT_TS) | ((kind == Kind.FUNDING) & (next_ts == 0))
        arrays["next_ts"] = pa.array(next_ts, pa.int64(), mask=null)
    text = cols["text"]
    if text is None:
        text = [None] * n
        arrays["text"] = pa.nulls(n, pa.string())
    else:
        arrays["text"] = pa.array(text, pa.string())
    rb = pa.RecordBatch.from_arrays([arrays[f.name] for f in SCHEMA], schema=SCHEMA)
    b = Batch(
        clock=recv,
        ts=ts,
        recv_ts=recv,
        kind=kind,
        symbol=sym_codes,
        symbols=tuple(symbols),
        side=side,
        seq=seq,
        flags=flags,
        next_ts=next_ts,
        text=text,
        **batch,
    )
    return rb, b


class _Codes(dict[str, int]):
    """Symbol → dictionary code, numbering symbols in order of first appearance."""

    def __missing__(self, key: str) -> int:
        self[key] = code = len(self)
        return code


_CODE: dict[type, int] = {
    Trade: Kind.TRADE,
    Quote: Kind.QUOTE,
    BookLevel: Kind.BOOK,
    BookReset: Kind.BOOK_RESET,
    Funding: Kind.FUNDING,
    Mark: Kind.MARK,
    Status: Kind.STATUS,
    TimerFired: Kind.TIMER,
}
_NAN = float("nan")
# Each kind-specific column: the kinds whose events carry it, its numpy dtype (None: a
# list of str), and the value the other kinds get (NaN / 0 before masking to null).
_KIND_FIELDS: dict[str, tuple[tuple[int, ...], Any, Any]] = {
    "price": ((Kind.TRADE, Kind.BOOK, Kind.MARK), np.float64, _NAN),
    "size": ((Kind.TRADE, Kind.BOOK), np.float64, _NAN),
    "side": ((Kind.TRADE, Kind.BOOK), np.int8, 0),
    "bid": ((Kind.QUOTE,), np.float64, _NAN),
    "bid_size": ((Kind.QUOTE,), np.float64, _NAN),
    "ask": ((Kind.QUOTE,), np.float64, _NAN),
    "ask_size": ((Kind.QUOTE,), np.float64, _NAN),
    "rate": ((Kind.FUNDING,), np.float64, _NAN),
    "next_ts": ((Kind.FUNDING, Kind.TIMER), np.int64, 0),
    "text": ((Kind.STATUS, Kind.TIMER), None, None),
}
_GETTERS = {f: attrgetter(f) for f in _KIND_FIELDS}
_QUOTE_FIELDS = ("bid", "bid_size", "ask", "ask_size")
_QUOTE = attrgetter(*_QUOTE_FIELDS)
_TS = attrgetter("ts")
_RECV = attrgetter("recv_ts")
_SYMBOL = attrgetter("symbol")
_SEQ = attrgetter("seq")
_FLAGS = attrgetter("flags")
