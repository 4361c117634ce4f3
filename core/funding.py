"""Funding settlements from a schedule rather than tape rows (issue 4 item 6).

``venue.funding`` picks the source of funding settlements:

``tape`` (default)
    Each tape ``funding`` row settles at its clock time (DESIGN.md §4).
``constant``
    ``funding_rate`` settles every ``funding_interval_s`` (None: each instrument's
    ``funding_interval_s``: hourly by default, 8 h for Binance-style instruments),
    at the multiples of the interval since the Unix epoch.
``schedule``
    A series of ``(time_ns, rate)`` per symbol, given to :meth:`FundingClock.add_schedule`
    by the driver (the replay driver reads them from funding-history CSVs named in
    ``venue.funding_schedule``; core does no I/O).
``off``
    No funding.

Whatever the source, a settlement at time T charges ``qty * contract_size *
venue_mark * rate`` (inverse: ``qty * contract_size / venue_mark * rate``, in coin) on
the position held at T, and a long pays a positive rate. Nothing accrues between
boundaries, so a position increased (or opened, or closed) between two boundaries
pays exactly once, at the next boundary, on what it holds then: no double charge.
Tape rows are ignored as settlements when the source is not ``tape`` (their rate is
still recorded in the market state).

A scheduled settlement at T runs after every other timer due at T (cycle, jobs,
strategy timers), which is where a tape ``funding`` row at T runs: so a position
opened by the cycle at T pays T's funding either way.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable
from typing import Final

import msgspec

from perpsim.core.clock import Clock
from perpsim.core.config import VenueConfig
from perpsim.core.instruments import Instrument, exact

__all__ = ["FUNDING_PRIORITY", "FundingClock", "FundingPayment"]

FUNDING_PRIORITY: Final = 1_000
"""Timer priority of scheduled settlements: after every engine job and strategy timer."""

_NS: Final = 1_000_000_000
_PSEUDO: Final = "*"  # the engine's symbol of rows about no instrument (timer, status)

Settle = Callable[[int, float, int], None]


class FundingPayment(msgspec.Struct, frozen=True, kw_only=True):
    """What the strategy's ``on_funding`` receives; ``amount`` in ledger units (+ received)."""

    symbol: str
    rate: float
    mark: float
    amount: int
    ts: int


class FundingClock:
    """Schedules settlements on the clock and calls ``settle(sid, rate, now)`` at each one."""

    def __init__(
        self,
        cfg: VenueConfig,
        clock: Clock,
        names: list[str],
        instruments: dict[str, Instrument],
        settle: Settle,
    ) -> None:
        self.mode = cfg.funding
        self._rate = cfg.funding_rate
        self._interval_s = cfg.funding_interval_s
        self._clock = clock
        self._names = names
        self._instruments = instruments
        self._settle = settle
        self._schedules: dict[str, tuple[list[int], list[float]]] = {}
        self._started = False
        self._known: list[int] = []

    def add_schedule(self, symbol: str, times: list[int], rates: list[float]) -> None:
        """Give ``symbol`` a settlement series (sorted by time; used when the mode is ``schedule``).

        Raises:
            ValueError: when the lengths differ or the times are not ascending.
        """
        if len(times) != len(rates):
            raise ValueError(f"funding schedule {symbol}: {len(times)} times but {len(rates)} rates")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"funding schedule {symbol}: times must be strictly ascending")
        self._schedules[symbol] = ([int(t) for t in times], [float(r) for r in rates])
        if self._started:
            sid = self._names.index(symbol) if symbol in self._names else -1
            if sid >= 0:
                self._schedule_next(sid)

    def start(self) -> None:
        """Register the timers of every symbol known so far; later symbols register on arrival."""
        self._started = True
        for sid in self._known:
            self._register(sid)

    def add_symbol(self, sid: int) -> None:
        self._known.append(sid)
        if self._started:
            self._register(sid)

    def _register(self, sid: int) -> None:
        name = self._names[sid]
        if name == _PSEUDO:
            return
        if self.mode == "constant":
            inst = self._instruments.get(name)
            interval = self._interval_s if self._interval_s is not None else (inst.funding_interval_s if inst else 3600)
            ns = round(exact(float(interval)) * _NS)
            rate = self._rate
            self._clock.every(ns, f"venue:funding:{name}", lambda now: self._settle(sid, rate, now), FUNDING_PRIORITY)
        elif self.mode == "schedule":
            self._schedule_next(sid)

    def _schedule_next(self, sid: int) -> None:
        name = self._names[sid]
        sched = self._schedules.get(name)
        if sched is None:
            return
        times = sched[0]
        i = bisect_left(times, self._clock.now_ns())
        if i >= len(times):
            return
        self._clock.call_at(times[i], f"venue:funding:{name}:{i}", lambda now: self._fire(sid, i), FUNDING_PRIORITY)

    def _fire(self, sid: int, i: int) -> None:
        times, rates = self._schedules[self._names[sid]]
        self._settle(sid, rates[i], times[i])
        if i + 1 < len(times):
            name = self._names[sid]
            self._clock.call_at(
                times[i + 1], f"venue:funding:{name}:{i + 1}", lambda now: self._fire(sid, i + 1), FUNDING_PRIORITY
            )
