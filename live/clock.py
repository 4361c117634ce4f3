"""The live clock: the :class:`~perpsim.core.clock.Clock` protocol on the wall clock and asyncio.

DESIGN.md §3 in live form:

- :meth:`LiveClock.stamp` reads the wall clock once per message (its ``recv_ts``). Stamps
  never go backwards (a wall-clock step back repeats the last stamp), so a recording is
  always sorted by ``recv_ts``.
- During a dispatch ``now_ns()`` is the message's stamp; during a timer callback it is the
  timer's deadline, exactly as under :class:`~perpsim.core.clock.ReplayClock`.
- Timers fire in (deadline, priority, registration order). They fire from two places:
  the driver calls :meth:`LiveClock.advance_to` with each message's stamp *before*
  dispatching it (so a timer due at or before a message runs first, as in replay), and an
  asyncio wake-up fires timers when no message comes. Either way the firing time is a
  stamp, and each firing is reported to ``on_fire`` so the recorder writes a ``timer`` row
  (clock value = firing time, ``next_ts`` = deadline, ``text`` = name). Replaying the
  recording takes firings from those rows and reproduces the live interleaving exactly.
- Periodic timers are aligned to the Unix epoch.

The clock holds no engine reference (STYLE.md, "Drivers hold the engine"): the driver
passes callbacks.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from perpsim.core.clock import TimerCallback, TimerHandle, align_up
from perpsim.core.errors import ConfigError

__all__ = ["FireListener", "LiveClock"]

FireListener = Callable[[str, int, int], None]
"""``on_fire(name, deadline_ns, fired_at_ns)``, called just before a timer's callback."""

_NEVER = 1 << 62


class LiveClock:
    """A clock read from the wall, with timers fired by the driver and by asyncio wake-ups.

    Args:
        wall: the wall clock in ns since the epoch (tests pass a fake one).
        on_fire: told of every firing, before its callback (the driver records a
            ``timer`` row); None while warming up from a recording.
    """

    NEVER = _NEVER

    def __init__(self, *, wall: Callable[[], int] = time.time_ns, on_fire: FireListener | None = None) -> None:
        self._wall = wall
        self.on_fire = on_fire
        self._last_stamp = 0
        self._now = self.stamp()
        self._heap: list[tuple[int, int, int, TimerHandle]] = []
        self._names: dict[str, TimerHandle] = {}
        self._order = 0
        self.next_due = _NEVER
        self.fired = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Callable[[], None] | None = None
        self._armed: asyncio.TimerHandle | None = None
        self._armed_for = _NEVER

    # -- time -------------------------------------------------------------------

    def stamp(self) -> int:
        """Read the wall clock for one arrival or wake-up: ns, never less than the last stamp."""
        t = self._wall()
        if t < self._last_stamp:
            t = self._last_stamp
        self._last_stamp = t
        return t

    def now_ns(self) -> int:
        """The clock value of the dispatch or timer callback in progress (else the last one)."""
        return self._now

    def set_now(self, ns: int) -> None:
        """Set the clock value for a dispatch (the driver does it once per message)."""
        self._now = ns

    # -- timers -----------------------------------------------------------------

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
        """Live timers in registration order (the recorder stores their names and periods)."""
        return sorted((h for h in self._names.values() if not h.cancelled), key=lambda h: h.order)

    def advance_to(self, t_ns: int) -> int:
        """Fire every timer due at or before ``t_ns`` (a stamp), in order; then now is ``t_ns``.

        Each firing is reported to ``on_fire`` with ``t_ns`` as its firing time; during
        the callback ``now_ns()`` is the deadline. Timers a callback schedules at or
        before ``t_ns`` fire in the same call.

        Returns:
            How many timers fired.
        """
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= t_ns:
            deadline, _, _, h = heapq.heappop(heap)
            if h.cancelled:
                continue
            if h.interval:
                h.deadline = deadline + h.interval
                heapq.heappush(heap, (h.deadline, h.priority, h.order, h))
            else:
                self._names.pop(h.name, None)
            self._now = deadline
            self.fired += 1
            n += 1
            if self.on_fire is not None:
                self.on_fire(h.name, deadline, t_ns)
            h.callback(deadline)
        self._now = max(self._now, t_ns)
        self._refresh()
        return n

    def realign(self, now_ns: int) -> None:
        """Skip missed periodic firings: each periodic timer is next due at or after ``now_ns``.

        Used after a warm start, whose replayed tail ends in the past: without this the
        live clock would fire every cycle missed since, back to back, on stale marks.
        One-shot timers keep their deadlines.
        """
        entries = [(h.deadline, h) for _, _, _, h in self._heap if not h.cancelled]
        self._heap = []
        for _, h in entries:
            if h.interval and h.deadline < now_ns:
                h.deadline = align_up(now_ns, h.interval)
            self._heap.append((h.deadline, h.priority, h.order, h))
        heapq.heapify(self._heap)
        self._now = max(self._now, now_ns)
        self._refresh()

    # -- asyncio ------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        """Wake ``wake()`` on ``loop`` whenever a deadline passes with no message to fire it.

        ``wake`` is the driver's: it stamps, calls :meth:`advance_to` and drains the engine.
        """
        self._loop = loop
        self._wake = wake
        self._arm()

    def detach(self) -> None:
        """Stop waking up (shutdown); timers stay scheduled but no longer fire by themselves."""
        if self._armed is not None:
            self._armed.cancel()
        self._armed = None
        self._armed_for = _NEVER
        self._loop = None
        self._wake = None

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        due = self.next_due
        if due == self._armed_for and self._armed is not None:
            return
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._armed_for = due
        if due >= _NEVER:
            return
        delay = max(0.0, (due - self._wall()) / 1e9)
        self._armed = loop.call_at(loop.time() + delay, self._on_wake)

    def _on_wake(self) -> None:
        self._armed = None
        self._armed_for = _NEVER
        if self._wall() < self.next_due:
            self._arm()  # woke early (the loop's clock and the wall clock differ): sleep again
            return
        if self._wake is not None:
            self._wake()
        self._arm()

    # -- internals ----------------------------------------------------------------

    def _add(self, name: str, deadline: int, interval: int, cb: TimerCallback, priority: int) -> TimerHandle:
        if name in self._names:
            raise ConfigError(f"timer {name!r} is already scheduled")
        self._order += 1
        h = TimerHandle(
            name=name, deadline=deadline, interval=interval, priority=priority, order=self._order, callback=cb
        )
        self._names[name] = h
        heapq.heappush(self._heap, (deadline, priority, self._order, h))
        self._refresh()
        return h

    def _refresh(self) -> None:
        heap = self._heap
        while heap and heap[0][3].cancelled:
            heapq.heappop(heap)
        self.next_due = heap[0][0] if heap else _NEVER
        self._arm()
