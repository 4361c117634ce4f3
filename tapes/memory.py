"""A tape held in memory: market events or batches with the same interface as a file tape.

Tests, notebooks and the live warm start replay these without touching disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from perpsim.core.batch import Batch, batch_from_events
from perpsim.core.engine import PSEUDO_SYMBOL
from perpsim.core.events import MarketEvent
from perpsim.core.instruments import Instrument
from perpsim.tapes.schema import TapeMeta

__all__ = ["MemoryTape"]


class MemoryTape:
    """Rows already sorted by their clock column; ``batches`` slices them like row groups."""

    def __init__(
        self,
        events: Sequence[MarketEvent],
        *,
        clock: str = "ts",
        instruments: dict[str, Instrument] | None = None,
        batch_rows: int = 65536,
    ) -> None:
        self._batch = batch_from_events(list(events), clock=clock)
        self.meta = TapeMeta(clock=clock, source="memory", instruments=dict(instruments or {}), rows=len(events))  # type: ignore[arg-type]
        self.instruments = self.meta.instruments
        self.files: list[Path] = []
        self.num_rows = len(events)
        self.batch_rows = batch_rows

    @property
    def symbols(self) -> tuple[str, ...]:
        """The instruments its rows name, in code-point order (as :attr:`Tape.symbols`)."""
        b = self._batch
        used = np.bincount(b.symbol, minlength=len(b.symbols)) if len(b) else ()
        return tuple(sorted(s for s, n in zip(b.symbols, used, strict=False) if n and s != PSEUDO_SYMBOL))

    def batches(self, *, start_ns: int | None = None, end_ns: int | None = None, **_: object) -> Iterator[Batch]:
        b = self._batch
        lo = 0 if start_ns is None else int(np.searchsorted(b.clock, start_ns, side="left"))
        hi = len(b) if end_ns is None else int(np.searchsorted(b.clock, end_ns, side="left"))
        for a in range(lo, hi, self.batch_rows):
            z = min(a + self.batch_rows, hi)
            yield b.rows(slice(a, z))
