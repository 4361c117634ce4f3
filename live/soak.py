"""The live soak: the live driver against a feed for a bounded wall time, sampled like a replay soak.

``perpsim soak --live ws://HOST:PORT --wall 60s`` runs one :class:`~perpsim.live.driver.LiveDriver`
session (feed client, live clock, engine with paper fills, recorder) against the URL,
normally a ``perpsim serve`` of a tape, and measures it the way
:func:`perpsim.sim.soak.run_soak` measures a replay, with the same pieces (a
:class:`~perpsim.sim.soak.SoakSampler`, :class:`~perpsim.sim.soak.TimerStats`, a
:class:`~perpsim.sim.soak.SoakSink` on the engine's outbox, :func:`~perpsim.sim.soak.assess`),
so the report and the criteria are the same, but for the heap (below). What differs:

* the clock is the wall clock: samples come every ``sample_every_s`` of wall time from a
  task on the session's event loop, and the last one is taken at the wall time, before
  the driver is asked to stop (so shutdown and the run outputs are not measured);
* each sample also holds the feed's counters (messages, reconnects, disconnects, gaps,
  malformed, the last lag), the recorder's unflushed rows, the rows the driver keeps
  for the run outputs, and the event loop's tasks and the process's threads; the tasks
  and threads are checked for boundedness like the queues (the origin's "stable
  threads");
* a session that ended in error (an engine exception, a dead feed task) fails the
  ``session errors`` check, a critical error; one that stopped before the wall time
  (SIGINT, SIGTERM) fails ``session stopped early``;
* a URL the feed never reaches within ``connect_timeout_s`` (or the wall time, if
  shorter) is bad input, :class:`~perpsim.core.errors.InputError`, not a failed soak.

**Memory.** ``max_memory_growth`` applies to the process RSS, as in the origin's 2-hour
soak; the Python heap is traced, sampled and its top growth reported, but checked only
with ``check_heap`` (``--check-heap``). The bounded memos (the exact-price caches) are
emptied before every sample, as in a replay soak (:mod:`perpsim.core.memo`). Two other
things grow in a live session, one bounded, which a wall-time-bounded soak cannot tell
from a leak, and one that is not bounded:

* the recorder's open segment, whose Arrow tables (one per flush, on numpy arrays) it
  holds to rewrite the file at each flush, until rotation (300 s or 20,000 rows);
* the run events and equity rows the live driver keeps until it writes the run outputs
  at shutdown (``driver.events``, ``engine.equity_rows``): unbounded, counted in the
  samples as ``kept``.

Measured on a canary session against ``perpsim serve`` at 1x, the heap grows about 3.5 KB/s
(~150 KB at the start), most of it the recorder's open segment, so a heap check fails
every soak of a minute or more.

The session's recording and run directory go to a temporary folder, removed at the end,
unless ``keep_dir`` is given (then ``keep_dir/recording`` and ``keep_dir/run``, which
``perpsim replay`` and ``perpsim drift`` can read).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from perpsim.core.config import RunConfig
from perpsim.core.errors import CheckFailed, InputError
from perpsim.core.events import RunEvent
from perpsim.core.strategy import Strategy
from perpsim.live.driver import LiveDriver, LiveOptions, LiveResult
from perpsim.live.feed import FeedConfig, check_url
from perpsim.sim.replay import build_config
from perpsim.sim.runs import check_unused
from perpsim.sim.soak import (
    QUEUES,
    SoakCriteria,
    SoakReport,
    SoakSample,
    SoakSampler,
    SoakSink,
    TimerStats,
    assess,
    check_keeps_cycling,
    failure_line,
    fmt_duration,
    instrument_clock,
)

__all__ = ["LIVE_QUEUES", "LiveSoakSample", "live_soak", "run_live_soak"]

_S: Final = 10**9
_THIS_FILE: Final = __file__
_STOP_REASON: Final = "soak wall time"
_LAZY_IMPORTS: Final = ("numpy.random", "numpy.ma")
"""Modules the live path imports on first use: the engine's seeded random models, and
pyarrow converting the recorder's numpy columns. They are imported before tracing starts:
otherwise, in a process that has not loaded them yet, about 1.5 MB of module data would
count as the session's heap and dilute its growth tenfold."""

