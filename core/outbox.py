"""The engine's outbox of run events and the run digest (DESIGN.md §6).

Core only appends; drivers empty the outbox with :meth:`Outbox.drain` (swapping in
a fresh list) and write what they took. The digest is SHA-256 over the
msgpack encoding of each run event in order, so it is equal in any process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec

from perpsim.core.errors import InputError
from perpsim.core.events import RunEvent
from perpsim.core.ledger import OUT_OF_RANGE
from perpsim.core.timefmt import fmt_ns

__all__ = ["Digest", "Outbox"]

_encode = msgspec.msgpack.Encoder().encode


class Digest:
    """An incremental run digest; feed events in order, read ``hexdigest()``."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def update(self, events: Iterable[RunEvent]) -> None:
        """Raises:
        InputError: an event holds money beyond int64 ledger units (about ±92 billion in
            the settlement currency): prices or sizes out of any market's scale.
        """
        h = self._h
        for ev in events:
            try:
                h.update(_encode(ev))
            except OverflowError:
                raise InputError(
                    f"{ev.kind} event at {fmt_ns(ev.ts)}: money beyond the ledger's range ({OUT_OF_RANGE})"
                ) from None
            self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Outbox:
    """Run events waiting for the driver, numbered in emission order."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.seq = 0
        self.counts: dict[str, int] = {}
        self.first_error: RunEvent | None = None  # what the summary shows of a run's errors

    def emit(self, kind: str, ts: int, recv_ts: int | None = None, **fields: Any) -> RunEvent:
        self.seq += 1
        ev = RunEvent(ts=ts, recv_ts=ts if recv_ts is None else recv_ts, seq=self.seq, kind=kind, **fields)
        self.events.append(ev)
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n == 1 and kind == "error":
            self.first_error = ev
        return ev

    def forget(self) -> None:
        """Start the counts afresh (a warm start's discarded warm-up)."""
        self.counts.clear()
        self.first_error = None

    def drain(self) -> list[RunEvent]:
        out, self.events = self.events, []
        return out
