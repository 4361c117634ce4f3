"""Soak: run the bot for days of clock time in seconds of wall time, and look for leaks.

The origin soaked the PerpsBot for two hours of wall time (memory growth under
20%, no critical errors, stable threads). Because the engine only knows the clock
it is given (DESIGN.md §1, §3), perpsim soaks by **replay**: the tape is looped,
each loop's timestamps shifted by the tape's span (rounded up to the cycle
interval, so cycles keep their phase), so the clock runs on for as long as asked
and the bot meets ever-new times. Two artifacts of looping, reported with every
soak: at each seam the price jumps from the tape's last value back to its first,
which the mark window sees as one large move; and funding rows at both ends of the
tape settle twice around a seam.

While it runs, at every ``sample_every`` of clock time, the soak records:

* memory: the process RSS, and the Python heap the run holds (``tracemalloc``,
  measured after a ``gc.collect()`` with the engine's current batch released, so
  that equal states give equal numbers), with the lines that grew most;
* open objects (``gc``), and queue depths: the engine outbox between drains,
  open orders, live timers;
* the wall time of every timer callback (the cycle above all), measured outside
  core by wrapping the callbacks the engine registers with its clock;
* errors (``error`` run events) over clock time.

Memory growth is measured from a warm point — the end of the first loop, when the
tape loops, else ``warmup`` — to the end. The bounded memos (such as the exact-price
LRU) are emptied before every sample, so a soak shorter than its tape, which meets new
prices throughout, does not count their filling as growth. The criteria default to the
origin's soak; failing any makes :func:`soak` raise :class:`~perpsim.core.errors.CheckFailed`.

The replay driver streams the soak's events into the digest and a counting
:class:`SoakSink` instead of keeping them, as a long-running driver should (the
live driver still keeps them; see :mod:`perpsim.live.soak`); so what grows is what
the bot itself keeps.

The live soak (:mod:`perpsim.live.soak`, ``perpsim soak --live URL``) samples a
live session over wall time with the same pieces: :class:`SoakSampler` takes the
samples, :class:`TimerStats` and :func:`instrument_clock` time the callbacks,
:class:`SoakSink` counts the run events, and :func:`assess` applies the same
:class:`SoakCriteria` and fills the same :class:`SoakReport`.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import time
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import numpy as np

from perpsim.core.batch import NULL_SEQ, Batch
from perpsim.core.clock import TimerHandle, align_up
from perpsim.core.errors import CheckFailed, InputError
from perpsim.core.events import RunEvent
from perpsim.core.memo import clear_memos
from perpsim.core.strategy import Strategy
from perpsim.core.timefmt import fmt_ns
from perpsim.sim.replay import ReplayDriver, build_config
from perpsim.tapes.reader import open_tape

__all__ = [
    "QUEUES",
    "LoopedTape",
    "SoakCriteria",
    "SoakFindings",
    "SoakReport",
    "SoakSample",
    "SoakSampler",
    "SoakSink",
    "TimerStats",
    "assess",
    "check_keeps_cycling",
    "failure_line",
    "fmt_duration",
    "instrument_clock",
    "run_soak",
    "soak",
]

_S: Final = 10**9
_H: Final = 3600 * _S
_CHUNK_ROWS: Final = 8192
_NUMPY_DOMAIN: Final = 389047  # numpy's tracemalloc domain: array data, not Python objects
_THIS_FILE: Final = __file__


def fmt_duration(ns: int) -> str:
    """``49h00m``, ``6h01m``, ``45s``: clock spans for people."""
    s = ns / _S
    if s < 120:
        return f"{s:.3g}s"
    m = round(s / 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m"


class LoopedTape:
    """A tape repeated end to end until ``duration_ns`` of clock time has passed.

    Loop ``k`` has every time column (clock, ``ts``, ``recv_ts``, a set
    ``next_ts``) shifted by ``k * period_ns`` and ``seq`` shifted past the previous
    loop's, so the clock and the sequence keep increasing. Rows come in chunks of
    at most 8,192, split at multiples of ``boundary_ns`` after the start so a
    sampler sees exactly those clock times (see ``next_clock``).

    The rows needed are read once, before the soak measures anything.
    """

    def __init__(self, tape: Any, duration_ns: int, interval_ns: int, boundary_ns: int | None = None) -> None:
        self.meta = tape.meta
        self.instruments = tape.instruments
        self.files = tape.files
        self._tape = tape
        src = [b for b in tape.batches() if len(b)]
        if not src:
            raise InputError(f"{_tape_name(tape)}: the tape has no rows to soak")
        self.start_ns = int(src[0].clock[0])
        self.end_ns = self.start_ns + duration_ns
        last = int(src[-1].clock[-1])
        self.span_ns = last - self.start_ns
        self.period_ns = align_up(self.span_ns + 1, interval_ns)
        kept: list[Batch] = []
        for b in src:
            if int(b.clock[0]) >= self.end_ns:
                break
            kept.append(b)
        self._src = kept
        seqs = [b.seq[b.seq != NULL_SEQ] for b in kept]
        all_seq = np.concatenate(seqs) if seqs else np.empty(0, np.int64)
        self._seq_step = int(all_seq.max() - all_seq.min() + 1) if all_seq.size else 0
        self.loops = max(1, -(-duration_ns // self.period_ns)) if self.span_ns < duration_ns else 1
        self.looped = self.loops > 1
        self.rows_per_loop = sum(len(b) for b in kept)
        self.boundary_ns = boundary_ns
        self.next_clock: int | None = None
        self.loop = 0
        self.num_rows = self.rows_per_loop * self.loops

    @property
    def symbols(self) -> tuple[str, ...] | None:
        """The source tape's symbols (None if it cannot say), for the replay's ``--symbols`` check."""
        return getattr(self._tape, "symbols", None)

    def batches(self, **_: object) -> Iterator[Batch]:
        """Chunks of the looped tape in clock order (window arguments are ignored).

        Before each chunk is handed out, ``next_clock`` is set to the clock value of
        the row after it (None at the end), so a sampler called between chunks knows
        whether a sample time lies between them.
        """
        segs = [(k, b) for k in range(self.loops) for b in self._src]
        firsts = [int(b.clock[0]) + k * self.period_ns for k, b in segs]
        for s, (k, b) in enumerate(segs):
            self.loop = k
            shift = k * self.period_ns
            clock = b.clock + shift if shift else b.clock
            n = len(b)
            stop = int(np.searchsorted(clock, self.end_ns, "left"))
            i = 0
            while i < stop:
                j = min(stop, i + _CHUNK_ROWS)
                if self.boundary_ns:
                    nb = self.start_ns + ((int(clock[i]) - self.start_ns) // self.boundary_ns + 1) * self.boundary_ns
                    j = max(i + 1, min(j, int(np.searchsorted(clock, nb, "left"))))
                if j < stop:
                    self.next_clock = int(clock[j])
                elif j < n or s + 1 == len(segs) or firsts[s + 1] >= self.end_ns:
                    self.next_clock = None
                else:
                    self.next_clock = firsts[s + 1]
                yield self._shifted(b, i, j, shift, k)
                i = j
            if stop < n:
                break
        self.next_clock = None

    def _shifted(self, b: Batch, i: int, j: int, shift: int, k: int) -> Batch:
        # Sliced here, not by Batch.rows: the heap measure leaves out this module's
        # allocations, the soak's own bookkeeping.
        b.require_columns()
        fields: dict[str, Any] = {}
        for name in Batch.__struct_fields__:
            v = getattr(b, name)
            if name in ("symbols", "pending"):
                fields[name] = v
                continue
            v = v[i:j]
            if shift and name in ("clock", "ts", "recv_ts"):
                v = v + shift
            elif shift and name == "next_ts":
                v = np.where(v != 0, v + shift, 0)
            elif k and name == "seq" and self._seq_step:
                v = np.where(v != NULL_SEQ, v + k * self._seq_step, NULL_SEQ)
            fields[name] = v
        return Batch(**fields)


def _tape_name(tape: Any) -> str:
    files = list(getattr(tape, "files", []) or [])
    return str(files[0]) if files else "<memory tape>"


class SoakSink:
    """Where the replay driver streams a soak's events: counted and dropped, never kept.

    The driver digests every event itself; this sink counts them by kind, keeps
    error reasons and the first few errors, the last equity row, and the outbox
    depth (events taken per drain) since the last sample.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.error_reasons: dict[str, int] = {}
        self.first_errors: list[RunEvent] = []
        self.outbox_peak = 0
        self.event_count = 0
        self.last_equity: Any = None

    def write_events(self, events: list[RunEvent]) -> None:
        if not events:
            return
        self.event_count += len(events)
        self.outbox_peak = max(self.outbox_peak, len(events))
        counts = self.counts
        for ev in events:
            counts[ev.kind] = counts.get(ev.kind, 0) + 1
            if ev.kind == "error":
                reason = ev.reason or "?"
                self.error_reasons[reason] = self.error_reasons.get(reason, 0) + 1
                if len(self.first_errors) < 5:
                    self.first_errors.append(ev)

    def write_equity(self, rows: list[Any]) -> None:
        if rows:
            self.last_equity = rows[-1]


