"""Live sessions against an in-process ``perpsim serve``: normal, and each injected fault.

Every session must survive, show its faults as rows (``status`` gap/disconnect/reconnect,
``book_reset``), resync the book from a fresh snapshot, and replay to the same digest.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from websockets.asyncio.server import ServerConnection, serve

from perpsim.core.errors import InputError
from perpsim.core.events import Flags, Kind
from perpsim.core.strategy import Context, Strategy
from perpsim.live.driver import LiveDriver, LiveOptions, LiveResult
from perpsim.live.feed import FeedConfig
from perpsim.live.server import Faults
from perpsim.sim.profiles import resolve_config
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


def _ticker_frames(seq0: int, n: int, price: float | None = None) -> bytes:
    """``n`` ticker messages as raw websocket frames (unmasked, server to client)."""
    out = []
    for i in range(n):
        px = 60_000.0 + (seq0 + i) % 50 if price is None else price
        doc = {
            "channel": "ticker",
            "client_id": "",
            "timestamp": "2024-10-04T07:13:31.5Z",
            "sequence_num": seq0 + i,
            "events": [
                {
                    "type": "update",
                    "tickers": [
                        {
                            "type": "ticker",
                            "product_id": "BTC-PERP-INTX",
                            "best_bid": str(px),
                            "best_bid_quantity": "1",
                            "best_ask": str(px + 1),
                            "best_ask_quantity": "1",
                        }
                    ],
                }
            ],
        }
        payload = json.dumps(doc).encode()
        out.append(bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload)
    return b"".join(out)


def _session(tmp_path: Path, cfg: Any, handler: Any, strategy: Any = None) -> LiveResult:
    """A live session of ``duration_s`` 1 against a scripted websockets server on loopback."""

    async def main() -> LiveResult:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            opts = LiveOptions(
                feed=FeedConfig(url=f"ws://127.0.0.1:{port}", symbols=("BTC-PERP",), seed=1),
                record_dir=tmp_path / "rec",
                record_root=tmp_path,
                run_dir=tmp_path / "run",
                duration_s=1.0,
                flush_s=0.25,
                fsync=False,
                handle_signals=False,
            )
            return await LiveDriver(cfg, opts, strategy=strategy).run()

    return asyncio.run(main())


def test_rows_still_arriving_when_the_duration_ends_are_not_dispatched(tmp_path: Path, fast_config: Path) -> None:
    # a steady feed, then a backlog of 100,000 messages written at once: the client is still
    # reading it when the duration ends. Rows read after that reached the stopped engine
    # (not the recording): the live run counted rows its replay never saw.
    cfg = resolve_config(
        "backtest", config_file=fast_config, overrides={"symbols": ["BTC-PERP"], "interval_s": INTERVAL_S}
    )

    async def handler(ws: ServerConnection) -> None:
        for _ in range(4):  # the feed's subscriptions
            await ws.recv()
        seq = 0
        for _ in range(40):
            ws.transport.write(_ticker_frames(seq, 5))
            seq += 5
            await asyncio.sleep(0.02)
        ws.transport.write(_ticker_frames(seq, 100_000))
        await ws.wait_closed()

    res = _session(tmp_path, cfg, handler)
    assert res.status == "complete" and res.summary["stop_reason"] == "duration"
    again = replay(res.record_dir, profile="backtest", config=fast_config, interval_s=INTERVAL_S)
    assert again.summary["rows"] == res.summary["rows"] < 100_200  # the backlog was cut short
    assert again.digest == res.digest


class _BuyOnce(Strategy):
    def on_cycle(self, ctx: Context) -> None:
        if not ctx.position("BTC-PERP"):
            ctx.submit("BTC-PERP", "buy", 0.01)


def test_money_out_of_range_ends_the_session_with_error_status(tmp_path: Path) -> None:
    # long 0.01, then quotes at 1e300: the next equity row's unrealized PnL fits no int64
    # ledger unit. The session stops with status "error" (not "incomplete", which the
    # unwritable state made it) and the error's one line, and so does its replay.
    cfg = resolve_config("backtest", overrides={"symbols": ["BTC-PERP"], "interval_s": INTERVAL_S})

    async def handler(ws: ServerConnection) -> None:
        for _ in range(4):
            await ws.recv()
        for seq in range(30):
            ws.transport.write(_ticker_frames(seq, 1))
            await asyncio.sleep(0.02)
        ws.transport.write(_ticker_frames(30, 5, price=1e300))
        await ws.wait_closed()

    res = _session(tmp_path, cfg, handler, strategy=_BuyOnce)
    assert res.status == "error"
    assert "money beyond the ledger's range" in res.summary["stop_reason"]
    with pytest.raises(InputError, match="money beyond the ledger's range"):
        replay(res.record_dir, strategy=_BuyOnce, interval_s=INTERVAL_S)
