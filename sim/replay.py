"""The replay driver: a tape in, a run out (DESIGN.md §3, §6).

The driver owns the :class:`ReplayClock`. For each batch it finds, with one
binary search, the rows before the next timer deadline and hands that slice to
the engine, then fires the due timers and goes on; so a cycle due at T runs
after every row before T and before any row at or after T.

A warm live session's recording (metadata ``warm``) starts with the warm-up rows:
the driver runs them as the live driver did (:mod:`perpsim.sim.warm`, own timers,
outputs discarded), restores the recorded snapshot, realigns the timers to the
recorded instant and replays the rest, so its digest is the live run's.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from perpsim.core.batch import Batch, symbol_mask
from perpsim.core.clock import ReplayClock
from perpsim.core.config import RunConfig
from perpsim.core.engine import PSEUDO_SYMBOL, Engine
from perpsim.core.errors import ConfigError, MoneyOutOfRange, TapeError
from perpsim.core.events import TIMER
from perpsim.core.fastpath import BatchIndex, FastIndex
from perpsim.core.ledger import to_units
from perpsim.core.outbox import Digest
from perpsim.core.strategy import Strategy, make_strategy
from perpsim.core.timefmt import fmt_ns
from perpsim.sim.profiles import resolve_config
from perpsim.sim.runs import Drawdown, RunResult, RunWriter, check_unused, summarize, tape_entries
from perpsim.sim.warm import dispatch_own_timers, end_warm_up, warm_up
from perpsim.tapes.reader import Tape, complete, open_tape
from perpsim.tapes.schema import WarmStart

__all__ = ["ReplayDriver", "RunSpec", "build_config", "load_strategy", "replay", "replay_many"]

Progress = Callable[[int], None]


def load_strategy(spec: str | type[Strategy]) -> type[Strategy]:
    """A strategy class from ``module:Class`` (or the class itself)."""
    if isinstance(spec, type):
        return spec
    mod_name, _, cls_name = str(spec).partition(":")
    if not mod_name or not cls_name:
        raise ConfigError(f"strategy {spec!r}: expected module:Class")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"strategy {spec!r}: cannot import module {mod_name!r}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise ConfigError(f"strategy {spec!r}: {cls_name!r} is not a perpsim.Strategy subclass in {mod_name}")
    return cls


class ReplayDriver:
    """Feeds one tape through one engine; call :meth:`run` once."""

    def __init__(
        self,
        tape: Any,
        config: RunConfig,
        strategy: type[Strategy] | None = None,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        ignore_timer_rows: bool = False,
        engine: str = "fast",
        sink: RunWriter | None = None,
        keep: bool = True,
    ) -> None:
        if engine not in ("fast", "reference"):
            raise ConfigError(f"engine must be 'fast' or 'reference', got {engine!r}")
        _check_symbols(tape, config.symbols)
        self.tape = tape
        self.mode = engine
        self.ignore_timer_rows = ignore_timer_rows
        self.timer_mode = "own"
        self.config = config
        cls = strategy or load_strategy(config.strategy)
        self.strategy = make_strategy(cls, config.params)
        self.clock = ReplayClock()
        self.engine = Engine(
            clock=self.clock, strategy=self.strategy, config=config, instruments=dict(tape.instruments)
        )
        if config.venue.funding == "schedule":
            _load_funding_schedules(self.engine, config)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.digest = Digest()
        self.events: list[Any] = []
        self.equity: list[Any] = []
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self._allowed = config.symbols
        self.sink = sink
        self.keep = keep
        self.drawdown = Drawdown(self.engine.ledger.cash_start)
        # a warm recording's transition, redone only when the whole tape is replayed
        self.warm = _warm_meta(tape) if start_ns is None and end_ns is None else None
        self._warm_left = 0 if self.warm is None else self.warm.rows
        # Batch indexes shared with the other runs fed the same batches (replay_many), who clear it.
        self.shared: dict[tuple[int, tuple[int, ...]], BatchIndex] | None = None
        # Where few rows are dispatched one by one (the fast engine, no tick hooks, its own
        # timers, no warm start), the columns only dispatch reads are read when it does;
        # not while it dispatches rows of every batch (a resting order), when reading
        # them later would only move the reader threads' work onto this one.
        self.defer = (
            engine == "fast"
            and not self.engine.wants_ticks
            and self.warm is None
            and isinstance(tape, Tape)
            and tape.meta.timers is None
        )
        self.dispatched = False  # rows of the last batch fed went to the engine one by one

    def run(self, progress: Progress | None = None) -> None:
        kw: dict[str, Any] = {"defer": lambda: not self.dispatched} if self.defer else {}
        for batch in self.tape.batches(start_ns=self.start_ns, end_ns=self.end_ns, prefetch=4, **kw):
            self.feed(batch)
            if progress is not None:
                progress(len(batch))
        self.finish()

    def feed(self, batch: Batch) -> None:
        """Replay the tape's next batch (its warm-up rows as warm-up, its other symbols' rows not at all)."""
        eng, clock = self.engine, self.clock
        self.dispatched = False
        warm = self.warm
        if self._warm_left:
            k = min(self._warm_left, len(batch))
            self._warm_left -= k
            self._warm_up(batch.rows(slice(0, k)))
            if self._warm_left:
                return
            assert warm is not None
            self._go_live(warm)
            batch = batch.rows(slice(k, None))
        if self._allowed is not None:
            batch = _select_symbols(batch, self._allowed)
        n = len(batch)
        if n == 0:
            return
        col = batch.clock
        if self.first_ns is None:
            self.first_ns = int(col[0])
            if not eng.started:  # else it warmed up: the live part starts here
                clock.set_now(self.first_ns)
                eng.start()
                self._choose_timer_mode()
        if self.timer_mode == "tape":
            self._load(batch)
            self._run_scripted(batch)
        elif self.mode == "fast" and not eng.wants_ticks:
            self._run_fast(batch)
        else:
            self._load(batch)
            self._run_reference(batch, 0, n)
        self.last_ns = int(col[-1])
        self._drain()

    def finish(self) -> None:
        """End the run after the tape's last batch: stop the engine and take its last outputs."""
        self.engine.stop()
        self._drain()

    def _warm_up(self, batch: Batch) -> None:
        """Warm-up rows, exactly as :meth:`LiveDriver.warm_start` ran them (sim/warm.py)."""
        if self._allowed is not None:
            batch = _select_symbols(batch, self._allowed)
        warm_up(self.engine, self.clock, complete(batch))

    def _go_live(self, warm: WarmStart) -> None:
        """The live session's go-live: discard the warm-up's outputs, restore, realign, take timer rows."""
        eng = self.engine
        end_warm_up(eng, warm.snapshot)
        if eng.started:
            self.clock.realign(warm.realign_ns)
            self._choose_timer_mode()
        self.drawdown = Drawdown(to_units(eng.equity_exact()))  # as the live run's, from go-live

    def _load(self, batch: Batch, lo: int = 0, hi: int | None = None) -> None:
        """Give the engine rows ``lo:hi``, with the columns the reader left for later read."""
        self.dispatched = True
        self.engine.load(complete(batch), lo, hi)

    def _run_reference(self, batch: Batch, i: int, n: int) -> None:
        """Dispatch rows ``i:n`` (already loaded) one by one, firing timers between them."""
        dispatch_own_timers(self.engine, self.clock, batch, i, n)

    def _run_fast(self, batch: Batch) -> None:
        """Jump between the rows where something can happen (core/fastpath.py).

        Stops: due timers, rows other than trades, quotes, marks and book levels, and,
        while positions are open, the first price row of a position's symbol that
        leaves its share of the margin slack (``Margin.skip_band``). Between stops
        market state (books included) is synced in bulk and the stop row goes through
        the reference loop. While the venue holds a resting order, rows up to the next
        timer go through the reference loop; so does a batch dense with stops.
        """
        eng, clock, col, n = self.engine, self.clock, batch.clock, len(batch)
        rows = self._batch_index(batch)
        index = FastIndex(rows)
        special, si, ns = rows.special, 0, len(rows.special)
        if ns * 8 > n:
            self._load(batch)
            self._run_reference(batch, 0, n)
            return
        venue = eng.venue
        active = venue.active
        last = int(col[-1])
        i = 0
        while i < n:
            due = clock.next_due
            j = n if due > last else int(col.searchsorted(due))
            watched = [s for s, on in enumerate(active) if on] if any(active) else []
            if any(venue.has_orders(s) for s in watched):
                index.sync(eng, i)
                self._resync_margin(watched)
                if j > i:
                    self._load(batch, i, j)
                    i = eng.run(i, j)
                    index.dispatched(i)
                    clock.set_now(int(col[i - 1]))
                else:
                    clock.advance_to(int(col[i]))
                continue
            while si < ns and special[si] < i:
                si += 1
            p = min(j, special[si] if si < ns else n)
            if watched:
                index.sync(eng, i)
                p = self._band_stop(rows, watched, i, p)
            skipped = p > i
            if skipped:
                eng.rows += p - i
                i = p
                clock.set_now(int(col[i - 1]))
            if i >= n:
                break
            index.sync(eng, i)
            if skipped and watched:
                # The skipped rows moved other symbols' prices within their bands: their margin
                # contributions must be where the reference loop leaves them before this row's
                # liquidation check, which sums every position's (a cross-margin account).
                self._resync_margin(watched)
            if j <= i:  # a timer is due (j < i: a hook set it for the time already reached)
                clock.advance_to(int(col[i]))
            else:
                self._load(batch, i, i + 1)
                eng.run(i, i + 1)
                clock.set_now(int(col[i]))
                i += 1
                index.dispatched(i)
        index.sync(eng, n)

    def _batch_index(self, batch: Batch) -> BatchIndex:
        """The batch's index: from :attr:`shared` when another run fed this batch made it."""
        sids = self.engine.symbol_ids(batch)
        if self.shared is None:
            return BatchIndex(batch, sids)
        # An entry holds its batch, so no other batch can take its id while it is there.
        key = (id(batch), tuple(sids))
        found = self.shared.get(key)
        if found is None:
            found = self.shared[key] = BatchIndex(batch, sids)
        return found

    def _band_stop(self, rows: BatchIndex, watched: list[int], i: int, p: int) -> int:
        """The first row before ``p`` where a watched symbol's price leaves its skip band."""
        margin = self.engine.venue.margin
        self._resync_margin(watched)
        for sid in watched:
            lo, hi = margin.skip_band(sid, len(watched))
            p = rows.first_outside(sid, i, p, lo, hi)
        return p

    def _resync_margin(self, watched: list[int]) -> None:
        """Set each watched symbol's margin contribution where the reference loop leaves it:
        at its last price row (a mark, else a trade, else a quote's mid)."""
        m, margin = self.engine.market, self.engine.venue.margin
        for sid in watched:
            px = m.mark_px[sid]
            if px != px:
                px = m.last_px[sid]
            if px != px and m.bid[sid] == m.bid[sid]:
                px = (m.bid[sid] + m.ask[sid]) / 2
            if px == px:
                margin.resync(sid, px)

    def _choose_timer_mode(self) -> None:
        """Take timer firings from the tape when it recorded the same timer set (DESIGN.md §3)."""
        recorded = getattr(self.tape.meta, "timers", None)
        if recorded is None:
            return
        mine = sorted((h.name, h.interval) for h in self.clock.timers())
        theirs = sorted((t.name, t.interval_ns) for t in recorded)
        if self.ignore_timer_rows:
            self.engine.warnings.append("timer rows ignored: the replay schedules its own timers")
        elif mine == theirs:
            self.clock.script()
            self.timer_mode = "tape"
        else:
            self.engine.warnings.append(
                "the tape's recorded timer set differs from this run's; the replay schedules its own timers"
            )

    def _run_scripted(self, batch: Batch) -> None:
        eng, clock = self.engine, self.clock
        col, n = batch.clock, len(batch)
        stops = np.flatnonzero(batch.kind == TIMER).tolist()
        i = 0
        for j in [*stops, n]:
            while i < j:
                i = eng.run(i, j)
                clock.set_now(int(col[i - 1]))
            if j < n:
                clock.fire_named(batch.text[j] or "", int(batch.next_ts[j]))
                clock.set_now(int(col[j]))
                eng.rows += 1
                i = j + 1
        self.last_ns = int(col[-1])
        self._drain()

    def _drain(self) -> None:
        """Take the engine's outputs: digest them, stream them to the sink, keep them if asked."""
        eng = self.engine
        out = eng.outbox.drain()
        rows, eng.equity_rows = eng.equity_rows, []
        self.drawdown.update(rows)
        if out:
            self.digest.update(out)
        if self.sink is not None:
            self.sink.write_events(out)
            self.sink.write_equity(rows)
        if self.keep:
            self.events.extend(out)
            self.equity.extend(rows)


