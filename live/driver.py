"""The live driver: a websocket feed through the same engine, bot and venue as replay.

::

    CoinbaseFeed ──(events, recv_ts)──► LiveDriver._on_events ──► Engine (paper venue)
         │ stamps once on arrival              │  ├─► Recorder (the tape, as it happens)
    LiveClock ──timer firings──────────────────┘  └─► outbox → digest, run outputs, metrics

The messages of one socket read are handled start to finish synchronously, in one call
(a long read in calls of about 16 rows, so its first messages do not wait for its
last): stamp (once, for every message the read carried: they arrived together); fire the
timers due at or before the stamp (each recorded as a ``timer`` row); dispatch their
rows with the clock at the stamp; record them; drain the engine's outbox. Nothing else
runs in between, so the recording holds exactly what the engine saw, in the order it
saw it, and ``perpsim replay`` of the recording reproduces the run's digest
(DESIGN.md §3). The engine is started at the first row's stamp, as replay starts it at
the first row's clock value.

The hot path keeps the event loop free for the next read: a read's rows go to the
engine as Python lists (:class:`~perpsim.core.batch.Rows`), the recorder turns them
into columns in chunks, a few columns at a time between reads, and writes on its own
thread (niced, :mod:`perpsim.live.threads`), metrics are
counted per recorder chunk, and the objects made at start-up are frozen out of the
garbage collector's sight (a full collection over them took ~40 ms).

Shutdown (SIGINT/SIGTERM, ``--duration``, or :meth:`LiveDriver.request_stop`) is
bounded by ``shutdown_timeout_s``: the feed is cancelled, the engine stopped (its jobs
cancelled), the recorder flushed and closed, the run outputs written with
:mod:`perpsim.sim.runs`, and the engine state saved to ``snapshot.msgpack`` for a warm
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import resource
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from perpsim.core import snapshot as snap_mod
from perpsim.core.batch import Batch, event_rows, symbol_mask
from perpsim.core.config import RunConfig
from perpsim.core.engine import PSEUDO_SYMBOL, Engine
from perpsim.core.errors import ConfigError, InputError, PerpsimError
from perpsim.core.events import KIND_NAMES, TIMER, Flags, MarketEvent, TimerFired
from perpsim.core.instruments import Instrument
from perpsim.core.ledger import to_units, units_to_float
from perpsim.core.outbox import Digest
from perpsim.core.strategy import Strategy, make_strategy
from perpsim.live.clock import LiveClock
from perpsim.live.feed import CoinbaseFeed, FeedConfig, FeedState
from perpsim.live.metrics import LiveMetrics, MetricsServer
from perpsim.live.recorder import Recorder
from perpsim.live.threads import writer_pool
from perpsim.sim.runs import Drawdown, RunWriter, file_sha256, fresh_path, summarize, write_json
from perpsim.sim.warm import end_warm_up, warm_up
from perpsim.tapes.reader import open_tape
from perpsim.tapes.schema import TapeMeta, TimerSpec, WarmStart

__all__ = ["SESSION_FILE", "SNAPSHOT_FILE", "LiveDriver", "LiveOptions", "LiveResult", "find_latest_recording"]

log = logging.getLogger("perpsim.live")

SNAPSHOT_FILE: Final = "snapshot.msgpack"
SESSION_FILE: Final = "session.json"
"""Written into the recording folder: which run directory holds the session's snapshot."""

_EOM: Final = int(Flags.END_OF_MESSAGE)
# Run events and equity rows go to their Parquet files this often (and at shutdown). Each
# write holds the GIL for a millisecond or two whatever its size (polars, a row group), and
# the event loop waits for it; the recording, not these files, is what a crash must keep.
_SINK_EVERY_S: Final = 10.0


_HASH_LIMIT = 256 * 2**20  # hash the recording into the manifest only up to this size


def _utc_stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


