"""The recorder: segments of complete Parquet files, rotated, flushed, readable at any moment."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsim.core.batch import batch_events
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
from perpsim.live.recorder import Recorder, clean_temporaries, events_table
from perpsim.tapes.reader import open_tape
from perpsim.tapes.schema import TapeMeta, TimerSpec

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


def test_recorder_events_table_round_trips_every_kind() -> None:
    evs = _events(16)
    from perpsim.tapes.reader import to_batch

    back = batch_events(to_batch(events_table(evs).to_batches()[0], clock="recv_ts"))
    assert back == evs


@pytest.mark.parametrize("background", [False, True])
def test_recorder_flushes_rotates_and_leaves_only_complete_files(tmp_path: Path, background: bool) -> None:
    rec = Recorder(tmp_path / "r", TapeMeta(source="test"), rotate_rows=40, fsync=False, background=background)
    rec.set_timers([TimerSpec(name="cycle", interval_ns=5_000_000_000)])
    evs = _events(100)
    for i in range(0, 100, 10):
        rec.add(evs[i : i + 10])
        rec.flush()
        rec.wait()
        # At every moment the folder is a readable tape of everything flushed so far.
        assert open_tape(tmp_path / "r").num_rows == i + 10
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
    rec.add(evs[:10])
    rec.flush()  # 9 ms span: rotates
    rec.add(evs[10:20])
    rec.close()
    (folder / ".000009.parquet.tmp").write_bytes(b"torn")  # what a SIGKILL mid-write leaves
    rec2 = Recorder(folder, TapeMeta(), fsync=False, background=False)
    assert not (folder / ".000009.parquet.tmp").exists()
    rec2.add(evs[20:])
    rec2.close()
    assert [f.name for f in rec2.files()] == ["000000.parquet", "000001.parquet", "000002.parquet"]
    assert open_tape(folder).num_rows == 30
    assert clean_temporaries(folder) == 0
