"""perpsim: a deterministic backtest-and-live simulator for perpetual-futures bots.

Importing perpsim does nothing but define names.
"""

from __future__ import annotations

__version__ = "0.1.0"

from perpsim.core.baseline import MACrossover
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.replay import replay
from perpsim.sim.runs import RunResult

__all__ = ["Context", "MACrossover", "RunResult", "Strategy", "__version__", "replay"]
