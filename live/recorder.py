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

Rows arrive as the :class:`~perpsim.core.batch.Rows` the engine was given (the driver
builds them once per socket read) and are appended to a chunk's column lists, which
become numpy columns on the caller's thread every ``_CHUNK`` rows. With ``defer`` (the
live driver) that conversion runs between socket reads in steps of a few columns (about
0.1 ms each; the whole chunk at once, with the driver's metrics, took 0.4 ms at 10,000
messages/s): recording costs the event loop a dozen list extends per read and those
short pauses. A flush
hands the finished chunks to one writer thread, which makes them Arrow columns
(:func:`batch_arrow`, vectorized), validates them, and encodes and writes files
(pyarrow and numpy, which release the GIL), in submission order, so a later version of
a segment never loses to an earlier one. Turning Python objects into columns on the
writer thread instead held the GIL there for milliseconds at every flush, and the event
loop waited for it: that was the latency tail of issue 5. With ``background=False`` the
writer's work runs on the calling thread too, and a flush returns once on disk.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from io import FileIO
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpsim.core.batch import (
    NULL_SEQ,
    Batch,
    Rows,
    batch_from_events,
    concat_batches,
    finish_steps,
    rows_batch,
    rows_batch_steps,
)
from perpsim.core.errors import TapeError
from perpsim.core.events import (
    FUNDING,
    KIND_NAMES,
    Kind,
    MarketEvent,
)
from perpsim.live.threads import writer_pool
from perpsim.tapes.reader import JOURNAL_SUFFIX, read_journal
from perpsim.tapes.schema import META_KEY, SCHEMA, WRITE_OPTIONS, TapeMeta, TimerSpec, decode_meta, encode_meta
from perpsim.tapes.validate import Validator

