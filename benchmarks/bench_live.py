"""Live path figures (issue 5): decode+normalize messages/s, recorder events/s, socket→engine latency.

- decode + normalize: Coinbase Advanced Trade messages (encoded from a seeded L2 tape by
  the feed server's encoder) through :class:`~perpsim.tapes.formats.coinbase.Normalizer`,
  one core. Target 300,000 messages/s.
- recorder: the same rows, one message's list at a time, through
  :class:`~perpsim.live.recorder.Recorder` (inline writer, no fsync) to closed Parquet
  files. Target 1,000,000 events/s.
- latency: ``perpsim serve`` (a subprocess) plays a seeded tape at about 10,000
  messages/s with timestamps retimed to its send schedule; the live driver (in this
  process, the backtest bot, recording) measures, per ticker message, the time from the
  envelope ``timestamp`` (stamped by the server as the message leaves it, as Coinbase
  does) to the end of the engine's dispatch: loopback, websockets, decoding, the engine
  and the recorder — the latency added between the socket and the engine, plus the
  kernel's loopback hop. Target p99 under 1 ms.

Run: ``.venv/bin/pytest benchmarks/bench_live.py -s`` (about a minute).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perpsim.cli import perpsim_cli
from perpsim.core.batch import batch_events
from perpsim.core.events import MarketEvent, Quote
from perpsim.live.driver import LiveDriver, LiveOptions
from perpsim.live.feed import FeedConfig
from perpsim.sim.profiles import resolve_config
from perpsim.tapes.formats.coinbase import Normalizer, to_messages
from perpsim.tapes.reader import open_tape
from perpsim.tapes.synth import synth


@pytest.fixture(scope="module")
def l2_tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live-bench") / "l2.parquet"
    return synth(hours=1.5, symbols=["BTC-PERP"], seed=11, out=out, l2=True, trades_per_min=600, quotes_per_min=1200)


def _events(path: Path) -> list[MarketEvent]:
    return [ev for b in open_tape(path).batches() for ev in batch_events(b)]


def _messages(events: list[MarketEvent]) -> list[list[MarketEvent]]:
    out: list[list[MarketEvent]] = []
    cur: list[MarketEvent] = []
    for ev in events:
        cur.append(ev)
        if ev.flags & 1:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def test_bench_decode_normalize(benchmark: Any, l2_tape: Path) -> None:
    msgs = to_messages(_events(l2_tape)[:200_000])
    t0 = 1_800_000_000_000_000_000

    def run() -> int:
        norm = Normalizer()
        n = 0
        for i, m in enumerate(msgs):
            n += len(norm.feed(m, t0 + i))
        return n

    rows = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    rate = len(msgs) / benchmark.stats["min"]
    benchmark.extra_info["messages_per_s"] = round(rate)
    print(f"\ndecode+normalize: {len(msgs):,} messages ({rows:,} rows), {rate:,.0f} messages/s, "
          f"{rows / benchmark.stats['min']:,.0f} rows/s")  # fmt: skip


_SERVE = ["-m", "perpsim" if "serve" in perpsim_cli.commands else "perpsim.cli_live", "serve"]


class _TimedDriver(LiveDriver):
    """The live driver, noting each message's end-of-dispatch time against its send schedule."""

    lat: list[int]
    proc: list[int]

    def _on_events(self, events: list[MarketEvent], recv_ts: int) -> None:
        super()._on_events(events, recv_ts)
        done = time.time_ns()
        if not self.engine.started:
            return
        self.proc.append(done - recv_ts)
        # A ticker's quote time is the envelope timestamp: the moment the server sent it.
        if type(events[-1]) is Quote:
            self.lat.append(done - events[-1].ts)


def test_bench_socket_to_engine_latency(l2_tape: Path, tmp_path: Path) -> None:
    tape = open_tape(l2_tape)
    groups = len(_messages(_events(l2_tape)))
    span_s = (tape.meta.end_ns - tape.meta.start_ns) / 1e9  # type: ignore[operator]
    target_rate = 10_000
    speed = target_rate / (groups / span_s)
    server = subprocess.Popen(
        [sys.executable, *_SERVE, str(l2_tape), "--port", "0", "--speed", f"{speed:.3f}x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        cfg = resolve_config("backtest", overrides={"symbols": ["BTC-PERP"], "interval_s": 1.0})
        opts = LiveOptions(
            feed=FeedConfig(url=url, symbols=("BTC-PERP",)),
            record_dir=tmp_path / "rec",
            run_dir=tmp_path / "run",
            duration_s=12.0,
            handle_signals=False,
        )
        driver = _TimedDriver(cfg, opts)
        sys.setswitchinterval(0.0005)  # as `perpsim live` does
        driver.lat, driver.proc = [], []
        try:
            result = asyncio.run(driver.run())
        finally:
            sys.setswitchinterval(0.005)
    finally:
        server.terminate()
        server.communicate(timeout=10)
    lat = np.array(driver.lat[len(driver.lat) // 6 :]) / 1e6  # skip the first 2 s (connect, snapshot)
    proc = np.array(driver.proc[len(driver.proc) // 6 :]) / 1e6
    wall = result.summary["wall_s"]
    rate = result.summary["feed"]["messages"] / wall
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    q50, q99 = np.percentile(proc, [50, 99])
    print(
        f"\nlatency at {rate:,.0f} messages/s ({speed:.0f}x, {len(lat):,} tickers): "
        f"send→engine p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
        f"p99.9 {p999:.3f} ms; stamp→engine p50 {q50:.3f} ms, p99 {q99:.3f} ms; "
        f"{result.summary['rows']:,} rows, recorder {result.summary['recorder']['rows_written']:,} rows"
    )
    assert result.status == "complete"