LIVE_QUEUES: Final[dict[str, str]] = {**QUEUES, "tasks": "tasks", "threads": "threads"}
"""The replay soak's queues, plus the event loop's tasks and the process's threads."""


class LiveSoakSample(SoakSample, kw_only=True):  # type: ignore[misc, call-arg, unused-ignore]
    """A :class:`~perpsim.sim.soak.SoakSample` of a live session (``clock_ns`` is the wall clock).

    The feed counters are cumulative since the session started, as the feed keeps them.
    ``lag_ms`` is the last message's lag (its stamp minus the venue's time), ``kept`` the
    run events and equity rows the driver holds for the run outputs, ``recorder_pending``
    the rows recorded but not yet handed to the writer.
    """

    messages: int
    reconnects: int
    disconnects: int
    gaps: int
    malformed: int
    lag_ms: float | None
    recorder_pending: int
    kept: int
    tasks: int
    threads: int


class _Plan(msgspec.Struct, kw_only=True, frozen=True):
    """How one live soak runs: times in seconds of wall time from the session's start."""

    wall_s: float
    every_s: float
    warm_s: float
    connect_s: float
    trace_memory: bool
    check_heap: bool
    keep_dir: Path | None


def _count_outbox(engine: Any, sink: SoakSink) -> None:
    """Show every drain of the engine's outbox to ``sink`` (counts, errors, depth) as well.

    Replaces ``drain`` on this one outbox instance, as :func:`~perpsim.sim.soak.instrument_clock`
    does with the clock: the driver and core are unchanged, and still get every event.
    """
    outbox = engine.outbox
    drain = outbox.drain

    def counted() -> list[RunEvent]:
        out: list[RunEvent] = drain()
        sink.write_events(out)
        return out

    setattr(outbox, "drain", counted)  # noqa: B010 - an instance attribute, on purpose


def _histogram_summary(hist: Any) -> dict[str, Any]:
    """Count, mean and the p95 bucket bound (ms) of a prometheus-client histogram."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for metric in hist.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value
    p95 = next((le for le, cum in sorted(buckets) if count and cum >= 0.95 * count), None)
    return {
        "n": int(count),
        "mean_ms": total / count * 1e3 if count else None,
        "p95_le_ms": None if p95 is None or p95 == float("inf") else p95 * 1e3,
    }


def _fields(driver: LiveDriver, sink: SoakSink) -> dict[str, Any]:
    """A :class:`LiveSoakSample`'s own fields, read from the session as it is now."""
    eng, clock, rec, st = driver.engine, driver.clock, driver.recorder, driver.feed.stats
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop: the session is over
        tasks = 0
    return {
        "clock_ns": clock.stamp(),
        "loop": 0,
        "outbox_peak": sink.outbox_peak,
        "open_orders": len(eng.venue.open_orders()),
        "timers": len(clock.timers()),
        "events": sink.event_count,
        "errors": sink.counts.get("error", 0),
        "cycles": eng.cycles,
        "messages": st.messages,
        "reconnects": st.reconnects,
        "disconnects": st.disconnects,
        "gaps": st.gaps,
        "malformed": st.malformed,
        "lag_ms": None if st.last_lag_ns is None else round(st.last_lag_ns / 1e6, 3),
        "recorder_pending": 0 if rec is None else rec.pending_rows,
        "kept": len(driver.events) + len(eng.equity_rows),
        "tasks": tasks,
        "threads": threading.active_count(),
    }


