"""Live sessions against an in-process ``perpsim serve``: normal, and each injected fault.

Every session must survive, show its faults as rows (``status`` gap/disconnect/reconnect,
``book_reset``), resync the book from a fresh snapshot, and replay to the same digest.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from perpsim.core.events import Flags, Kind
from perpsim.live.server import Faults
from perpsim.sim.replay import replay
from perpsim.tapes.reader import open_tape
from tests.live.session import INTERVAL_S, replay_digest, rows, run_session

SNAP = int(Flags.SNAPSHOT)


def _book_resyncs_after_each_reset(recorded: list[tuple[str, str, str | None, int]]) -> int:
    """After a non-snapshot book_reset, no plain book row comes before the next snapshot; returns resets."""
    waiting = False
    resets = 0
    for kind, _sym, _text, flags in recorded:
        if kind == "book_reset":
            if flags & SNAP:
                waiting = False
            else:
                waiting = True
                resets += 1
        elif kind == "book" and not flags & SNAP:
            assert not waiting, "a book update was used before the resync snapshot"
    return resets


def test_live_normal_session_trades_records_and_replays_exactly(tape: Path, tmp_path: Path, fast_config: Path) -> None:
    s = run_session(tape, tmp_path, fast_config, duration_s=3.0)
    res = s.result
    assert res.status == "complete"
    feed = res.summary["feed"]
    assert feed["gaps"] == feed["reconnects"] == feed["malformed"] == 0
    assert res.summary["cycles"] >= 8
    assert res.summary["orders"] >= 1 and res.summary["fills"] >= 1
    recorded = rows(res.record_dir)
    kinds = {k for k, *_ in recorded}
    assert {"trade", "quote", "book", "book_reset", "status", "timer"} <= kinds
    assert recorded[0][0] != "timer" or recorded[0][2] == "cycle"
    assert sum(1 for k, _, t, _ in recorded if k == "timer" and t == "cycle") == res.summary["cycles"]
    assert replay_digest(s, fast_config) == res.digest
    run = res.run_dir
    assert {"manifest.json", "events.parquet", "equity.parquet", "summary.json", "snapshot.msgpack"} <= {
        p.name for p in run.iterdir()
    }
    # The run rows are written on a writer thread: all of them, in order, as replay writes them.
    again = replay(res.record_dir, profile="backtest", config=fast_config, interval_s=INTERVAL_S, out=tmp_path / "rp")
    assert again.digest == res.digest
    for name in ("events.parquet", "equity.parquet"):
        live_rows = pq.read_table(run / name).to_pylist()
        assert live_rows == pq.read_table(tmp_path / "rp" / name).to_pylist()
    assert len(pq.read_table(run / "equity.parquet")) == res.summary["cycles"]
    # The drift checklist knows a live run: its heartbeat lag from the recorded cycle timer
    # rows (each fired at or after its deadline), its memory and CPU from the manifest.
    from perpsim.sim.drift import checklist, load_run

    cl = checklist(load_run(run))
    timers = list(open_tape(res.record_dir).batches())
    lags = sorted(
        (int(b.ts[i]) - int(b.next_ts[i])) / 1e6
        for b in timers
        for i in range(len(b))
        if b.kind[i] == Kind.TIMER and b.text[i] == "cycle"
    )
    assert all(x >= 0 for x in lags) and cl["heartbeat_lag_p95_ms"]["value"] <= lags[-1]
    assert cl["heartbeat_lag_p95_ms"]["note"] == "from the recording's cycle timer rows"
    assert cl["memory_mb"]["value"] > 0 and cl["cpu_pct"]["value"] >= 0


def test_live_survives_gaps_and_drops_and_resyncs_the_book(tape: Path, tmp_path: Path, fast_config: Path) -> None:
    s = run_session(tape, tmp_path, fast_config, faults=Faults(drop_rate=0.02, gap_rate=0.02, seed=3))
    res = s.result
    assert res.status == "complete"
    assert s.server.dropped + s.server.gaps > 0
    feed = res.summary["feed"]
    assert feed["gaps"] > 0 and feed["resyncs"] > 0
    recorded = rows(res.record_dir)
    assert any(k == "status" and t == "gap" for k, _, t, _ in recorded)
    assert _book_resyncs_after_each_reset(recorded) >= 1
    assert replay_digest(s, fast_config) == res.digest


def test_live_reconnects_after_disconnects_with_status_rows(tape: Path, tmp_path: Path, fast_config: Path) -> None:
    s = run_session(tape, tmp_path, fast_config, faults=Faults(disconnect_every_s=1.0), duration_s=3.5)
    res = s.result
    assert res.status == "complete"
    feed = res.summary["feed"]
    assert feed["disconnects"] >= 2 and feed["reconnects"] >= 2
    texts = [t for k, _, t, _ in rows(res.record_dir) if k == "status" and t != "heartbeat"]
    assert texts.count("disconnect") == feed["disconnects"] and texts.count("reconnect") == feed["reconnects"]
    assert texts.index("disconnect") < texts.index("reconnect")
    assert _book_resyncs_after_each_reset(rows(res.record_dir)) >= 2
    assert replay_digest(s, fast_config) == res.digest


def test_live_reconnects_when_the_feed_goes_stale(tape: Path, tmp_path: Path, fast_config: Path) -> None:
    s = run_session(
        tape,
        tmp_path,
        fast_config,
        faults=Faults(stall_s=1.2, stall_every_s=1.0),
        feed={"stale_after_s": 0.5},
        duration_s=3.5,
    )
    res = s.result
    assert s.server.stalls >= 1
    feed = res.summary["feed"]
    assert feed["stale"] >= 1 and feed["reconnects"] >= 1
    assert res.status == "complete"
    assert replay_digest(s, fast_config) == res.digest


@pytest.mark.parametrize("huge", [False, True], ids=["malformed", "huge"])
def test_live_survives_malformed_unknown_wrongly_typed_and_huge_messages(
    tape: Path, tmp_path: Path, fast_config: Path, huge: bool
) -> None:
    faults = Faults(huge_rate=0.01, huge_bytes=300_000, seed=2) if huge else Faults(malformed_rate=0.05, seed=2)
    s = run_session(tape, tmp_path, fast_config, faults=faults, feed={"max_size": 200_000}, duration_s=2.5)
    res = s.result
    assert res.status == "complete"
    feed = res.summary["feed"]
    if huge:
        assert s.server.huge >= 1 and feed["disconnects"] >= 1 and feed["reconnects"] >= 1
    else:
        assert s.server.malformed >= 5 and feed["malformed"] >= 3
        # Faulted sends go straight out, fault-free ones (snapshots) through the server's
        # write queue: the sequence stays unbroken.
        assert feed["gaps"] == 0
    assert res.summary["cycles"] >= 5
    assert replay_digest(s, fast_config) == res.digest


def test_a_failing_ticker_ends_the_session_with_an_error_instead_of_silently(
    tape: Path, tmp_path: Path, fast_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticker flushes the recording: if it dies, the session must stop and say so."""
    from perpsim.live.driver import LiveDriver

    refresh, calls = LiveDriver._refresh_metrics, []

    def broken_once(self: LiveDriver) -> None:  # the ticker's first call; shutdown's works
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("metrics broke")
        refresh(self)

    monkeypatch.setattr(LiveDriver, "_refresh_metrics", broken_once)
    s = run_session(tape, tmp_path, fast_config, duration_s=30.0)
    assert s.result.status == "error"
    assert s.result.summary["wall_s"] < 10  # stopped at the failure, not at the 30 s duration
    assert rows(s.result.record_dir)  # what was recorded before is on disk
