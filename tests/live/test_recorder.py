"""The recorder: a journal for the open segment, complete Parquet files once closed, readable at any moment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from perpsim.core.batch import batch_events, event_rows
from perpsim.core.events import (
    BookLevel,
    BookReset,
    Flags,
    Funding,
    Mark,
    MarketEvent,
    Quote,
    Status,
    TimerFired,
    Trade,
)
from perpsim.live.recorder import Recorder, clean_temporaries, events_table, journal_name, recover_journals
from perpsim.tapes.reader import open_tape, to_batch
from perpsim.tapes.schema import TapeMeta, TimerSpec
from tests.helpers import reaped, sigkill

T = 1_700_000_000_000_000_000


def _events(n: int, t0: int = T) -> list[MarketEvent]:
    out: list[MarketEvent] = []
    for i in range(n):
        t = t0 + i * 1_000_000
        k = i % 8
        c = {"ts": t - 5, "recv_ts": t, "symbol": "BTC-PERP" if k != 6 else "*"}
        if k == 0:
            out.append(Trade(price=100.0 + i % 7, size=0.5, side=1, seq=i, **c))
        elif k == 1:
            out.append(Quote(bid=99.5, bid_size=1.0, ask=100.5, ask_size=2.0, seq=i, **c))
        elif k == 2:
            out.append(BookReset(flags=int(Flags.SNAPSHOT), **c))
        elif k == 3:
            out.append(BookLevel(price=99.0, size=0.0, side=-1, flags=int(Flags.END_OF_MESSAGE), **c))
        elif k == 4:
            out.append(Funding(rate=1e-5, next_ts=t + 10, **c))
        elif k == 5:
            out.append(Mark(price=100.25, **c))
        elif k == 6:
            out.append(Status(text="heartbeat", seq=i, **c))
        else:
            out.append(TimerFired(text="cycle", next_ts=t - 7, **{**c, "symbol": "*"}))
    return out


def _round_trip(evs: list[MarketEvent]) -> list[MarketEvent]:
    back: list[MarketEvent] = batch_events(to_batch(events_table(evs).to_batches()[0], clock="recv_ts"))
    return back


def test_recorder_events_table_round_trips_every_kind() -> None:
    evs = _events(16)
    assert _round_trip(evs) == evs


@pytest.mark.parametrize("k", range(8))
def test_recorder_events_table_round_trips_when_one_kind_dominates(k: int) -> None:
    # A field most rows carry is read from every event (the other kinds give a default
    # that must become null); a rare one only from its kind's rows: both paths, each kind.
    evs = [e for i, e in enumerate(_events(64)) if i % 8 == k or i % 16 == 9]
    evs += [Funding(ts=T + 10**9, recv_ts=T + 10**9, symbol="ETH-PERP", rate=-2e-5)]  # next_ts unknown
    table = events_table(evs)
    assert _round_trip(evs) == evs
    # unused cells are null, not NaN or 0 (DESIGN.md §4)
    kinds = table.column("kind").to_pylist()
    for col, carriers in (("price", {"trade", "book", "mark"}), ("bid", {"quote"}), ("side", {"trade", "book"}),
                          ("next_ts", {"funding", "timer"}), ("text", {"status", "timer"})):  # fmt: skip
        values = table.column(col).to_pylist()
        assert all(v is None for v, kd in zip(values, kinds) if kd not in carriers), col
    assert table.column("next_ts").to_pylist()[-1] is None


@pytest.mark.parametrize(("background", "journal"), [(False, False), (True, False), (False, True), (True, True)])
def test_recorder_flushes_rotates_and_leaves_only_complete_files(
    tmp_path: Path, background: bool, journal: bool
) -> None:
    rec = Recorder(
        tmp_path / "r", TapeMeta(source="test"), rotate_rows=40, fsync=False, background=background, journal=journal
    )
    rec.set_timers([TimerSpec(name="cycle", interval_ns=5_000_000_000)])
    evs = _events(100)
    for i in range(0, 100, 10):
        rec.add(event_rows(evs[i : i + 10]))
        rec.flush()
        rec.wait()
        # At every moment the folder is a readable tape of everything flushed so far, and
        # only Parquet files unless the open segment is journaled.
        assert open_tape(tmp_path / "r").num_rows == i + 10
        suffixes = {p.suffix for p in (tmp_path / "r").iterdir()}
        assert suffixes <= ({".parquet", ".arrows"} if journal else {".parquet"})
    assert rec.close()
    files = rec.files()
    assert [f.name for f in files] == ["000000.parquet", "000001.parquet", "000002.parquet"]
    tape = open_tape(tmp_path / "r")
    assert tape.meta.clock == "recv_ts" and tape.meta.timers == [TimerSpec(name="cycle", interval_ns=5_000_000_000)]
    got = [ev for b in tape.batches() for ev in batch_events(b)]
    assert got == evs
    assert rec.stats.rows_written == 100 and rec.stats.segments == 3 and rec.stats.write_errors == 0
    assert rec.stats.bytes_written == sum(f.stat().st_size for f in files) <= rec.stats.io_bytes


def test_recorder_rotates_by_time_and_appends_after_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    rec = Recorder(folder, TapeMeta(), rotate_s=0.005, fsync=False, background=False)
    evs = _events(30)
    rec.add(event_rows(evs[:10]))
    rec.flush()  # 9 ms span: rotates
    rec.add(event_rows(evs[10:20]))
    rec.close()
    (folder / ".000009.parquet.tmp").write_bytes(b"torn")  # what a SIGKILL mid-write leaves
    rec2 = Recorder(folder, TapeMeta(), fsync=False, background=False)
    assert not (folder / ".000009.parquet.tmp").exists()
    rec2.add(event_rows(evs[20:]))
    rec2.close()
    assert [f.name for f in rec2.files()] == ["000000.parquet", "000001.parquet", "000002.parquet"]
    assert open_tape(folder).num_rows == 30
    assert clean_temporaries(folder) == 0


def test_recorder_journals_the_open_segment_and_the_reader_stops_at_a_torn_tail(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    rec = Recorder(folder, TapeMeta(source="test"), rotate_rows=1000, fsync=False, background=False, journal=True)
    rec.set_timers([TimerSpec(name="cycle", interval_ns=10**9)])
    evs = _events(60)
    for i in range(0, 60, 20):
        rec.add(event_rows(evs[i : i + 20]))
        rec.flush()
    # the open segment is only a journal, appended per flush: no Parquet file yet
    assert sorted(p.name for p in folder.iterdir()) == [journal_name(0)]
    tape = open_tape(folder)
    assert [ev for b in tape.batches() for ev in batch_events(b)] == evs
    assert tape.meta.clock == "recv_ts" and tape.meta.timers == [TimerSpec(name="cycle", interval_ns=10**9)]
    # what a SIGKILL in the middle of an append leaves: everything before it is read
    torn = tmp_path / "torn"
    torn.mkdir()
    data = (folder / journal_name(0)).read_bytes()
    (torn / journal_name(0)).write_bytes(data[:-7])
    assert open_tape(torn).num_rows == 40
    assert rec.close()
    assert [p.name for p in sorted(folder.iterdir())] == ["000000.parquet"]
    assert open_tape(folder).num_rows == 60 and rec.stats.segments == 1


def test_recorder_restart_recovers_a_killed_runs_journal(tmp_path: Path) -> None:
    folder, crashed = tmp_path / "r", tmp_path / "crashed"
    rec = Recorder(folder, TapeMeta(source="test"), rotate_rows=50, fsync=False, background=False, journal=True)
    rec.set_timers([TimerSpec(name="cycle", interval_ns=10**9)])
    evs = _events(90)
    for i in range(0, 80, 20):
        rec.add(event_rows(evs[i : i + 20]))
        rec.flush()  # 000000 closed at 60 rows, 000001 open with 20
    shutil.copytree(folder, crashed)  # the folder as a SIGKILL would leave it
    (crashed / journal_name(1)).write_bytes((crashed / journal_name(1)).read_bytes() + b"\xff\xff")
    (crashed / journal_name(7)).write_bytes(b"")  # created, killed before the schema went out
    rec.close()
    assert open_tape(crashed).num_rows == 80  # read as it is: torn tail and empty journal too

    rec2 = Recorder(crashed, TapeMeta(source="restart"), fsync=False, background=False)
    assert sorted(p.name for p in crashed.iterdir()) == ["000000.parquet", "000001.parquet"]
    rec2.add(event_rows(evs[80:]))
    assert rec2.close()
    assert [p.name for p in rec2.files()] == ["000000.parquet", "000001.parquet", "000002.parquet"]
    tape = open_tape(crashed)
    assert [ev for b in tape.batches() for ev in batch_events(b)] == evs
    # the recovered segment keeps the metadata its journal carried
    assert open_tape(crashed / "000001.parquet").meta.timers == [TimerSpec(name="cycle", interval_ns=10**9)]


def test_recorder_a_journal_next_to_its_written_segment_is_ignored_then_removed(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    rec = Recorder(folder, TapeMeta(), rotate_rows=1000, fsync=False, background=False, journal=True)
    evs = _events(30)
    rec.add(event_rows(evs[:10]))
    rec.flush()
    journal = (folder / journal_name(0)).read_bytes()
    rec.add(event_rows(evs[10:]))
    rec.close()
    # killed after the segment's rename, before its journal's delete
    (folder / journal_name(0)).write_bytes(journal)
    assert open_tape(folder).num_rows == 30
    assert recover_journals(folder) == 0
    assert not (folder / journal_name(0)).exists()


_KILLED = """
import sys
from perpsim.core.batch import event_rows
from perpsim.live.recorder import Recorder
from perpsim.tapes.schema import TapeMeta, TimerSpec
from tests.live.test_recorder import _events