class _LiveSoak:
    """One live soak: the session's driver, the soak's instruments on it, and what came of it.

    The instruments are attached before the session starts: the clock's timer callbacks
    are timed (the engine registers them at the first message) and the outbox's drains
    are counted.
    """

    def __init__(self, driver: LiveDriver, plan: _Plan, progress: Callable[[int, int], None] | None) -> None:
        self.driver = driver
        self.plan = plan
        self.progress = progress
        self.stats = TimerStats()
        self.sink = SoakSink()
        self.sampler = SoakSampler(skip_files=(_THIS_FILE,))
        instrument_clock(driver.clock, self.stats)
        _count_outbox(driver.engine, self.sink)
        self.result: LiveResult | None = None
        self.start_ns = 0
        self.ran_s = 0.0
        self.unreachable = False

    def sample(self, elapsed: float) -> None:
        self.sampler.take(LiveSoakSample, warm=elapsed >= self.plan.warm_s, **_fields(self.driver, self.sink))
        self.sink.outbox_peak = 0
        if self.progress is not None:
            self.progress(round(elapsed * _S), round(self.plan.wall_s * _S))

    async def run(self) -> None:
        """Run the session, sampling on its loop, and stop it at the wall time (or on no connection)."""
        driver, plan = self.driver, self.plan
        feed = driver.feed
        self.start_ns = driver.clock.stamp()
        t0 = time.monotonic()
        self.sampler.restart()
        run = asyncio.get_running_loop().create_task(driver.run(), name="perpsim-soak-session")
        next_at = plan.every_s
        try:
            while True:
                target = min(next_at, plan.wall_s)
                if feed.stats.connects == 0:
                    target = min(target, plan.connect_s)
                await asyncio.wait({run}, timeout=max(0.0, target - (time.monotonic() - t0)))
                if run.done():
                    break  # stopped early: a signal, or the feed task died
                elapsed = time.monotonic() - t0
                if feed.stats.connects == 0 and elapsed >= plan.connect_s:
                    self.unreachable = True
                    driver.request_stop("no connection")
                    break
                if elapsed >= next_at or elapsed >= plan.wall_s:
                    self.sample(elapsed)
                    while next_at <= elapsed:
                        next_at += plan.every_s
                if elapsed >= plan.wall_s:
                    driver.request_stop(_STOP_REASON)
                    break
            self.result = await run
        except BaseException:
            driver.request_stop("soak interrupted")
            if not run.done():
                await asyncio.wait({run}, timeout=driver.options.shutdown_timeout_s + 1.0)
            raise
        finally:
            self.ran_s = time.monotonic() - t0

    def report(self, cfg: RunConfig, criteria: SoakCriteria) -> SoakReport:
        """The report of a finished session (see :func:`run_live_soak`)."""
        driver, plan, sampler, sink, result = self.driver, self.plan, self.sampler, self.sink, self.result
        assert result is not None
        eng = driver.engine
        url = driver.feed_config.url
        stop = str(result.summary.get("stop_reason") or "")
        notes = [
            f"live soak of {url} for {fmt_duration(round(plan.wall_s * _S))} of wall time: the live driver "
            "(feed client, live clock, paper venue, recorder) sampled on its own event loop"
        ]
        if not sampler.samples:  # stopped before the first sample: measure what there is now
            notes.append("the session ended before the first sample; one sample was taken after it")
            sampler.take(LiveSoakSample, warm=False, **_fields(driver, sink))
        if stop != _STOP_REASON:
            notes.append(f"the session stopped early, after {self.ran_s:.1f}s: {stop or 'unknown reason'}")
        if plan.trace_memory:
            notes.append("cycle times were measured with tracemalloc on (a few times slower than a plain session)")
            if not plan.check_heap:
                notes.append(
                    "heap growth is reported, not checked (--check-heap to check it): live prices never repeat, "
                    "so the exact-price caches fill for hours, and the recorder holds its open segment for up to "
                    "300 s; RSS growth is checked, as in the origin's soak"
                )
        notes.append(
            "the live driver streams run events and equity rows to its run directory as they drain; "
            f"'kept' in the samples is what it held between drains "
            f"({len(driver.events) + len(eng.equity_rows):,} at the end)"
        )
        if result.status == "incomplete":
            notes.append(
                "the session's outputs were incomplete: the recorder did not finish within the shutdown timeout"
            )
        notes.append(
            f"recording and run directory kept in {plan.keep_dir}"
            if plan.keep_dir is not None
            else "the recording and run directory were written to a temporary folder and removed"
        )
        found = assess(
            sampler,
            start_ns=self.start_ns,
            warm_at_ns=round(plan.warm_s * _S),
            timers=self.stats,
            sink=sink,
            criteria=criteria,
            queues=LIVE_QUEUES,
            check_heap=plan.check_heap,
        )
        notes += found.notes
        failed, early = result.status == "error", stop != _STOP_REASON
        checks = [
            *found.checks,
            {"name": "session errors", "value": int(failed), "limit": 0, "ok": not failed},
            # a soak cut short (SIGINT, SIGTERM, a dead feed task) has not shown the wall time it was asked to
            {"name": "session stopped early", "value": int(early), "limit": 0, "ok": not early},
        ]
        live = {
            "url": url,
            "wall_s": plan.wall_s,
            "ran_s": round(self.ran_s, 3),
            "sample_every_s": plan.every_s,
            "status": result.status,
            "stop_reason": stop,
            "heap_checked": plan.check_heap,
            "feed": msgspec.to_builtins(driver.feed.stats),
            "recorder": result.summary.get("recorder"),
            "driver_cycle": _histogram_summary(driver.metrics.cycle),
            "record_dir": str(result.record_dir) if plan.keep_dir is not None else None,
            "run_dir": str(result.run_dir) if plan.keep_dir is not None else None,
            "orders": result.summary.get("orders"),
            "fills": result.summary.get("fills"),
            "final_equity": result.summary.get("final_equity"),
        }
        samples = sampler.samples
        return SoakReport(
            tape=url,
            profile=cfg.profile,
            strategy=str(cfg.strategy),
            duration_ns=round(plan.wall_s * _S),
            interval_s=cfg.interval_s,
            looped=False,
            loops=1,
            period_ns=0,
            tape_span_ns=0,
            notes=notes,
            clock_start_ns=self.start_ns,
            clock_end_ns=samples[-1].clock_ns,
            wall_s=round(self.ran_s, 3),
            rows=eng.rows,
            cycles=eng.cycles,
            events=sink.event_count,
            counts=dict(sorted(sink.counts.items())),
            digest=result.digest,
            timers_ms=found.timers_ms,
            memory=found.memory,
            top_growth=found.top_growth,
            queues=found.queues,
            errors=found.errors,
            samples=samples,
            checks=checks,
            ok=all(c["ok"] for c in checks),
            live=live,
        )


