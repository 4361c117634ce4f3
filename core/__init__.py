"""The sans-I/O core: events, clock, engine, market state, venue, ledger and the PerpsBot.

Nothing here touches a file, a socket, the wall clock or an unseeded random source
(DESIGN.md §1, §7); import the modules you need (``from perpsim.core import clock``).
"""

from __future__ import annotations

__all__: list[str] = []