def _load_funding_schedules(engine: Engine, config: RunConfig) -> None:
    """Read ``venue.funding_schedule`` CSVs (symbol = path) into the venue (core does no I/O)."""
    from perpsim.tapes.formats.funding_csv import funding_schedule

    for symbol, path in config.venue.funding_schedule.items():
        ts, rates = funding_schedule(path, utc_offset_h=config.venue.funding_utc_offset_h, symbol=symbol)
        engine.venue.funding.add_schedule(symbol, ts.tolist(), rates.tolist())


def _warm_meta(tape: Any) -> WarmStart | None:
    """The tape's warm-start metadata (a warm live session's recording has it), or None."""
    return getattr(getattr(tape, "meta", None), "warm", None)


def _check_symbols(tape: Any, wanted: Sequence[str] | None) -> None:
    """Refuse symbols the tape never names: such a run would replay nothing and look fine."""
    have = getattr(tape, "symbols", None) if wanted else None
    if have is None:
        return
    missing = [s for s in wanted or () if s not in have]
    if missing:
        raise ConfigError(f"symbols: {', '.join(missing)} not on the tape (it has {', '.join(have) or 'none'})")


def _select_symbols(batch: Batch, allowed: Sequence[str]) -> Batch:
    # Rows about no instrument (timer firings, feed status) are kept: a recorded timer row drives the replay.
    return batch.rows(symbol_mask(batch, {*allowed, PSEUDO_SYMBOL}))


