"""The live clock: the :class:`~perpsim.core.clock.Clock` protocol on the wall clock and asyncio.

DESIGN.md §3 in live form:

- :meth:`LiveClock.stamp` reads the wall clock once per socket read: the ``recv_ts`` of
  every message the read carried. Stamps never go backwards (a wall-clock step back
  repeats the last stamp), so a recording is always sorted by ``recv_ts``.
- During a dispatch ``now_ns()`` is the read's stamp; during a timer callback it is the
  timer's deadline, exactly as under :class:`~perpsim.core.clock.ReplayClock`.
- Timers fire in (deadline, priority, registration order). They fire from two places:
  the driver calls :meth:`LiveClock.advance_to` with each read's stamp *before*
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
import time
from collections.abc import Callable

from perpsim.core.clock import ReplayClock

__all__ = ["FireListener", "LiveClock"]

FireListener = Callable[[str, int, int], None]
"""``on_fire(name, deadline_ns, fired_at_ns)``, called just before a timer's callback."""

_NEVER = 1 << 62


class LiveClock(ReplayClock):
    """A clock read from the wall, with timers fired by the driver and by asyncio wake-ups.

    The timer queue is :class:`ReplayClock`'s; this adds the wall clock, the asyncio
    wake-up and :meth:`realign`.

    Args:
        wall: the wall clock in ns since the epoch (tests pass a fake one).
        on_fire: told of every firing, before its callback (the driver records a
            ``timer`` row); None while warming up from a recording.
    """

    NEVER = _NEVER

    def __init__(self, *, wall: Callable[[], int] = time.time_ns, on_fire: FireListener | None = None) -> None:
        self._wall = wall
        self._last_stamp = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Callable[[], None] | None = None
        self._armed: asyncio.TimerHandle | None = None
        self._armed_for = _NEVER
        super().__init__(start_ns=self.stamp())
        self.on_fire = on_fire

    # -- time -------------------------------------------------------------------

    def stamp(self) -> int:
        """Read the wall clock for one arrival or wake-up: ns, never less than the last stamp."""
        t = self._wall()
        if t < self._last_stamp:
            t = self._last_stamp
        self._last_stamp = t
        return t

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

    def _refresh(self) -> None:
        super()._refresh()
        self._arm()
