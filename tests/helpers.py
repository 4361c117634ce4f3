"""Shared test helpers: build small tapes from marks and run them through a replay."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

from perpsim.core.events import Funding, MarketEvent, Quote, Status, Trade
from perpsim.sim.replay import replay
from perpsim.sim.runs import RunResult
from perpsim.tapes.memory import MemoryTape

__all__ = ["MIN", "T0", "S", "cli", "cycle_ts", "mark_tape", "reaped", "run", "sigkill"]

S = 10**9
MIN = 60 * S
T0 = 1_700_000_040 * S  # a multiple of 60 s: cycles fall on T0 + k*MIN


def cycle_ts(k: int) -> int:
    """The time of the k-th cycle (1-based) of a tape made by :func:`mark_tape`."""
    return T0 + k * MIN


def mark_tape(
    marks: list[float],
    symbol: str = "BTC-PERP",
    *,
    extra: list[MarketEvent] | None = None,
    quotes: bool = False,
) -> list[MarketEvent]:
    """One trade at ``marks[i]`` one second after ``T0 + i*MIN``, so cycle i+1 sees it.

    A final status row at the last cycle's time makes that cycle run.
    """
    evs: list[MarketEvent] = []
    for i, px in enumerate(marks):
        t = T0 + i * MIN + S
        evs.append(Trade(ts=t, recv_ts=t, symbol=symbol, price=px, size=1.0, side=1))
        if quotes:
            evs.append(
                Quote(ts=t + 1, recv_ts=t + 1, symbol=symbol, bid=px - 0.5, bid_size=5.0, ask=px + 0.5, ask_size=5.0)
            )
    end = cycle_ts(len(marks))
    evs.extend(extra or [])
    evs.append(Status(ts=end, recv_ts=end, symbol=symbol, text="heartbeat"))
    evs.sort(key=lambda e: e.ts)
    return evs


def funding(t: int, rate: float, symbol: str = "BTC-PERP") -> Funding:
    return Funding(ts=t, recv_ts=t, symbol=symbol, rate=rate)


def run(events: list[MarketEvent] | MemoryTape, **kw: Any) -> RunResult:
    tape = events if isinstance(events, MemoryTape) else MemoryTape(events)
    return replay(tape, **kw)


def kinds(result: RunResult, kind: str) -> list[dict[str, Any]]:
    return result.events.filter(kind=kind).to_dicts()


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``perpsim ARGS`` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from perpsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """The child, killed and reaped on the way out if still running (a failing test leaves no process)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def sigkill(proc: subprocess.Popen[Any]) -> None:
    """Kill the child as a crash would (no handler runs), and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