class LiveOptions(msgspec.Struct, kw_only=True):
    """How to run live, besides the bot's :class:`~perpsim.core.config.RunConfig`.

    ``record_dir`` None records to ``./recordings/<UTC start time>/``; ``run_dir`` None
    writes ``./runs/<UTC start time>-live-<profile>/``.
    """

    feed: FeedConfig = msgspec.field(default_factory=FeedConfig)
    record_dir: Path | None = None
    record_root: Path = Path("recordings")
    run_dir: Path | None = None
    runs_root: Path = Path("runs")
    warm_from: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    duration_s: float | None = None
    shutdown_timeout_s: float = 5.0
    flush_s: float = 0.5
    rotate_rows: int = 20_000
    rotate_s: float = 300.0
    fsync: bool = True
    journal: bool = False  # the recorder's journal mode (live/recorder.py)
    handle_signals: bool = True


class LiveResult(msgspec.Struct, kw_only=True):
    """What a finished live session reports."""

    digest: str
    summary: dict[str, Any]
    run_dir: Path
    record_dir: Path
    status: str
    warnings: list[str]


class _RecordingRef:
    """The tape-like object :class:`~perpsim.sim.runs.RunWriter` wants: files and a clock."""

    def __init__(self) -> None:
        self.files: tuple[Path, ...] = ()
        self.meta = TapeMeta(clock="recv_ts", source="live")


def find_latest_recording(root: Path) -> Path:
    """The newest recording folder under ``root`` (names are UTC start times: name order).

    Raises:
        InputError: ``root`` holds no recording.
    """
    if root.is_dir():
        folders = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("[0-9]*.parquet")))
        if folders:
            return folders[-1]
    raise InputError(f"--warm-from auto: no recording under {root}")