def run_live_soak(
    url: str,
    *,
    wall_s: float,
    interval_s: float | None = None,
    profile: str = "canary",
    strategy: type[Strategy] | str | None = None,
    params: dict[str, Any] | None = None,
    config: str | Path | None = None,
    seed: int | None = None,
    symbols: Sequence[str] | None = None,
    sample_every_s: float | None = None,
    warmup_s: float | None = None,
    criteria: SoakCriteria | None = None,
    trace_memory: bool = True,
    connect_timeout_s: float = 30.0,
    keep_dir: str | Path | None = None,
    check_heap: bool = False,
    handle_signals: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SoakReport:
    """Soak the live path against the feed at ``url`` for ``wall_s`` seconds; never raises on failure.

    Args:
        url: the feed, ``ws://HOST:PORT`` (``perpsim serve``) or ``wss://...``.
        wall_s: how long to run the session, in seconds of wall time.
        profile: the bot's profile (default the live canary); ``interval_s``,
            ``strategy``, ``params``, ``config``, ``seed`` and ``symbols`` as for a replay.
        sample_every_s: wall time between samples (default a twelfth of ``wall_s``, at
            least 1 s); the last sample is at ``wall_s``.
        warmup_s: memory growth is measured from the first sample at or after this
            (default ``sample_every_s``).
        trace_memory: measure the Python heap with ``tracemalloc`` (the session runs
            slower; without it only RSS is checked).
        connect_timeout_s: give up when the feed has not connected by then (or by
            ``wall_s``, if shorter).
        keep_dir: keep the session's recording and run directory here (default: a
            temporary folder, removed).
        check_heap: apply ``max_memory_growth`` to the Python heap too (see the module
            docstring for why it is off by default).
        handle_signals: SIGINT/SIGTERM end the session early (the report says so).
        progress: called as ``progress(wall_ns_done, wall_ns)`` at each sample.

    Returns:
        The report (``report.live`` holds the URL, the session's status and the feed's
        counters); ``report.ok`` says whether every criterion held.

    Raises:
        InputError: a bad URL, wall time, interval, profile or strategy, a ``keep_dir``
            that holds a session already, or a feed that never connected.
    """
    check_url(url, "--live")
    if not wall_s > 0:
        raise InputError(f"--wall must be positive, got {wall_s} s")
    every = sample_every_s if sample_every_s is not None else max(1.0, wall_s / 12)
    if not every > 0:
        raise InputError(f"--sample-every must be positive, got {every} s")
    if not connect_timeout_s > 0:
        raise InputError(f"--connect-timeout must be positive, got {connect_timeout_s} s")
    plan = _Plan(
        wall_s=wall_s,
        every_s=min(every, wall_s),
        warm_s=warmup_s if warmup_s is not None else min(every, wall_s),
        connect_s=min(connect_timeout_s, wall_s),
        trace_memory=trace_memory,
        check_heap=check_heap,
        keep_dir=Path(keep_dir) if keep_dir is not None else None,
    )
    if plan.keep_dir is not None:  # a second session there would extend the first's recording
        for sub in ("recording", "run"):
            check_unused(plan.keep_dir / sub, "--record")
    cfg = build_config(
        profile,
        config=config,
        strategy=strategy,
        params=params,
        seed=seed,
        symbols=symbols,
        interval_s=interval_s,
    )
    check_keeps_cycling(cfg)
    cls = strategy if isinstance(strategy, type) else None
    feed_symbols = tuple(cfg.symbols or ("BTC-PERP",))
    with tempfile.TemporaryDirectory(prefix="perpsim-soak-") as tmp:
        folder = plan.keep_dir or Path(tmp)
        options = LiveOptions(
            feed=FeedConfig(url=url, symbols=feed_symbols, seed=cfg.seed or 0),
            record_dir=folder / "recording",
            record_root=folder,
            run_dir=folder / "run",
            handle_signals=handle_signals,
        )
        for name in _LAZY_IMPORTS:
            importlib.import_module(name)
        gc.collect()
        started_tracing = False
        if trace_memory and not tracemalloc.is_tracing():
            tracemalloc.start(1)
            started_tracing = True
        try:
            soak = _LiveSoak(LiveDriver(cfg, options, strategy=cls), plan, progress)
            asyncio.run(soak.run())
        finally:
            if started_tracing:
                tracemalloc.stop()
        feed = soak.driver.feed
        if soak.unreachable or feed.stats.connects == 0:
            stop = soak.result.summary.get("stop_reason") if soak.result is not None else None
            raise InputError(
                f"--live {url}: the feed did not connect within {fmt_duration(round(plan.connect_s * _S))} "
                f"({feed.backoff.attempt} attempts; last: {feed.stats.last_error or stop or 'no reply'})"
            )
        return soak.report(cfg, criteria or SoakCriteria())


def live_soak(url: str, *, wall_s: float, **kwargs: Any) -> SoakReport:
    """:func:`run_live_soak`, raising when a criterion fails.

    Raises:
        InputError: as :func:`run_live_soak`.
        CheckFailed: a criterion failed; the message names each.
    """
    rep = run_live_soak(url, wall_s=wall_s, **kwargs)
    if not rep.ok:
        raise CheckFailed(f"soak --live: {failure_line(rep)}")
    return rep
