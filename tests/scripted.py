"""A strategy that places scripted orders at given cycles (for venue and ledger tests)."""

from __future__ import annotations

from typing import Any, ClassVar

from perpsim.core.strategy import Context, Strategy


class Scripted(Strategy):
    """``orders``: a list of [cycle, symbol, side, qty, {submit kwargs}] (1-based cycles)."""

    defaults: ClassVar[dict[str, Any]] = {"orders": []}

    def on_start(self, ctx: Context) -> None:
        self.cycle = 0

    def on_cycle(self, ctx: Context) -> None:
        self.cycle += 1
        for cyc, symbol, side, qty, *kw in self.params["orders"]:
            if cyc == self.cycle:
                ctx.submit(symbol, side, qty, **(kw[0] if kw else {}))
