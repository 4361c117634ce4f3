"""The one clock abstraction (DESIGN.md §3).

Replay and live share the :class:`Clock` protocol. Timers are named (a duplicate
name is an error), carry a fixed priority, and fire in (deadline, priority,
registration order). Periodic timers are aligned to the Unix epoch: due at the
multiples of their interval.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

import msgspec

from perpsim.core.errors import ConfigError, InputError

__all__ = ["Clock", "ReplayClock", "TimerHandle", "align_up"]

TimerCallback = Callable[[int], None]


def align_up(t_ns: int, interval_ns: int) -> int:
    """The first multiple of ``interval_ns`` at or after ``t_ns``."""
    return -(-t_ns // interval_ns) * interval_ns


class TimerHandle(msgspec.Struct, kw_only=True):
    """A scheduled timer; ``cancel`` it through the clock that made it."""

    name: str
    deadline: int
    interval: int
    priority: int
    order: int
    callback: TimerCallback
    cancelled: bool = False


class Clock(Protocol):
    """What core asks for the time and for timers; nothing in core reads any other clock.

    ``set_now`` is the driver's: it sets the clock value of the row being dispatched.
    ``next_due`` is the earliest live deadline.
    """

    next_due: int

    def now_ns(self) -> int: ...

    def set_now(self, ns: int) -> None: ...

    def call_at(self, ns: int, name: str, cb: TimerCallback, priority: int = 100) -> TimerHandle: ...

    def every(self, interval_ns: int, name: str, cb: TimerCallback, priority: int = 100) -> TimerHandle: ...

    def cancel(self, handle: TimerHandle) -> None: ...


class ReplayClock:
    """A clock moved by the replay driver: ``advance_to(t)`` fires what is due, then sets now.

    ``next_due`` is the earliest live deadline (or a huge sentinel): the hot loop
    compares each row's clock value with it and calls :meth:`advance_to` only
    when a timer is due.
    """

    NEVER = 1 << 62

    def __init__(self, start_ns: int = 0) -> None:
        self.scripted = False
        # told of every firing before its callback: (name, deadline, firing time); the live
        # driver records a ``timer`` row from it
        self.on_fire: Callable[[str, int, int], None] | None = None
        self._now = start_ns
        self._heap: list[tuple[int, int, int, TimerHandle]] = []
        self._names: dict[str, TimerHandle] = {}
        self._order = 0
        self.next_due = self.NEVER
        self.fired = 0

    def now_ns(self) -> int:
        return self._now

    def set_now(self, ns: int) -> None:
        """Set the time without firing (the driver does it once per dispatched row)."""
        self._now = ns

    def call_at(self, ns: int, name: str, cb: TimerCallback, priority: int = 100) -> TimerHandle:
        return self._add(name, ns, 0, cb, priority)

    def every(self, interval_ns: int, name: str, cb: TimerCallback, priority: int = 100) -> TimerHandle:
        if interval_ns <= 0:
            raise ConfigError(f"timer {name!r}: interval must be positive, got {interval_ns} ns")
        return self._add(name, align_up(self._now, interval_ns), interval_ns, cb, priority)

    def cancel(self, handle: TimerHandle) -> None:
        handle.cancelled = True
        if self._names.get(handle.name) is handle:
            del self._names[handle.name]
        self._refresh()

    def timers(self) -> list[TimerHandle]:
        """Live timers in registration order."""
        return sorted((h for h in self._names.values() if not h.cancelled), key=lambda h: h.order)

    def script(self) -> None:
        """Stop firing on deadlines: firings now come from recorded ``timer`` rows (DESIGN.md §3)."""
        self.scripted = True
        self._heap.clear()
        self._refresh()

    def fire_named(self, name: str, deadline: int) -> None:
        """Fire a recorded timer firing: ``now_ns()`` is its deadline during the callback.

        Raises:
            InputError: when no timer of that name is scheduled (the code's timer set
                differs from the recording's; replay with its own timers instead).
        """
        h = self._names.get(name)
        if h is None or h.cancelled:
            raise InputError(f"timer row names {name!r}, which this run has not scheduled; use --ignore-timer-rows")
        self._now = deadline
        if not h.interval:
            del self._names[name]
        self.fired += 1
        h.callback(deadline)

    def advance_to(self, t_ns: int) -> int:
        """Fire every timer due at or before ``t_ns`` in order, then set now to ``t_ns``.

        During a callback ``now_ns()`` is the timer's deadline; timers scheduled by a
        callback at or before ``t_ns`` fire in the same call.

        Returns:
            How many timers fired.
        """
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= t_ns:
            deadline, _, _, h = heapq.heappop(heap)
            if h.cancelled:
                continue
            self._now = deadline
            if h.interval:
                h.deadline = deadline + h.interval
                heapq.heappush(heap, (h.deadline, h.priority, h.order, h))
            else:
                self._names.pop(h.name, None)
            self.fired += 1
            n += 1
            if self.on_fire is not None:
                self.on_fire(h.name, deadline, t_ns)
            h.callback(deadline)
        self._now = max(self._now, t_ns)
        self._refresh()
        return n

    def _add(self, name: str, deadline: int, interval: int, cb: TimerCallback, priority: int) -> TimerHandle:
        if name in self._names:
            raise ConfigError(f"timer {name!r} is already scheduled")
        self._order += 1
        h = TimerHandle(
            name=name, deadline=deadline, interval=interval, priority=priority, order=self._order, callback=cb
        )
        self._names[name] = h
        if not self.scripted:
            heapq.heappush(self._heap, (deadline, priority, self._order, h))
        self._refresh()
        return h

    def realign(self, now_ns: int) -> None:
        """Skip missed periodic firings: each periodic timer is next due at or after ``now_ns``.

        After a warm start, whose replayed tail ends in the past: without this the clock
        would fire every cycle missed since, back to back, on stale marks. One-shot timers
        keep their deadlines.
        """
        entries = [h for _, _, _, h in self._heap if not h.cancelled]
        self._heap = []
        for h in entries:
            if h.interval and h.deadline < now_ns:
                h.deadline = align_up(now_ns, h.interval)
            self._heap.append((h.deadline, h.priority, h.order, h))
        heapq.heapify(self._heap)
        self._now = max(self._now, now_ns)
        self._refresh()

    def _refresh(self) -> None:
        heap = self._heap
        while heap and heap[0][3].cancelled:
            heapq.heappop(heap)
        self.next_due = heap[0][0] if heap else self.NEVER