class TimerStats:
    """Wall time of timer callbacks by timer name (``strategy:*`` pooled), in ms.

    Filled by the wrappers :func:`instrument_clock` puts around the callbacks; read
    by the report as percentiles. Stored in flat ``array('d')`` so that timing a
    callback allocates no Python objects the heap measurement would see.
    """

    def __init__(self) -> None:
        self.ms: dict[str, array[float]] = {}

    def wrap(self, name: str, cb: Callable[[int], None]) -> Callable[[int], None]:
        """``cb`` timed into this table under ``name``; call the result as you would ``cb``."""
        key = "strategy" if name.startswith("strategy:") else name
        store = self.ms.setdefault(key, array("d"))
        clock = time.perf_counter_ns

        def timed(now: int) -> None:
            t0 = clock()
            try:
                cb(now)
            finally:
                store.append((clock() - t0) / 1e6)

        return timed


def instrument_clock(clock: Any, stats: TimerStats) -> None:
    """Time every timer callback the engine and the bot register, without touching core.

    The clock's ``every``/``call_at`` are replaced on this one instance by versions
    that wrap the callback; names, priorities and deadlines are unchanged. Call it
    before the engine starts (replay: on the driver's clock; live: before ``run``),
    since only timers registered afterwards are timed.
    """
    every, call_at = clock.every, clock.call_at

    def timed_every(interval_ns: int, name: str, cb: Callable[[int], None], priority: int = 100) -> TimerHandle:
        h: TimerHandle = every(interval_ns, name, stats.wrap(name, cb), priority)
        return h

    def timed_call_at(ns: int, name: str, cb: Callable[[int], None], priority: int = 100) -> TimerHandle:
        h: TimerHandle = call_at(ns, name, stats.wrap(name, cb), priority)
        return h

    setattr(clock, "every", timed_every)  # noqa: B010 - an instance attribute, on purpose
    setattr(clock, "call_at", timed_call_at)  # noqa: B010