def build_config(
    profile: str = "backtest",
    *,
    config: str | Path | None = None,
    strategy: type[Strategy] | str | None = None,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    symbols: Sequence[str] | None = None,
    interval_s: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """The run's config: the profile, then the user's file, then these arguments (checked once).

    Raises:
        ConfigError: ``config`` is not a file path (a dict of settings goes in ``overrides``).
    """
    if config is not None and not isinstance(config, str | Path):
        raise ConfigError(
            f"config= takes the path of a TOML file, not {type(config).__name__}; pass settings as overrides="
        )
    over: dict[str, Any] = dict(overrides or {})
    if params:
        over["params"] = params
    if seed is not None:
        over["seed"] = seed
    if symbols:
        over["symbols"] = list(symbols)
    if interval_s is not None:
        over["interval_s"] = interval_s
    if isinstance(strategy, str):
        over["strategy"] = strategy
    elif strategy is not None:
        over["strategy"] = f"{strategy.__module__}:{strategy.__qualname__}"
    return resolve_config(profile, config_file=config, overrides=over)


class RunSpec(msgspec.Struct, kw_only=True, frozen=True):
    """One run of :func:`replay_many`: its configuration and outputs, as :func:`replay` takes them."""

    strategy: Any = None  # a Strategy subclass or "module:Class"
    params: dict[str, Any] | None = None
    profile: str = "backtest"
    config: str | Path | None = None
    seed: int | None = None
    symbols: Sequence[str] | None = None
    interval_s: float | None = None
    overrides: dict[str, Any] | None = None
    out: str | Path | None = None
    keep_events: bool | None = None
    ignore_timer_rows: bool = False


class _Run:
    """A run in progress inside :func:`replay_many`."""

    def __init__(self, index: int, driver: ReplayDriver, writer: RunWriter | None) -> None:
        self.index = index
        self.driver = driver
        self.writer = writer

    def result(self, wall: float) -> RunResult:
        driver, writer = self.driver, self.writer
        summary = summarize(driver, wall)
        if writer is not None:
            writer.finish(driver, wall, status="complete")
        return RunResult(
            digest=driver.digest.hexdigest(),
            summary=summary,
            run_events=driver.events if driver.keep else None,
            equity_rows=driver.equity if driver.keep else None,
            config=msgspec.to_builtins(driver.config),
            warnings=list(driver.engine.warnings),
            run_dir=None if writer is None else writer.path,
        )


def replay_many(
    tapes: str | Path | Sequence[str | Path] | Any,
    runs: Sequence[RunSpec],
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    engine: str = "fast",
    progress: Progress | None = None,
) -> list[RunResult | Exception]:
    """Replay ``tapes`` once for several runs: each batch is decoded once and fed to every run.

    Decoding and checking a tape is most of a fast replay's CPU (benchmarks/README.md), and
    a sweep's runs of one tape differ only in their configuration. Each run sees the same
    batches, in the same order, as when it replays alone, so its digest is the same.

    Returns one entry per run, in order: its :class:`RunResult`, or the exception that
    stopped it. A run's own error (a bad configuration, a strategy error) stops it alone;
    an error reading the tape (a ``TapeError``) stops every run still going. A failed
    run's directory is removed. Each run's ``wall_s`` is the whole call's.

    Raises:
        ConfigError: an unknown ``engine``.
    """
    if engine not in ("fast", "reference"):
        raise ConfigError(f"engine must be 'fast' or 'reference', got {engine!r}")
    out: list[RunResult | Exception | None] = [None] * len(runs)
    configs: list[tuple[int, RunConfig]] = []
    for k, spec in enumerate(runs):
        try:
            configs.append((k, _config_of(spec)))
        except Exception as exc:
            out[k] = exc
    try:
        tape = tapes if hasattr(tapes, "batches") else open_tape(tapes)
    except Exception as exc:
        return [exc if r is None else r for r in out]
    live: list[_Run] = []
    entries: list[dict[str, str]] | None = None  # the tape's manifest entries, hashed once
    for k, cfg in configs:
        spec = runs[k]
        try:
            if spec.out is not None:
                check_unused(Path(spec.out), "out")
            cls = spec.strategy if isinstance(spec.strategy, type) else None
            driver = ReplayDriver(
                tape,
                cfg,
                cls,
                start_ns=start_ns,
                end_ns=end_ns,
                ignore_timer_rows=spec.ignore_timer_rows,
                engine=engine,
                keep=spec.keep_events if spec.keep_events is not None else spec.out is None,
            )
            writer = None
            if spec.out is not None:
                entries = tape_entries(tape) if entries is None else entries
                writer = driver.sink = RunWriter(spec.out, cfg, tape, tapes=entries)
        except Exception as exc:
            out[k] = exc
            continue
        live.append(_Run(k, driver, writer))

    def fail(run: _Run, exc: Exception) -> None:
        if run.writer is not None:
            run.writer.abort()
        if isinstance(exc, MoneyOutOfRange):  # raised deep in the books: say when
            exc, cause = MoneyOutOfRange(f"at {fmt_ns(run.driver.clock.now_ns())}: {exc}"), exc
            exc.__cause__ = cause
        out[run.index] = exc
        live.remove(run)

    shared: dict[tuple[int, tuple[int, ...]], BatchIndex] = {}
    for run in live:
        run.driver.shared = shared
    t0 = time.perf_counter()
    try:
        if live:
            kw: dict[str, Any] = (
                {"defer": lambda: not any(r.driver.dispatched for r in live)}
                if all(r.driver.defer for r in live)
                else {}
            )
            for batch in tape.batches(start_ns=start_ns, end_ns=end_ns, prefetch=4, **kw):
                shared.clear()
                for run in list(live):
                    try:
                        run.driver.feed(batch)
                    except TapeError:  # reading columns a run needed first: the tape's, not the run's
                        raise
                    except Exception as exc:
                        fail(run, exc)
                if not live:
                    break
                if progress is not None:
                    progress(len(batch))
        for run in list(live):
            try:
                run.driver.finish()
            except Exception as exc:
                fail(run, exc)
    except KeyboardInterrupt:
        for run in live:
            if run.writer is not None:
                run.writer.finish(run.driver, time.perf_counter() - t0, status="incomplete")
        raise
    except Exception as exc:  # reading the tape
        for run in list(live):
            fail(run, exc)
    except BaseException:
        for run in live:
            if run.writer is not None:
                run.writer.abort()
        raise
    wall = time.perf_counter() - t0
    for run in list(live):
        try:
            out[run.index] = run.result(wall)
        except Exception as exc:  # a summary the run's state cannot give (money out of range)
            fail(run, exc)
    results = [r for r in out if r is not None]
    assert len(results) == len(runs)  # every run ended one way or the other
    return results


def _config_of(spec: RunSpec) -> RunConfig:
    return build_config(
        spec.profile,
        config=spec.config,
        strategy=spec.strategy,
        params=spec.params,
        seed=spec.seed,
        symbols=spec.symbols,
        interval_s=spec.interval_s,
        overrides=spec.overrides,
    )


def replay(
    tapes: str | Path | Sequence[str | Path] | Any,
    *,
    strategy: type[Strategy] | str | None = None,
    params: dict[str, Any] | None = None,
    profile: str = "backtest",
    config: str | Path | None = None,
    seed: int | None = None,
    symbols: Sequence[str] | None = None,
    interval_s: float | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    ignore_timer_rows: bool = False,
    engine: str = "fast",
    keep_events: bool | None = None,
) -> RunResult:
    """Replay ``tapes`` with a strategy under a profile; returns digest, summary and events.

    With ``out`` the run directory is written there (``manifest.json``,
    ``events.parquet``, ``equity.parquet``, ``summary.json``); it must be a new or empty
    folder, as the CLI's ``--out`` must, so a run never mixes its files with another's.

    Raises:
        InputError: ``out`` holds files already.
    """
    spec = RunSpec(
        strategy=strategy,
        params=params,
        profile=profile,
        config=config,
        seed=seed,
        symbols=symbols,
        interval_s=interval_s,
        overrides=overrides,
        out=out,
        keep_events=keep_events,
        ignore_timer_rows=ignore_timer_rows,
    )
    [result] = replay_many(tapes, [spec], start_ns=start_ns, end_ns=end_ns, engine=engine, progress=progress)
    if isinstance(result, Exception):
        raise result
    return result
