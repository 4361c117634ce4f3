"""Recorder figures (issue 5): events/s written to closed Parquet files, and what a flush costs.

The rows are a seeded level-2 tape's (mostly book levels, then quotes and trades), one
message's :class:`~perpsim.core.batch.Rows` at a time through :meth:`Recorder.add`, as
the live driver hands them over (it builds them once per socket read for the engine; that
cost is in the latency figure of ``bench_live.py``), with ``fsync`` off (the figure is
the recorder's, not the disk's). "Written" means on disk in closed segments: the clock
stops when :meth:`Recorder.close` returns.

- ``test_bench_recorder``: the issue's figure, target 1,000,000 events/s. The messages
  are stamped as if they arrived at 1,000,000 events/s and the recorder is flushed every
  0.5 s of that clock, as the live driver's ticker does, with the live rotation
  (20,000 rows, 300 s). ``inline`` writes on the calling thread (one core: the
  recorder's own cost); ``background`` is the live configuration, a writer thread
  whose Parquet encoding (no GIL) overlaps the caller. ``per_read``: the live driver
  adds one socket read's rows at a time; ``1`` adds every message alone (the worst
  case), ``16`` a read of 16 messages, what the feed server writes at once at
  10,000 messages/s (at 1,000,000 events/s a read would hold more).
- ``test_bench_recorder_flush_cost``: a quieter feed's cadence (a flush every 10,000
  rows) into large segments (500,000 rows): the ``rewrite`` mode re-encodes the open
  segment at every flush, the ``journal`` mode appends only the new rows. The gap is
  what ``journal=True`` buys; at the live defaults (20,000-row segments) it is small.

Run: ``.venv/bin/pytest benchmarks/bench_recorder.py -s`` (about a minute).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from perpsim.core.batch import Rows, batch_events, event_rows
from perpsim.core.events import MarketEvent, split_messages
from perpsim.live.recorder import Recorder
from perpsim.tapes.reader import open_tape
from perpsim.tapes.schema import TapeMeta
from perpsim.tapes.synth import synth

_RATE = 1_000_000  # events/s the stamps pretend to arrive at
_FLUSH_NS = 500_000_000  # the live driver's flush interval


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> list[list[MarketEvent]]:
    """The tape's rows as messages (split at the end-of-message flag), stamped at ``_RATE``."""
    out = tmp_path_factory.mktemp("recorder-bench") / "l2.parquet"
    tape = synth(hours=1.5, symbols=["BTC-PERP"], seed=11, out=out, l2=True, trades_per_min=600, quotes_per_min=1200)
    return list(split_messages(ev for b in open_tape(tape).batches() for ev in batch_events(b)))


def _reads(messages: list[list[MarketEvent]], per_read: int) -> list[Rows]:
    """The messages as the live driver hands them to the recorder: the rows of ``per_read``
    messages at a time (one socket read's), stamped at ``_RATE`` with the read's arrival."""
    out, n = [], 0
    for k in range(0, len(messages), per_read):
        stamp = 1_800_000_000_000_000_000 + n * (1_000_000_000 // _RATE)
        events = [msgspec.structs.replace(e, recv_ts=stamp) for m in messages[k : k + per_read] for e in m]
        out.append(event_rows(events))
        n += len(events)
    return out


def _chunks(messages: list[Rows], flush_every: int | None) -> list[list[Rows]]:
    """The messages between flushes: every ``flush_every`` rows, or else every 0.5 s of clock."""
    cuts, rows = [0], 0
    due = messages[0].recv_ts[0] + _FLUSH_NS
    for i, m in enumerate(messages):
        if flush_every is None and m.recv_ts[0] >= due:
            cuts.append(i)
            due += _FLUSH_NS
        rows += len(m)
        if flush_every is not None and rows >= flush_every:
            cuts.append(i + 1)
            rows = 0
    return [messages[a:b] for a, b in zip(cuts, [*cuts[1:], len(messages)]) if b > a]


def _record(chunks: list[list[Rows]], folder: Path, **options: Any) -> Recorder:
    """Add every message, flushing between chunks, and close: the timed part."""
    rec = Recorder(folder, TapeMeta(source="bench"), fsync=False, **options)
    add, flush = rec.add, rec.flush
    for chunk in chunks:
        for m in chunk:
            add(m)
        flush()
    rec.close()
    return rec


def _run(
    benchmark: Any, messages: list[Rows], tmp_path: Path, flush_every: int | None, **options: Any
) -> tuple[int, float, Any, int]:
    """Time the recording (best of 3) of ``messages`` (:func:`_reads`); then check that the
    last one reads back whole."""
    n = sum(map(len, messages))
    chunks = _chunks(messages, flush_every)  # found beforehand: only the recorder's calls are timed
    runs: list[tuple[Path, Recorder]] = []

    def timed() -> int:
        if runs:  # only the last recording is kept, for the check
            shutil.rmtree(runs[-1][0])
        folder = tmp_path / f"r{len(runs)}"
        runs.append((folder, _record(chunks, folder, **options)))
        return int(runs[-1][1].stats.rows_written)

    rows = benchmark.pedantic(timed, rounds=3, iterations=1, warmup_rounds=1)
    folder, rec = runs[-1]
    assert rows == n and open_tape(folder).num_rows == n
    rate = n / benchmark.stats["min"]
    benchmark.extra_info["events_per_s"] = round(rate)
    return n, rate, rec.stats, len(rec.files())


@pytest.mark.parametrize("per_read", [1, 16])
@pytest.mark.parametrize("mode", ["inline", "background"])
def test_bench_recorder(
    benchmark: Any, messages: list[list[MarketEvent]], tmp_path: Path, mode: str, per_read: int
) -> None:
    reads = _reads(messages, per_read)
    n, rate, st, files = _run(benchmark, reads, tmp_path, None, background=mode == "background")
    print(
        f"\nrecorder ({mode}, {per_read} message(s) per add): {n:,} events in {len(messages):,} messages, "
        f"{rate:,.0f} events/s written ({files} files, {st.flushes} flushes, "
        f"{st.io_bytes / st.bytes_written:.2f}x bytes written per byte kept)"
    )


@pytest.mark.parametrize("mode", ["rewrite", "journal"])
def test_bench_recorder_flush_cost(
    benchmark: Any, messages: list[list[MarketEvent]], tmp_path: Path, mode: str
) -> None:
    options: dict[str, Any] = {"background": False, "rotate_rows": 500_000, "journal": mode == "journal"}
    _, rate, st, files = _run(benchmark, _reads(messages, 1), tmp_path, 10_000, **options)
    print(
        f"\nrecorder flush cost ({mode}, a flush per 10,000 rows, 500,000-row segments): {rate:,.0f} events/s "
        f"({files} files, {st.flushes} flushes, {st.io_bytes / st.bytes_written:.2f}x bytes written per byte kept)"
    )