class LiveDriver:
    """Run one live session; build, then ``await run()`` (or :meth:`run_sync`).

    Args:
        config: the bot's configuration (a resolved profile).
        options: feed, recording, metrics and shutdown options.
        strategy: the strategy class (default: ``config.strategy``).
        instruments: instrument overrides (default: the built-in table).
        on_status: called about once a second with :meth:`status` (the CLI's status line).
    """

    def __init__(
        self,
        config: RunConfig,
        options: LiveOptions,
        *,
        strategy: type[Strategy] | None = None,
        instruments: dict[str, Instrument] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.on_status = on_status
        self.clock = LiveClock()
        cls = strategy or _load_strategy(config.strategy)
        self.strategy = make_strategy(cls, config.params)
        self.engine = Engine(clock=self.clock, strategy=self.strategy, config=config, instruments=instruments)
        symbols = tuple(config.symbols or options.feed.symbols)
        self.feed_config = msgspec.structs.replace(options.feed, symbols=symbols)
        self.feed = CoinbaseFeed(
            self.feed_config, clock=self.clock, on_events=self._on_events, instruments=self.engine.instruments
        )
        self.started_ns = self.clock.stamp()
        stamp = _utc_stamp(self.started_ns)
        self.record_dir = options.record_dir or options.record_root / stamp
        self.run_dir = options.run_dir or fresh_path(options.runs_root / f"{stamp}-live-{config.profile}")
        self.recorder: Recorder | None = None
        self.metrics = LiveMetrics()
        self.metrics_server: MetricsServer | None = None
        self.digest = Digest()
        # run events and equity rows go to the run directory as they drain (``sink``), as in
        # replay, so a long session does not hold them; ``events`` keeps only what came
        # before the writer exists
        self.events: list[Any] = []
        self.sink: RunWriter | None = None
        self._sink_events: list[Any] = []
        self._sink_equity: list[Any] = []
        self._sink_pool = writer_pool("perpsim-run-writer")
        self._sink_jobs: list[Future[None]] = []
        self.drawdown: Drawdown | None = None
        self.last_cycle_ts: int | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.warm_rows = 0
        self.warm_events = 0
        self.restored = False
        # the warm-up's rows and restored snapshot, recorded so the recording replays exactly
        self._warm_batches: list[Batch] = []
        self._warm_snapshot: bytes | None = None
        self.status = "starting"
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._cycle_t0: float | None = None
        self._rows_window: list[tuple[float, int]] = []
        self._rows = 0
        # rows by kind, counted from the recorder's chunks (_on_chunk), synced to Prometheus once a second
        self._kind_counts = np.zeros(len(KIND_NAMES), np.int64)
        self._error: BaseException | None = None
        self._t0 = time.monotonic()
        self._cpu0 = time.process_time()

    # -- the hot path -------------------------------------------------------------------

    def _on_events(self, events: list[MarketEvent], recv_ts: int) -> None:
        """Dispatch one socket read's rows (or a part of a long read's) at its stamp (see the module docstring)."""
        if self._error is not None or self.status in ("stopping", "stopped"):
            return  # shutting down: the engine has stopped and the recording is closing
        try:
            self._dispatch(events, recv_ts)
        except Exception as e:  # an engine bug must stop the session cleanly, not silently
            _log_failure("live: dispatch failed", e)
            self._error = e
            self.request_stop(f"error: {type(e).__name__}: {e}")

    def _dispatch(self, events: list[MarketEvent], recv_ts: int) -> None:
        eng, clock, rec = self.engine, self.clock, self.recorder
        assert rec is not None
        if not eng.started:
            self._start_engine(recv_ts)
        elif self.first_ns is None:  # warm: the live part starts here
            self.first_ns = recv_ts
        if recv_ts >= clock.next_due:
            clock.advance_to(recv_ts)
            self._end_timers()
        clock.set_now(recv_ts)
        n = len(events)
        rows = event_rows(events)
        eng.load_rows(rows, clock="recv_ts")
        i = 0
        while i < n:
            j = eng.run(i, n)
            rec.add(rows if i == 0 and j == n else event_rows(events[i:j]))
            i = j
            if i < n:  # a strategy hook scheduled a timer that is due now (as in replay)
                clock.advance_to(recv_ts)
                self._end_timers()
                clock.set_now(recv_ts)
        self.last_ns = recv_ts
        self._rows += n
        self._drain()

    def _on_chunk(self, b: Batch) -> None:
        """Count a chunk of recorded rows by kind, and the feed lag of its market rows.

        Per chunk of the recorder's rather than per message: vectorized, a few tens of
        microseconds a chunk instead of a few microseconds a message.
        """
        self._kind_counts += np.bincount(b.kind, minlength=len(self._kind_counts))
        market = b.ts != b.recv_ts  # timer and status rows are stamped with their own clock
        if PSEUDO_SYMBOL in b.symbols:
            market &= b.symbol != b.symbols.index(PSEUDO_SYMBOL)
        if market.any():
            self.metrics.lag.observe_many(np.maximum(b.recv_ts[market] - b.ts[market], 0) / 1e9)

    def _on_fire(self, name: str, deadline: int, fired_at: int) -> None:
        """A timer fires: record its row (DESIGN.md §3) and time the cycle."""
        rec = self.recorder
        if rec is not None:
            timer = TimerFired(
                ts=fired_at, recv_ts=fired_at, symbol=PSEUDO_SYMBOL, text=name, next_ts=deadline, flags=_EOM
            )
            rec.add(event_rows([timer]))
        self.engine.rows += 1  # replay counts timer rows too
        if self.first_ns is None:  # warm, and a timer fired before the first message
            self.first_ns = fired_at
        self.last_ns = fired_at
        self._end_timers()
        if name == "cycle":
            self._cycle_t0 = time.perf_counter()

    def _end_timers(self) -> None:
        if self._cycle_t0 is not None:
            self.metrics.cycle.observe(time.perf_counter() - self._cycle_t0)
            self._cycle_t0 = None

    def _wake(self) -> None:
        """The clock's idle wake-up: a timer is due and no message came to fire it."""
        if self._error is not None or not self.engine.started or self.engine.stopped:
            return
        try:
            t = self.clock.stamp()
            self.clock.advance_to(t)
            self._end_timers()
            self._drain()
        except Exception as e:
            _log_failure("live: timer failed", e)
            self._error = e
            self.request_stop(f"error: {type(e).__name__}: {e}")

    def _drain(self) -> None:
        eng = self.engine
        out = eng.outbox.drain()
        if out:
            self.digest.update(out)
            self.metrics.count_run_events(out)
        if self.sink is None:
            self.events.extend(out)
            return
        if out:
            self._sink_events.extend(out)
        if eng.equity_rows:
            rows, eng.equity_rows = eng.equity_rows, []
            self.last_cycle_ts = rows[-1].ts
            assert self.drawdown is not None
            self.drawdown.update(rows)
            self._sink_equity.extend(rows)

    def _flush_sink(self) -> None:
        """Hand the run events and equity rows drained since the last call to the writer thread.

        Writing them costs a Parquet row group each time (1-3 ms): done on the message
        path, once per cycle, it held up every message that arrived meanwhile (the
        latency benchmark's tail). The digest is computed on the loop as events drain, so
        where and when they are written changes nothing a replay compares.
        """
        events, equity = self._sink_events, self._sink_equity
        if not events and not equity:
            return
        self._sink_events, self._sink_equity = [], []
        sink = self.sink
        assert sink is not None
        for job in self._sink_jobs:
            exc = job.exception() if job.done() else None
            if exc is not None and self._error is None:  # as a failed write on the loop would
                log.error("live: writing run events failed: %s", exc)
                self._error = exc
                self.request_stop(f"error: {type(exc).__name__}: {exc}")
        self._sink_jobs = [j for j in self._sink_jobs if not j.done() or j.exception() is not None]
        self._sink_jobs.append(self._sink_pool.submit(_write_run_rows, sink, events, equity))

    def _wait_sink(self, timeout: float) -> bool:
        """Wait for the writer thread (call :meth:`_flush_sink` first); False if a write failed or timed out."""
        done, pending = futures_wait(self._sink_jobs, timeout=max(0.0, timeout))
        self._sink_pool.shutdown(wait=False)
        ok = not pending
        for job in done:
            exc = job.exception()
            if exc is not None:
                log.error("live: writing run events failed: %s", exc)
                ok = False
        return ok

    def _start_engine(self, t: int) -> None:
        self.clock.set_now(t)
        self.first_ns = t
        self.engine.start()
        self._set_timer_meta()

    def _set_timer_meta(self) -> None:
        assert self.recorder is not None
        self.recorder.set_timers([TimerSpec(name=h.name, interval_ns=h.interval) for h in self.clock.timers()])

    # -- warm start ---------------------------------------------------------------------

    def warm_start(self, source: str) -> Path:
        """Replay the tail of a recording through the engine, then restore its snapshot.

        The tail is long enough to refill the mark windows (``window + 2`` cycles).
        The replay's own run events are discarded (they happened in the earlier
        session); the snapshot saved by that session, if any, then puts back the
        ledger, the guards' state (the day's PnL) and the strategy's state exactly.
        The rows replayed and the snapshot's bytes are kept: :meth:`run` records them
        ahead of the live rows so ``perpsim replay`` redoes this with the same code
        (:mod:`perpsim.sim.warm`).

        Returns:
            The recording used.

        Raises:
            InputError: no recording, or a snapshot of another bot.
        """
        path = find_latest_recording(self.options.record_root) if source == "auto" else Path(source)
        tape = open_tape(path)
        eng, clock = self.engine, self.clock
        window = max((w.maxlen or 0) for w in eng.market.windows) if eng.market.windows else 1
        end = tape.meta.end_ns
        start = None if end is None else end - round((window + 2) * self.config.interval_s * 1e9)
        allowed = set(self.feed_config.symbols) | {PSEUDO_SYMBOL}
        clock.on_fire = None  # the firings are not recorded: the replay fires its own here too
        for batch in tape.batches(start_ns=start):
            b = _select(batch, allowed)
            if len(b) == 0:
                continue
            b = msgspec.structs.replace(b, recv_ts=b.clock)  # recorded under clock recv_ts: what the engine saw
            self.warm_rows += warm_up(eng, clock, b)
            self._warm_batches.append(b)
        snap_file = _snapshot_for(path)
        self._warm_snapshot = None if snap_file is None else snap_file.read_bytes()
        self.warm_events = end_warm_up(eng, self._warm_snapshot)
        self.restored = snap_file is not None
        log.info(
            "live: warm start from %s: %d rows replayed, %s",
            path,
            self.warm_rows,
            f"state restored from {snap_file}" if snap_file is not None else "no snapshot found (state not restored)",
        )
        return path

    # -- lifecycle ----------------------------------------------------------------------

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the session to end (thread-unsafe; call on the loop, or from a signal handler)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def run_sync(self) -> LiveResult:
        """:meth:`run` in a fresh event loop."""
        return asyncio.run(self.run())

    def _start(self, loop: asyncio.AbstractEventLoop) -> RunWriter:
        """Warm up (when asked), open the recording and the run directory; returns the run's writer."""
        opts = self.options
        if opts.warm_from:
            self.warm_start(opts.warm_from)
        warm: WarmStart | None = None
        if self.engine.started:  # warm: skip the cycles missed while we were away
            realign_ns = self.clock.stamp()
            self.clock.realign(realign_ns)
            warm = WarmStart(rows=self.warm_rows, realign_ns=realign_ns, snapshot=self._warm_snapshot)
        self.recorder = Recorder(
            self.record_dir,
            TapeMeta(
                clock="recv_ts",
                source=f"coinbase-live:{self.feed_config.url}",
                instruments={k: v for k, v in self.engine.instruments.items() if k != PSEUDO_SYMBOL},
                warm=warm,
            ),
            flush_s=opts.flush_s,
            rotate_rows=opts.rotate_rows,
            rotate_s=opts.rotate_s,
            fsync=opts.fsync,
            journal=opts.journal,
            on_chunk=self._on_chunk,
            defer=loop.call_soon,
        )
        for b in self._warm_batches:  # rows the engine saw: the replay warms up on them
            self.recorder.add_batch(b)
        self._warm_batches = []
        writer = RunWriter(self.run_dir, self.config, _RecordingRef())
        self.drawdown = Drawdown(to_units(self.engine.equity_exact()))
        writer.write_events(self.events)
        self.events = []
        self.sink = writer
        write_json(
            self.record_dir / SESSION_FILE, {"run_dir": str(self.run_dir.resolve()), "profile": self.config.profile}
        )
        if warm is not None:
            self._set_timer_meta()
        self.clock.on_fire = self._on_fire
        return writer

    async def run(self) -> LiveResult:
        """Warm up, go live until stopped, shut down within the timeout; returns the result.

        Raises:
            InputError: the metrics port cannot be bound (before anything is recorded), or
                the warm start finds no usable recording.
        """
        opts = self.options
        loop = asyncio.get_running_loop()
        if opts.metrics_port is not None:
            self.metrics_server = MetricsServer(self.metrics, opts.metrics_host, opts.metrics_port)
            try:
                port = self.metrics_server.start()
            except OSError as e:
                self.metrics_server = None
                where = f"{opts.metrics_host}:{opts.metrics_port}"
                raise InputError(
                    f"--metrics-port {opts.metrics_port}: cannot listen on {where} ({e.strerror or e})"
                ) from None
            log.info("live: metrics on http://%s:%d/metrics", opts.metrics_host, port)
        try:
            writer = self._start(loop)
        except BaseException:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            raise
        if opts.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        self.clock.attach(loop, self._wake)
        self.status = "running"
        # Everything made so far (modules, the engine, the warm-up) lives for the whole
        # session: out of the collector's sight, a full collection takes well under a
        # millisecond instead of ~40 ms that every message arriving meanwhile would wait.
        gc.collect()
        gc.freeze()
        feed_task = loop.create_task(self.feed.run(), name="perpsim-feed")
        tick_task = loop.create_task(self._ticker(), name="perpsim-tick")
        wall0 = time.monotonic()
        try:
            timeout = opts.duration_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_or_task_death(feed_task, tick_task), timeout)
            self.request_stop("duration")  # no-op when a signal, a request or a failure came first
        finally:
            status = await self._shutdown(feed_task, tick_task, writer, time.monotonic() - wall0)
            gc.unfreeze()
            if opts.handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        try:
            summary = summarize(self, time.monotonic() - wall0)
        except PerpsimError:
            if self._error is None:
                raise
            summary = {}  # the error left state the summary cannot hold (money out of range)
        return LiveResult(
            digest=self.digest.hexdigest(),
            summary={**summary, **self._live_summary(status)},
            run_dir=self.run_dir,
            record_dir=self.record_dir,
            status=status,
            warnings=list(self.engine.warnings),
        )

    async def _stop_or_task_death(self, feed_task: asyncio.Task[None], tick_task: asyncio.Task[None]) -> None:
        """Return on a stop request, or when the feed or the ticker ends with an error (a
        dead ticker would stop flushing the recording without a word)."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({stop, feed_task, tick_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        for what, task in (("feed", feed_task), ("ticker", tick_task)):
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("live: the %s failed: %r", what, exc)
                self._error = exc
                self.request_stop(f"{what} failed: {exc}")
                return

    async def _ticker(self) -> None:
        """Once per flush interval: flush the recorder; once a second: metrics and status;
        every ``_SINK_EVERY_S``: hand the run outputs to their writer."""
        opts = self.options
        last_status, last_sink = 0.0, time.monotonic()
        while True:
            await asyncio.sleep(opts.flush_s)
            # Each step a fraction of a millisecond, with the loop free to take a socket
            # read between them: a message waits for one step, not for all of them.
            if self.recorder is not None:
                self.recorder.seal()
                await asyncio.sleep(0)
                self.recorder.flush()
                await asyncio.sleep(0)
            now = time.monotonic()
            if now - last_sink >= _SINK_EVERY_S:
                last_sink = now
                self._flush_sink()
            if now - last_status >= 1.0:
                last_status = now
                self._refresh_metrics()
                if self.on_status is not None:
                    with contextlib.suppress(Exception):
                        self.on_status(self.status_doc())

    async def _shutdown(
        self, feed_task: asyncio.Task[None], tick_task: asyncio.Task[None], writer: RunWriter, wall_s: float
    ) -> str:
        """Everything bounded by ``shutdown_timeout_s``; returns the run status."""
        self.status = "stopping"
        deadline = time.monotonic() + self.options.shutdown_timeout_s
        log.info("live: stopping (%s)", self._stop_reason or "stop")
        await _cancel(feed_task, tick_task, deadline=deadline - 1.0)
        self.clock.detach()
        self.engine.stop()
        self._drain()
        self._flush_sink()
        rec = self.recorder
        assert rec is not None
        loop = asyncio.get_running_loop()
        written = await loop.run_in_executor(None, self._wait_sink, max(0.1, deadline - time.monotonic() - 1.0))
        flushed = await loop.run_in_executor(None, rec.close, max(0.1, deadline - time.monotonic() - 0.5))
        status = "complete"
        if not flushed:
            status = "incomplete"
            self.engine.warnings.append("the recorder did not finish writing within the shutdown timeout")
        if not written:
            status = "incomplete"
            self.engine.warnings.append("run events were not all written (see the log)")
        if self._error is not None:  # what stopped the session outranks what it left unwritten
            status = "error"
        self._refresh_metrics()
        try:
            self._write_outputs(writer, wall_s, status)
        except Exception as e:
            if self._error is None:
                log.exception("live: writing run outputs failed")
                status = "incomplete"
            else:  # a consequence of the error logged already (its state may not encode)
                log.debug("live: writing run outputs failed after the error: %s", e)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.status = "stopped"
        return status

    def _write_outputs(self, writer: RunWriter, wall_s: float, status: str) -> None:
        files = self.recorder.files() if self.recorder is not None else []
        total = sum(f.stat().st_size for f in files)
        writer.manifest["tapes"] = [
            {"path": str(f), "sha256": file_sha256(f) if total <= _HASH_LIMIT else None} for f in files
        ]
        writer.manifest["clock"] = "recv_ts"
        writer.manifest["live"] = self._live_summary(status)
        writer.finish(self, wall_s, status=status)
        (self.run_dir / SNAPSHOT_FILE).write_bytes(snap_mod.encode(snap_mod.snapshot(self.engine)))

    # -- observability --------------------------------------------------------------------

    def _live_summary(self, status: str) -> dict[str, Any]:
        fs = self.feed.stats
        rs = self.recorder.stats if self.recorder is not None else None
        return {
            "status": status,
            "stop_reason": self._stop_reason,
            "url": self.feed_config.url,
            "record_dir": str(self.record_dir),
            "warm_rows": self.warm_rows,
            "restored": self.restored,
            "feed": msgspec.to_builtins(fs),
            "recorder": None if rs is None else msgspec.to_builtins(rs),
            # the drift checklist's memory and CPU (a replay has neither of its own to compare)
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpu_pct": round(100 * (time.process_time() - self._cpu0) / max(time.monotonic() - self._t0, 1e-9), 1),
        }

    def _refresh_metrics(self) -> None:
        m, fs = self.metrics, self.feed.stats
        m.uptime.set(time.monotonic() - self._t0)
        m.sync_counter(m.messages, "messages", fs.messages)
        m.sync_counter(m.feed_bytes, "bytes", fs.bytes)
        m.sync_counter(m.reconnects, "reconnects", fs.reconnects)
        m.sync_counter(m.disconnects, "disconnects", fs.disconnects)
        m.sync_counter(m.gaps, "gaps", fs.gaps)
        m.sync_counter(m.resyncs, "resyncs", fs.resyncs)
        m.sync_counter(m.malformed, "malformed", fs.malformed)
        m.sync_counter(m.stale, "stale", fs.stale)
        m.sync_counter(m.unsubscribed, "unsubscribed", fs.unsubscribed)
        counts = self._kind_counts
        for code in np.flatnonzero(counts).tolist():
            kind = KIND_NAMES[code]
            m.sync_counter(m.events.labels(kind), f"rows:{kind}", int(counts[code]))
        if self.recorder is not None:
            rs = self.recorder.stats
            m.sync_counter(m.recorder_rows, "rec_rows", rs.rows_written)
            m.sync_counter(m.recorder_bytes, "rec_bytes", rs.bytes_written)
            m.sync_counter(m.recorder_flushes, "rec_flushes", rs.flushes)
            m.sync_counter(m.recorder_errors, "rec_errors", rs.write_errors)
        eng = self.engine
        m.feed_up.set(1 if self.feed.state == FeedState.LIVE else 0)
        m.equity.set(float(eng.equity_exact()))
        m.cash.set(units_to_float(eng.ledger.cash))
        for sym in eng.market.names:
            if sym != PSEUDO_SYMBOL:
                m.position.labels(sym).set(float(eng.ledger.qty(sym)))
        for name, on in self._guards().items():
            m.guard.labels(name).set(1 if on else 0)
        doc = self.status_doc()
        m.publish_health(doc, healthy=doc["status"] == "ok")

    def _guards(self) -> dict[str, bool]:
        bot = self.engine.bot
        if bot is None:
            return {}
        st = bot.guards.state
        return {
            "kill_switch": st.kill_switch,
            "reduce_only": st.reduce_only,
            "daily_loss": st.daily_loss_tripped,
            "error_breaker": st.paused_until is not None,
            "symbol_reduce_only": bool(st.reduce_only_symbols),
        }

    def status_doc(self) -> dict[str, Any]:
        """The ``/health`` document and the status line's data."""
        fs = self.feed.stats
        now = time.monotonic()
        self._rows_window.append((now, self._rows))
        while len(self._rows_window) > 2 and now - self._rows_window[0][0] > 10:
            self._rows_window.pop(0)
        t0, r0 = self._rows_window[0]
        rate = (self._rows - r0) / (now - t0) if now > t0 else 0.0
        eng = self.engine
        cycle_ts = eng.equity_rows[-1].ts if eng.equity_rows else self.last_cycle_ts
        feed_state = str(self.feed.state)
        if self.status != "running":
            status = self.status
        elif feed_state == FeedState.LIVE:
            status = "ok"
        else:
            status = "degraded"
        return {
            "status": status,
            "uptime_s": round(now - self._t0, 3),
            "feed": feed_state,
            "url": self.feed_config.url,
            "lag_ms": None if fs.last_lag_ns is None else round(fs.last_lag_ns / 1e6, 3),
            "events_per_s": round(rate, 1),
            "messages": fs.messages,
            "reconnects": fs.reconnects,
            "disconnects": fs.disconnects,
            "gaps": fs.gaps,
            "malformed": fs.malformed,
            "guards": self._guards(),
            "last_cycle": None if cycle_ts is None else datetime.fromtimestamp(cycle_ts / 1e9, tz=UTC).isoformat(),
            "last_cycle_age_s": None if cycle_ts is None else round((self.clock.stamp() - cycle_ts) / 1e9, 3),
            "cycles": eng.cycles,
            "positions": {s: float(p.qty) for s, p in sorted(eng.ledger.positions.items()) if p.qty != 0},
            "pnl": units_to_float(eng.ledger.realized - eng.ledger.fees + eng.ledger.funding),
            "equity": float(eng.equity_exact()),
            "recorder_rows": 0 if self.recorder is None else self.recorder.stats.rows_written,
        }