def _rss_bytes() -> int:
    """Current RSS from /proc (Linux); else the peak RSS from ``resource``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)


_TRACEMALLOC_FILE: Final = tracemalloc.__file__

_PerLine = dict[tuple[str, int], tuple[int, int]]


def _heap(snapshot: tracemalloc.Snapshot, skip: tuple[str, ...]) -> tuple[int, _PerLine]:
    """Total bytes and per-line (size, count) of the run's Python heap in a snapshot.

    Left out: numpy's array data (the batches in flight, not state) and what the
    ``skip`` files (the soak's own modules, ``tracemalloc``) allocate for the soak's
    bookkeeping. The raw trace tuples are read directly when available: the public
    ``filter_traces`` and ``statistics`` cost a third of a second per sample.
    """
    raw = getattr(snapshot.traces, "_traces", None)
    per_line: _PerLine = {}
    total = 0
    if isinstance(raw, list) and (not raw or (isinstance(raw[0], tuple) and len(raw[0]) >= 3)):
        get = per_line.get
        for tr in raw:
            if tr[0] == _NUMPY_DOMAIN or not tr[2]:
                continue
            key = tr[2][0]
            if key[0] in skip:
                continue
            size = tr[1]
            total += size
            s, c = get(key, (0, 0))
            per_line[key] = (s + size, c + 1)
        return total, per_line
    filters: list[tracemalloc.DomainFilter | tracemalloc.Filter] = [tracemalloc.DomainFilter(False, _NUMPY_DOMAIN)]
    filters += [tracemalloc.Filter(False, f) for f in skip]
    snap = snapshot.filter_traces(filters)
    for st in snap.statistics("lineno"):
        fr = st.traceback[0]
        per_line[(fr.filename, fr.lineno)] = (st.size, st.count)
        total += st.size
    return total, per_line


class SoakSample(msgspec.Struct, kw_only=True):
    """One sample; memory in bytes, times in seconds unless named ``_ms``.

    ``clock_ns`` is the run's clock: replayed time in a replay soak, the wall clock
    in a live soak (whose samples are :class:`perpsim.live.soak.LiveSoakSample`,
    this plus the feed's counters).
    """

    clock_ns: int
    loop: int
    wall_s: float
    cpu_s: float
    rss: int
    heap: int | None
    objects: int
    gc_collections: list[int]
    outbox_peak: int
    open_orders: int
    timers: int
    events: int
    errors: int
    cycles: int


_Sample = TypeVar("_Sample", bound=SoakSample)


class SoakSampler:
    """Takes one soak's samples and keeps the heap snapshots its report compares.

    Shared by the replay soak and the live soak (:mod:`perpsim.live.soak`) so both
    measure the same things the same way. Each :meth:`take` collects garbage, then
    measures the traced Python heap (when ``tracemalloc`` is on), the RSS, the open
    objects and the gc counters. Of the heap snapshots only the first, the warm one
    and the newest are kept: growth is the newest minus the warm.

    Args:
        skip_files: more source files whose allocations are the soak's bookkeeping
            (this module and ``tracemalloc`` always are).
    """

    def __init__(self, *, skip_files: Sequence[str] = ()) -> None:
        self.samples: list[SoakSample] = []
        self.snaps: dict[int, _PerLine] = {}
        self.warm: int | None = None
        self._skip = (_THIS_FILE, _TRACEMALLOC_FILE, *skip_files)
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def restart(self) -> None:
        """Count ``wall_s`` and ``cpu_s`` from now (call when the run itself starts)."""
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def take(
        self, cls: type[_Sample], *, warm: bool, release: Callable[[], None] | None = None, **fields: Any
    ) -> _Sample:
        """Measure and append one sample of type ``cls``; the caller gives the run's own fields.

        Args:
            cls: :class:`SoakSample` or a subclass with more fields.
            warm: the run is past its warm-up; the first such sample's heap snapshot is
                the one growth is measured from.
            release: called after ``gc.collect()`` and before the heap snapshot, to drop
                transient references (the replay releases the engine's current batch,
                so that equal states give equal numbers).
            fields: every field of ``cls`` except the measured ones (``wall_s``,
                ``cpu_s``, ``rss``, ``heap``, ``objects``, ``gc_collections``).

        Memos are emptied first (:func:`~perpsim.core.memo.clear_memos`): they are bounded
        and change no result, but fill with every new price for as long as prices are new.

        Returns:
            The sample, also appended to :attr:`samples`.
        """
        clear_memos()
        gc.collect()
        heap: int | None = None
        if tracemalloc.is_tracing():
            if release is not None:
                release()
            heap, per_line = _heap(tracemalloc.take_snapshot(), self._skip)
            i = len(self.samples)
            if self.warm is None and warm:
                self.warm = i
            # keep the first, the warm and the newest snapshot; drop the rest
            for k in [k for k in self.snaps if k not in (0, self.warm)]:
                del self.snaps[k]
            self.snaps[i] = per_line
        sample = cls(
            wall_s=round(time.perf_counter() - self.t0, 6),
            cpu_s=round(time.process_time() - self.c0, 6),
            rss=_rss_bytes(),
            heap=heap,
            objects=len(gc.get_objects()),
            gc_collections=[s["collections"] for s in gc.get_stats()],
            **fields,
        )
        self.samples.append(sample)
        return sample


class SoakCriteria(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Pass/fail limits; the defaults are the origin's 2-hour soak criteria.

    ``max_memory_growth`` applies to the run's Python heap (when traced) and to
    the process RSS; a queue is unbounded when its peak in the second half of the
    soak exceeds ``max(2 x, +16)`` its peak in the first half.
    """

    max_memory_growth: float = 0.2
    max_errors: int = 0
    max_cycle_p95_ms: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.max_memory_growth < math.inf:
            raise InputError(f"--max-memory-growth must be a fraction >= 0, got {self.max_memory_growth}")
        if self.max_errors < 0:
            raise InputError(f"--max-errors must be >= 0, got {self.max_errors}")
        p95 = self.max_cycle_p95_ms
        if p95 is not None and not 0 < p95 < math.inf:
            raise InputError(f"--max-cycle-p95 must be positive, got {p95} ms")


class SoakReport(msgspec.Struct, kw_only=True):
    """What a soak measured and decided; ``to_dict()`` is the ``--json`` output.

    A live soak (:func:`perpsim.live.soak.run_live_soak`) fills the same report:
    ``tape`` is the feed URL, ``duration_ns`` the wall time asked for, the clock the
    wall clock, and ``live`` holds what only a live session has (the feed's
    counters, the session's status and stop reason); it is None for a replay.
    """

    tape: str
    profile: str
    strategy: str
    duration_ns: int
    interval_s: float
    looped: bool
    loops: int
    period_ns: int
    tape_span_ns: int
    notes: list[str]
    clock_start_ns: int
    clock_end_ns: int
    wall_s: float
    rows: int
    cycles: int
    events: int
    counts: dict[str, int]
    digest: str
    timers_ms: dict[str, dict[str, Any]]
    memory: dict[str, Any]
    top_growth: list[dict[str, Any]]
    queues: dict[str, dict[str, Any]]
    errors: dict[str, Any]
    samples: list[SoakSample]
    checks: list[dict[str, Any]]
    ok: bool
    live: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]


def _pct(values: Sequence[float], q: float) -> float | None:
    if not len(values):
        return None
    return float(np.percentile(np.frombuffer(values, dtype="d") if isinstance(values, array) else values, q))


def _timer_stats(stats: TimerStats) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(stats.ms, key=lambda n: (n != "cycle", n)):
        v = stats.ms[name]
        out[name] = {
            "n": len(v),
            "p50": _pct(v, 50),
            "p95": _pct(v, 95),
            "p99": _pct(v, 99),
            "max": max(v) if len(v) else None,
        }
    return out


def _queue_check(samples: Sequence[SoakSample], field: str) -> dict[str, Any]:
    vals = [getattr(s, field) for s in samples]
    half = max(1, len(vals) // 2)
    first, second = max(vals[:half]), max(vals[half:], default=0)
    limit = max(2 * first, first + 16)
    return {"first_half_peak": first, "second_half_peak": second, "limit": limit, "bounded": second <= limit}


QUEUES: Final[dict[str, str]] = {"outbox": "outbox_peak", "open_orders": "open_orders", "timers": "timers"}
"""The queues every soak checks for boundedness: report name → :class:`SoakSample` field."""


class SoakFindings(msgspec.Struct, kw_only=True):
    """The measured part of a :class:`SoakReport`, the same for a replay and a live soak."""

    memory: dict[str, Any]
    top_growth: list[dict[str, Any]]
    queues: dict[str, dict[str, Any]]
    timers_ms: dict[str, dict[str, Any]]
    errors: dict[str, Any]
    checks: list[dict[str, Any]]
    notes: list[str]


def assess(
    sampler: SoakSampler,
    *,
    start_ns: int,
    warm_at_ns: int,
    timers: TimerStats,
    sink: SoakSink,
    criteria: SoakCriteria,
    queues: dict[str, str] | None = None,
    check_heap: bool = True,
) -> SoakFindings:
    """Turn a finished soak's samples into the report's findings and apply the criteria.

    Memory growth is measured from the first sample at least ``warm_at_ns`` after
    ``start_ns`` (and not the last) to the last sample; a soak too short for that
    measures from the first sample and says so in ``notes``.

    Args:
        sampler: the soak's samples (at least one) and heap snapshots.
        start_ns: the run's clock at its start (the samples' ``clock_ns`` scale).
        warm_at_ns: clock time after ``start_ns`` that counts as warm.
        timers: the timer callbacks' wall times.
        sink: the run events counted during the soak.
        criteria: the limits.
        queues: report name → sample field of each queue to check (default
            :data:`QUEUES`).
        check_heap: apply ``max_memory_growth`` to the heap as well as to the RSS;
            when False the heap growth is measured and reported only (the live soak's
            default: live prices never repeat, so bounded caches fill for hours).

    Returns:
        Memory, top growth, queues, timer percentiles, errors, the checks (in the
        report's order) and notes about how they were measured.
    """
    samples, snaps = sampler.samples, sampler.snaps
    notes: list[str] = []
    warm_idx = next(
        (i for i, s in enumerate(samples) if s.clock_ns - start_ns >= warm_at_ns and i < len(samples) - 1), None
    )
    if warm_idx is None:
        warm_idx = 0
        notes.append(
            f"too short to warm up ({fmt_duration(warm_at_ns)} needed before the last sample): "
            "memory growth is measured from the first sample"
        )
    warm_s, end = samples[warm_idx], samples[-1]
    memory: dict[str, Any] = {
        "warm_sample": warm_idx,
        "warm_clock": fmt_ns(warm_s.clock_ns),
        "rss_warm": warm_s.rss,
        "rss_end": end.rss,
        "rss_growth": (end.rss - warm_s.rss) / warm_s.rss if warm_s.rss else None,
        "heap_warm": warm_s.heap,
        "heap_end": end.heap,
        "heap_growth": None,
        "objects_warm": warm_s.objects,
        "objects_end": end.objects,
    }
    top: list[dict[str, Any]] = []
    if warm_s.heap is not None and end.heap is not None:
        memory["heap_growth"] = (end.heap - warm_s.heap) / warm_s.heap if warm_s.heap else None
        first = snaps.get(warm_idx) or {}
        last = snaps.get(len(samples) - 1) or {}
        diffs = []
        for key in set(first) | set(last):
            s1, c1 = first.get(key, (0, 0))
            s2, c2 = last.get(key, (0, 0))
            if s2 - s1 > 0:
                diffs.append((s2 - s1, c2 - c1, key))
        for size, count, (fname, line) in sorted(diffs, reverse=True)[:10]:
            top.append({"where": f"{_short(fname)}:{line}", "size_diff": size, "count_diff": count})
        if warm_idx not in snaps:
            notes.append("the warm snapshot was not kept; top growth is unavailable")

    measured = samples[warm_idx:]
    queue_checks = {name: _queue_check(measured, field) for name, field in (queues or QUEUES).items()}
    timers_ms = _timer_stats(timers)
    n_err = sink.counts.get("error", 0)
    errors = {
        "total": n_err,
        "by_reason": dict(sorted(sink.error_reasons.items())),
        "first": [
            {"time": fmt_ns(e.ts), "reason": e.reason, "symbol": e.symbol, "text": e.text} for e in sink.first_errors
        ],
        "over_time": [{"clock": fmt_ns(s.clock_ns), "errors": s.errors} for s in samples],
    }
    checks: list[dict[str, Any]] = []
    if memory["heap_growth"] is not None and check_heap:
        checks.append(_chk("heap growth", memory["heap_growth"], criteria.max_memory_growth))
    if memory["rss_growth"] is not None:
        checks.append(_chk("RSS growth", memory["rss_growth"], criteria.max_memory_growth))
    checks.append(_chk("errors", n_err, criteria.max_errors))
    for name, q in queue_checks.items():
        checks.append(
            {"name": f"queue {name} bounded", "value": q["second_half_peak"], "limit": q["limit"], "ok": q["bounded"]}
        )
    cyc = timers_ms.get("cycle", {})
    if criteria.max_cycle_p95_ms is not None:
        checks.append(_chk("cycle p95 ms", cyc.get("p95"), criteria.max_cycle_p95_ms))
    return SoakFindings(
        memory=memory,
        top_growth=top,
        queues=queue_checks,
        timers_ms=timers_ms,
        errors=errors,
        checks=checks,
        notes=notes,
    )


def check_keeps_cycling(cfg: Any) -> None:
    """Refuse a configuration that stops cycling (``max_cycles``, as the ``dev`` profile
    sets): its soak would watch an idle engine for hours and pass.

    Raises:
        InputError: naming the profile and the limit.
    """
    if cfg.max_cycles is not None:
        raise InputError(
            f"soak: profile {cfg.profile!r} stops after {cfg.max_cycles} cycle(s) (max_cycles); "
            "a soak needs a bot that keeps cycling"
        )


def run_soak(
    tape: str | Path | Sequence[str | Path] | Any,
    *,
    duration_ns: int,
    interval_s: float | None = None,
    profile: str = "backtest",
    strategy: type[Strategy] | str | None = None,
    params: dict[str, Any] | None = None,
    config: str | Path | None = None,
    seed: int | None = None,
    symbols: Sequence[str] | None = None,
    sample_every_ns: int | None = None,
    warmup_ns: int | None = None,
    criteria: SoakCriteria | None = None,
    trace_memory: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SoakReport:
    """Soak the bot on ``tape`` for ``duration_ns`` of clock time; never raises on failure.

    Args:
        tape: a tape path (or paths, or an opened tape); looped when shorter than
            the duration.
        sample_every_ns: clock time between samples (default 1h, or a quarter of a
            shorter duration, so that memory growth has samples to compare).
        warmup_ns: memory growth is measured from the first sample at or after this
            (and after the first loop); default ``sample_every_ns``.
        trace_memory: measure the Python heap with ``tracemalloc`` (about 4x slower;
            without it only RSS is checked).
        progress: called as ``progress(clock_ns_done, duration_ns)`` at each sample.

    Returns:
        The report; ``report.ok`` says whether every criterion held.

    Raises:
        InputError: a bad tape, profile, strategy or duration, or a soak that could not
            measure: no cycle in the duration, or fewer than two samples.
    """
    if duration_ns <= 0:
        raise InputError(f"--duration must be positive, got {duration_ns} ns")
    if sample_every_ns is None:
        sample_every_ns = min(_H, duration_ns // 4) or 1
    if sample_every_ns >= duration_ns:
        raise InputError(
            f"--sample-every {fmt_duration(sample_every_ns)} is not shorter than --duration "
            f"{fmt_duration(duration_ns)}: memory growth needs two samples"
        )
    crit = criteria or SoakCriteria()
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
    opened = tape if hasattr(tape, "batches") else open_tape(tape)
    interval_ns = round(cfg.interval_s * _S)
    if interval_ns > duration_ns:
        raise InputError(
            f"--interval {fmt_duration(interval_ns)} is longer than --duration {fmt_duration(duration_ns)}: "
            "no cycle would run"
        )
    looped = LoopedTape(opened, duration_ns, interval_ns, boundary_ns=sample_every_ns)
    empty = looped._shifted(looped._src[0], 0, 0, 0, 0)
    cls = strategy if isinstance(strategy, type) else None
    stats = TimerStats()
    gc.collect()
    started_tracing = False
    if trace_memory and not tracemalloc.is_tracing():
        tracemalloc.start(1)
        started_tracing = True
    try:
        sink = SoakSink()
        driver = ReplayDriver(looped, cfg, cls, ignore_timer_rows=True, sink=sink, keep=False)  # type: ignore[arg-type, unused-ignore]
        instrument_clock(driver.clock, stats)
        warm_at = max(warmup_ns if warmup_ns is not None else sample_every_ns, looped.period_ns if looped.looped else 0)
        sampler = SoakSampler()

        def sample() -> None:
            eng = driver.engine
            now = int(driver.last_ns or looped.start_ns)
            sampler.take(
                SoakSample,
                warm=int(driver.last_ns or 0) - looped.start_ns >= warm_at,
                release=lambda: eng.load(empty),  # release the last batch's row lists
                clock_ns=now,
                loop=looped.loop,
                outbox_peak=sink.outbox_peak,
                open_orders=len(eng.venue.open_orders()),
                timers=len(driver.clock.timers()),
                events=sink.event_count,
                errors=sink.counts.get("error", 0),
                cycles=eng.cycles,
            )
            sink.outbox_peak = 0
            if progress is not None:
                progress(now - looped.start_ns, duration_ns)

        next_sample = [looped.start_ns + sample_every_ns]

        def on_batch(_n: int) -> None:
            nc = looped.next_clock
            if nc is not None and nc >= next_sample[0]:
                sample()
                while next_sample[0] <= nc:
                    next_sample[0] += sample_every_ns

        sampler.restart()
        driver.run(on_batch)
        wall = time.perf_counter() - sampler.t0
        samples = sampler.samples
        if not samples or samples[-1].clock_ns != driver.last_ns:
            sample()
    finally:
        if started_tracing:
            tracemalloc.stop()

    notes: list[str] = []
    if looped.looped:
        notes.append(
            f"looped the {fmt_duration(looped.span_ns)} tape {looped.loops} times, each loop shifted by "
            f"{fmt_duration(looped.period_ns)} (its span rounded up to the {cfg.interval_s:g}s interval) "
            "so the clock continues"
        )
        notes.append(
            "at each seam the price jumps from the tape's last value to its first: the mark window "
            "sees one large move there, and funding rows at both ends of the tape settle twice"
        )
    else:
        notes.append(f"the tape covers the duration; played once ({fmt_duration(looped.span_ns)})")
    if trace_memory:
        notes.append("cycle times were measured with tracemalloc on (a few times slower than a plain replay)")
    notes.append("events and equity rows were streamed to the digest and counters, not kept")
    found = assess(sampler, start_ns=looped.start_ns, warm_at_ns=warm_at, timers=stats, sink=sink, criteria=crit)
    notes += found.notes
    return SoakReport(
        tape=_tape_name(opened),
        profile=cfg.profile,
        strategy=str(cfg.strategy),
        duration_ns=duration_ns,
        interval_s=cfg.interval_s,
        looped=looped.looped,
        loops=looped.loops,
        period_ns=looped.period_ns,
        tape_span_ns=looped.span_ns,
        notes=notes,
        clock_start_ns=looped.start_ns,
        clock_end_ns=int(driver.last_ns or looped.start_ns),
        wall_s=round(wall, 3),
        rows=driver.engine.rows,
        cycles=driver.engine.cycles,
        events=sink.event_count,
        counts=dict(sorted(sink.counts.items())),
        digest=driver.digest.hexdigest(),
        timers_ms=found.timers_ms,
        memory=found.memory,
        top_growth=found.top_growth,
        queues=found.queues,
        errors=found.errors,
        samples=samples,
        checks=found.checks,
        ok=all(c["ok"] for c in found.checks),
    )


def _chk(name: str, value: float | None, limit: float) -> dict[str, Any]:
    return {"name": name, "value": value, "limit": limit, "ok": value is None or value <= limit}


def _short(filename: str) -> str:
    """A path shortened to the part a person recognizes (from the package or stdlib folder)."""
    parts = Path(filename).parts
    for anchor in ("perpsim", "site-packages", "lib"):
        if anchor in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i + 1 :]) if anchor != "perpsim" else "/".join(parts[i:])
    return "/".join(parts[-2:])


def failure_line(rep: SoakReport) -> str:
    """One line naming each failed criterion."""
    parts = []
    for c in rep.failed:
        v = c["value"]
        shown = f"{v:.1%}" if "growth" in c["name"] and isinstance(v, float) else str(v)
        lim = f"{c['limit']:.0%}" if "growth" in c["name"] else str(c["limit"])
        parts.append(f"{c['name']} {shown} > {lim}")
    return f"{len(parts)} criteria failed: " + "; ".join(parts)


def soak(tape: str | Path | Sequence[str | Path] | Any, *, duration_ns: int, **kwargs: Any) -> SoakReport:
    """:func:`run_soak`, raising when a criterion fails.

    Raises:
        InputError: as :func:`run_soak`.
        CheckFailed: a criterion failed; the message names each.
    """
    rep = run_soak(tape, duration_ns=duration_ns, **kwargs)
    if not rep.ok:
        raise CheckFailed(f"soak: {failure_line(rep)}")
    return rep