__all__ = [
    "Recorder",
    "RecorderStats",
    "batch_arrow",
    "clean_temporaries",
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
# Rows gathered before they become Arrow columns: large enough that the per-chunk costs
# vanish, small enough that the pause in the event loop stays a fraction of a millisecond.
_CHUNK = 512
# The tape writer's options (tapes/schema.py), with statistics only for the
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
    """A flush, from the caller to the writer."""

    segment: int
    chunks: list[Batch]
    close: bool
    meta: TapeMeta  # the segment's, rows and time range included


class _Write(NamedTuple):
    """A flush as the writer writes it."""

    segment: int
    batch: pa.RecordBatch | None
    meta: TapeMeta  # the segment's, rows and time range included
    close: bool


class _Segment:
    """The open segment as the writer sees it: its rows kept for the next version, the
    version being written, its journal."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.batches: list[pa.RecordBatch] = []  # writer: one contiguous batch after each flush
        self.rows = 0
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
        on_chunk: called on the caller's thread with each chunk of rows given to
            :meth:`add` once it is columns (the live driver's metrics read it there).
        defer: runs a full chunk's conversion later on the caller's thread, in steps,
            instead of inside :meth:`add` (the live driver passes ``loop.call_soon``:
            each step after the socket read being handled, not in its dispatch).

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
        on_chunk: Callable[[Batch], None] | None = None,
        defer: Callable[[Callable[[], None]], object] | None = None,
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
        self.on_chunk = on_chunk
        self.defer = defer
        self._conversion: Generator[None, None, Batch] | None = None  # a full chunk's, deferred
        self._converting = 0  # its rows
        self.stats = RecorderStats()
        self._new_chunk()  # rows since the last chunk was converted
        self._chunks: list[Batch] = []  # converted, not yet handed to the writer
        self._names: dict[str, int] = {}  # one symbol numbering for all chunks, so a flush joins them
        self._pending = 0  # rows in _chunks
        self._seg_rows = 0
        self._seg_start: int | None = None  # the open segment's first and last clock values
        self._seg_end = 0
        self._closed = False
        self._lock = threading.Lock()  # guards stats between the threads
        self._writer = writer_pool("perpsim-recorder") if background else None
        self._futures: list[Future[None]] = []
        # writer state: the rows checked so far, the segment on disk
        self._validator = Validator("recv_ts")
        self._open: _Segment | None = None

    # -- event loop side ----------------------------------------------------------

    def set_timers(self, timers: Sequence[TimerSpec]) -> None:
        """Store the run's timer set in every file's metadata (DESIGN.md §3)."""
        self.meta = msgspec.structs.replace(self.meta, timers=list(timers))

    def add(self, rows: Rows) -> None:
        """Record rows (a socket read's messages, or a timer firing), in clock (``recv_ts``) order.

        Called per socket read (or part of one) on the event loop: the rows join the open chunk's
        lists, which become numpy columns when it is full.
        """
        if self._closed:
            return
        e = self._extend
        e[0](rows.ts)
        e[1](rows.recv_ts)
        e[2](rows.kind)
        e[3](rows.symbol)
        e[4](rows.price)
        e[5](rows.size)
        e[6](rows.side)
        e[7](rows.bid)
        e[8](rows.bid_size)
        e[9](rows.ask)
        e[10](rows.ask_size)
        e[11](rows.rate)
        e[12](rows.next_ts)
        e[13](rows.seq)
        e[14](rows.flags)
        e[15](rows.text)
        if len(self._chunk.ts) >= _CHUNK:
            if self.defer is None:
                self.seal()
            else:
                self._finish_conversion()  # the previous chunk's, if still under way
                chunk, self._converting = self._chunk, len(self._chunk.ts)
                self._new_chunk()
                self._conversion = rows_batch_steps(chunk, "recv_ts", self._names)
                self.defer(self._convert_step)

    def add_batch(self, batch: Batch) -> None:
        """Record rows that are already columns (a warm start's), after those added so far."""
        if self._closed or not len(batch):
            return
        self.seal()
        names = self._names
        codes = np.array([names.setdefault(s, len(names)) for s in batch.symbols], np.int32)
        self._chunks.append(msgspec.structs.replace(batch, symbol=codes[batch.symbol], symbols=tuple(names)))
        self._pending += len(batch)

    def _new_chunk(self) -> None:
        self._chunk = Rows([], [], [], [], [], [], [], [], [], [], [], [], [], [], [], [])
        # bound ``extend`` of each column, in Rows' field order: the cheapest way to append a message
        self._extend = tuple(getattr(self._chunk, name).extend for name in Rows.__struct_fields__)

    def seal(self) -> None:
        """Make every row added so far columns now (:meth:`flush` does it too; the live
        driver calls it just before, so the loop can take a socket read in between)."""
        self._finish_conversion()
        if self._chunk.ts:
            batch = rows_batch(self._chunk, clock="recv_ts", names=self._names)
            self._new_chunk()
            self._sealed(batch)

    def _convert_step(self) -> None:
        """One step of the deferred conversion of a full chunk; defers the next one."""
        conv = self._conversion
        if conv is None:
            return  # finished by seal() meanwhile
        try:
            next(conv)
        except StopIteration as done:
            self._conversion, self._converting = None, 0
            self._sealed(done.value, later=True)
        else:
            assert self.defer is not None
            self.defer(self._convert_step)

    def _finish_conversion(self) -> None:
        conv = self._conversion
        if conv is not None:
            self._conversion, self._converting = None, 0
            self._sealed(finish_steps(conv))

    def _sealed(self, batch: Batch, *, later: bool = False) -> None:
        """A chunk is columns; ``later``: call ``on_chunk`` as a step of its own."""
        self._chunks.append(batch)
        self._pending += len(batch)
        if self.on_chunk is not None:
            if later:
                assert self.defer is not None  # only a deferred conversion finishes later
                self.defer(functools.partial(self.on_chunk, batch))
            else:
                self.on_chunk(batch)

    @property
    def pending_rows(self) -> int:
        """Rows added since the last flush (held in memory until it)."""
        return self._pending + self._converting + len(self._chunk.ts)

    def flush(self) -> None:
        """Hand the rows recorded since the last flush to the writer (call every ``flush_s``).

        The open segment is rewritten with them (or they are appended to its journal),
        or it is closed when it is full by rows or by time.
        """
        if self._closed or not self.pending_rows:
            return
        self._submit(self._job(closing=False))

    def _job(self, *, closing: bool) -> _Job:
        """The rows since the last flush, with the open segment's metadata; the segment is
        closed when ``closing`` or full by rows or by time."""
        self.seal()
        chunks, n, self._chunks, self._pending = self._chunks, self._pending, [], 0
        self.stats.rows += n
        if chunks:
            if self._seg_start is None:
                self._seg_start = int(chunks[0].recv_ts[0])
            self._seg_end = int(chunks[-1].recv_ts[-1])
            self._seg_rows += n
        start = self._seg_start or 0
        meta = msgspec.structs.replace(self.meta, rows=self._seg_rows, start_ns=start, end_ns=self._seg_end)
        close = closing or self._seg_rows >= self.rotate_rows or self._seg_end - start >= self.rotate_ns
        job = _Job(segment=self._segment, chunks=chunks, close=close, meta=meta)
        if close:
            self._segment += 1
            self._seg_rows, self._seg_start, self._seg_end = 0, None, 0
        return job

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is left, write the open segment as Parquet and wait for the writer.

        Args:
            timeout: the most seconds to wait for pending writes.

        Returns:
            True when every write finished in time.
        """
        if self._closed:
            return True
        if self.pending_rows or self._seg_rows:
            self._submit(self._job(closing=True))
        self._closed = True
        ok = self.wait(timeout)
        if self._writer is not None:
            self._writer.shutdown(wait=ok, cancel_futures=not ok)
        if ok and self._open is not None:  # a failed write left it open: keep what the journal has
            self._open.close_journal()
            self._open = None
        return ok

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is on disk; False on timeout."""
        futures, self._futures = self._futures, []
        return _wait_all(futures, timeout)

    def files(self) -> list[Path]:
        """The closed segment files written so far, in name order."""
        return sorted(self.folder.glob("[0-9]*.parquet"))

    def _submit(self, job: _Job) -> None:
        if self._writer is None:
            self._write(self._prepare(job))
            return
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._writer.submit(lambda: self._write(self._prepare(job))))

    # -- writer thread -------------------------------------------------------------

    def _prepare(self, job: _Job) -> _Write:
        """Join a flush's chunks as Arrow columns and check them."""
        rb = None
        try:
            if job.chunks:
                batch = concat_batches(job.chunks)
                rb = batch_arrow(batch)
                row0 = (job.meta.rows or 0) - len(batch)  # the flush's place in its segment
                try:
                    self._validator.check(batch, file=segment_name(job.segment), row0=row0, source=rb)
                except TapeError as e:  # record what the engine saw anyway; say so loudly
                    with self._lock:
                        self.stats.invalid_rows += 1
                    log.error("recorder: %s", e)
                    self._validator.last_clock = None
        except Exception as e:
            with self._lock:
                self.stats.write_errors += 1
            log.exception("recorder: preparing rows for %s failed: %s", segment_name(job.segment), e)
            raise
        return _Write(segment=job.segment, batch=rb, meta=job.meta, close=job.close)

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
                seg.out = _ParquetOut(self.folder / name)  # a new version: the segment so far
                seg.out.add(seg.batches)
                size = seg.out.finish(meta, fsync=self.fsync)
                seg.out = None
                grew, seg.size = size - seg.size, size  # the journal, or the previous version, goes
                saved, seg.unsaved = seg.unsaved, 0
                if len(seg.batches) > 1:  # keep one contiguous table, not one small batch per flush
                    seg.batches = pa.Table.from_batches(seg.batches, schema=SCHEMA).combine_chunks().to_batches()
            if job.close:
                if seg.file is not None:
                    seg.close_journal()
                    (self.folder / journal_name(job.segment)).unlink(missing_ok=True)
                self._open = None
            with self._lock:
                st = self.stats
                st.rows_written += saved
                st.flushes += bool(added)
                st.bytes_written += grew  # the recording's growth
                st.io_bytes += size
                if saved:
                    st.last_flush_ns = seg.end_ns
                if job.close and seg.rows:
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
    """Market events → one Arrow table in the tape schema, as the recorder writes them."""
    return pa.Table.from_batches([batch_arrow(batch_from_events(events, clock="recv_ts"))], schema=SCHEMA)


def batch_arrow(b: Batch) -> pa.RecordBatch:
    """A numpy :class:`Batch` as an Arrow record batch in the tape schema.

    Vectorized: the values are the batch's arrays, with masks for the tape's nulls
    (DESIGN.md §4): NaN floats (unused prices, sizes, quotes, rates), ``side`` outside
    trades and book rows, ``next_ts`` outside funding and timer rows (and a funding row
    that did not know it), ``seq`` -1, ``text`` None.
    """
    kind = b.kind
    arrays: dict[str, pa.Array] = {
        "ts": pa.array(b.ts),
        "recv_ts": pa.array(b.recv_ts),
        "kind": pa.DictionaryArray.from_arrays(pa.array(kind), _KIND_DICT),
        "symbol": pa.DictionaryArray.from_arrays(pa.array(b.symbol), pa.array(b.symbols, pa.string())),
        "side": pa.array(b.side, mask=~np.isin(kind, _SIDED)),
        "next_ts": pa.array(b.next_ts, mask=~np.isin(kind, _NEXT_TS) | ((kind == FUNDING) & (b.next_ts == 0))),
        "text": pa.nulls(len(b), pa.string()) if b.text.count(None) == len(b) else pa.array(b.text, pa.string()),
        "seq": pa.array(b.seq, mask=b.seq == NULL_SEQ),
        "flags": pa.array(b.flags),
    }
    for name in _FLOAT_COLS:
        v = getattr(b, name)
        arrays[name] = pa.array(v, mask=np.isnan(v))
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in SCHEMA], schema=SCHEMA)