rec = Recorder(sys.argv[1], TapeMeta(source="killed"), rotate_rows=2_000, fsync=False, journal=sys.argv[2] == "1")
rec.set_timers([TimerSpec(name="cycle", interval_ns=10**9)])
evs, i = _events(10**6), 0
while True:
    rec.add(event_rows(evs[i : i + 300]))
    i += 300
    rec.flush()
    rec.wait()
    print(i, flush=True)
"""


@pytest.mark.parametrize("journal", [False, True])
def test_recorder_sigkill_mid_write_leaves_a_readable_recording_with_every_flushed_row(
    tmp_path: Path, journal: bool
) -> None:
    folder = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(folder), str(int(journal))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    with reaped(proc):
        assert proc.stdout is not None
        flushed = 0
        for line in proc.stdout:
            flushed = int(line)
            if flushed >= 30_000:  # segments closed, one open: kill while the writer keeps going
                break
        sigkill(proc)
    assert flushed >= 30_000
    tape = open_tape(folder)
    got = [ev for b in tape.batches() for ev in batch_events(b)]
    # every row whose flush had finished is there, in order, and nothing else
    assert len(got) >= flushed and got == _events(len(got))
    assert tape.meta.timers == [TimerSpec(name="cycle", interval_ns=10**9)]
    rec = Recorder(folder, TapeMeta(), fsync=False, background=False)  # the restart tidies up
    assert rec.close() and not list(folder.glob("*.arrows")) and not list(folder.glob(".*"))
    assert open_tape(folder).num_rows == len(got)


@pytest.mark.parametrize(("background", "journal"), [(False, False), (True, False), (True, True)])
def test_recorder_streams_a_large_flush_in_pieces_into_full_row_groups(
    tmp_path: Path, background: bool, journal: bool
) -> None:
    # A large flush is converted and written in pieces (on the two threads in the
    # background); the file appears only when the whole flush is in it, in full row groups.
    folder = tmp_path / "r"
    rec = Recorder(folder, TapeMeta(), rotate_rows=10**6, fsync=False, background=background, journal=journal)
    evs = _events(140_000)
    rec.add(event_rows(evs[:139_990]))
    rec.flush()
    rec.wait()
    assert open_tape(folder).num_rows == 139_990 and rec.stats.rows_written == 139_990
    rec.add(event_rows(evs[139_990:]))
    assert rec.close()
    tape = open_tape(folder)
    assert [f.name for f in tape.files] == ["000000.parquet"]
    assert [ev for b in tape.batches() for ev in batch_events(b)] == evs
    assert rec.stats.flushes == 2 and rec.stats.segments == 1 and rec.stats.write_errors == 0
    footer = pq.read_metadata(folder / "000000.parquet")
    assert [footer.row_group(g).num_rows for g in range(footer.num_row_groups)] == [65536, 65536, 8928]


def test_a_full_chunk_is_converted_in_deferred_steps_and_a_flush_finishes_what_is_left(tmp_path: Path) -> None:
    """``defer`` moves a full chunk's conversion out of ``add`` into steps (the live
    driver runs each between socket reads); rows keep their order and symbols, and
    nothing is lost whether a step has run, or a flush or a second full chunk comes first."""
    queued: list[Any] = []
    chunks: list[int] = []
    rec = Recorder(tmp_path / "rec", TapeMeta(), fsync=False, background=False, defer=queued.append)
    rec.on_chunk = lambda b: chunks.append(len(b))
    evs = [msgspec.structs.replace(e, symbol="ETH-PERP") if i % 5 == 2 else e for i, e in enumerate(_events(2_100))]
    rec.add(event_rows(evs[:600]))  # a full chunk: taken out whole, converted later
    rec.add(event_rows(evs[600:700]))  # the next chunk's
    assert rec.pending_rows == 700 and chunks == []
    steps = 0
    while queued:  # each step queues the next, then on_chunk comes as a step of its own
        queued.pop(0)()
        steps += 1
    assert chunks == [600] and steps > 2
    rec.add(event_rows(evs[700:1_300]))  # 700 rows, full: its conversion is queued ...
    queued.pop(0)()  # ... and one step of it runs
    rec.add(event_rows(evs[1_300:1_900]))  # full again: the first is finished at once, in order
    assert chunks == [600, 700]
    rec.add(event_rows(evs[1_900:]))
    rec.flush()  # finishes the queued conversion and converts the open chunk itself
    assert chunks == [600, 700, 600, 200]
    for cb in queued:  # the steps left find nothing to do
        cb()
    assert chunks == [600, 700, 600, 200] and rec.pending_rows == 0
    rec.close()
    assert [ev for b in open_tape(tmp_path / "rec").batches() for ev in batch_events(b)] == evs
