"""The warm-start transition, shared by the live driver and the replay driver.

A warm live session (``perpsim live --warm-from``) replays the tail of an earlier
recording with the engine's own timers, throws the outputs away, restores the earlier
session's snapshot and realigns the periodic timers to the wall clock before going live.
Its recording holds those warm-up rows first and a :class:`~perpsim.tapes.schema.WarmStart`
in its metadata, and ``perpsim replay`` redoes the transition with these same
functions: one copy of the code, so the replayed engine is in exactly the state the
live engine was in at go-live (DESIGN.md §3, §5).
"""

from __future__ import annotations

import numpy as np

from perpsim.core import snapshot as snap_mod
from perpsim.core.batch import Batch
from perpsim.core.clock import ReplayClock
from perpsim.core.engine import Engine

__all__ = ["dispatch_own_timers", "end_warm_up", "warm_up"]


def dispatch_own_timers(engine: Engine, clock: ReplayClock, batch: Batch, i: int, n: int) -> None:
    """Dispatch rows ``i:n`` of a loaded batch one by one, firing the clock's own timers between them.

    A timer due at T fires after every row before T and before any row at or after T
    (DESIGN.md §3). This is the replay's reference loop and the warm-up's loop.
    """
    col = batch.clock
    last = int(col[n - 1])
    while i < n:
        due = clock.next_due
        j = n if due > last else int(np.searchsorted(col, due, side="left"))
        if j > i:
            i = engine.run(i, j)
            clock.set_now(int(col[i - 1]))
        else:
            clock.advance_to(int(col[i]))


def warm_up(engine: Engine, clock: ReplayClock, batch: Batch) -> int:
    """Dispatch one warm-up batch with the engine's own timers; returns its row count.

    The engine starts at the first warm-up row's clock value (as a replay starts at
    its first row), so its timers are aligned as the earlier session's were.
    """
    n = len(batch)
    if n == 0:
        return 0
    if not engine.started:
        clock.set_now(int(batch.clock[0]))
        engine.start()
    engine.load(batch)
    dispatch_own_timers(engine, clock, batch, 0, n)
    return n


def end_warm_up(engine: Engine, snapshot: bytes | None) -> int:
    """Discard the warm-up's outputs (the earlier session made them) and restore ``snapshot``.

    Returns:
        How many run events were discarded.
    """
    out = engine.outbox.drain()
    engine.equity_rows.clear()
    # The session's summary counts its own rows and events, as its run directory holds them;
    # ``cycles`` stays cumulative (the snapshot restores it, for ``max_cycles``).
    engine.outbox.forget()
    engine.rows = 0
    if snapshot is not None:
        snap_mod.restore(engine, snap_mod.decode(snapshot))
    return len(out)