def _log_failure(what: str, e: Exception) -> None:
    """One line for an error perpsim raised on purpose (its message says it all), the
    traceback for anything else (a bug to find)."""
    if isinstance(e, PerpsimError):
        log.error("%s: %s", what, e)
    else:
        log.exception(what)


def _load_strategy(spec: str) -> type[Strategy]:
    """``module:Class`` → the class (live may not import the replay driver that has one)."""
    import importlib

    mod_name, _, cls_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name, None) if mod_name and cls_name else None
    except ImportError as e:
        raise ConfigError(f"strategy {spec!r}: cannot import module {mod_name!r}: {e}") from e
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise ConfigError(f"strategy {spec!r}: not a perpsim.Strategy subclass as module:Class")
    return cls


async def _cancel(*tasks: asyncio.Task[None], deadline: float) -> None:
    """Cancel ``tasks`` and wait for them until ``deadline`` (monotonic), cancelling again
    every 0.1 s: a cancel that races with a completing await can be lost (Python 3.11)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _, pending = await asyncio.wait(pending, timeout=min(0.1, left))


def _write_run_rows(sink: RunWriter, events: list[Any], equity: list[Any]) -> None:
    sink.write_events(events)
    sink.write_equity(equity)


def _snapshot_for(recording: Path) -> Path | None:
    """The snapshot the session that made ``recording`` saved, if any."""
    folder = recording if recording.is_dir() else recording.parent
    session = folder / SESSION_FILE
    if not session.is_file():
        return None
    try:
        run_dir = Path(json.loads(session.read_text())["run_dir"])
    except (ValueError, KeyError, TypeError):
        return None
    snap = run_dir / SNAPSHOT_FILE
    return snap if snap.is_file() else None


def _select(b: Batch, allowed: set[str]) -> Batch:
    """Rows of ``allowed`` symbols, without ``timer`` rows (the warm-up fires its own timers)."""
    return b.rows(symbol_mask(b, allowed) & (b.kind != TIMER))
