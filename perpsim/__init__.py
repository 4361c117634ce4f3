"""perpsim: a deterministic backtest-and-live simulator for perpetual-futures bots.

Importing perpsim does nothing but define names.
"""

from __future__ import annotations

__version__ = "0.1.0"

from perpsim import tapes
from perpsim.core.baseline import MACrossover
from perpsim.core.errors import CheckFailed, ConfigError, InputError, PerpsimError, TapeError
from perpsim.core.events import RunEvent
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.replay import replay
from perpsim.sim.runs import RunResult

__all__ = [
    "CheckFailed",
    "ConfigError",
    "Context",
    "InputError",
    "MACrossover",
    "PerpsimError",
    "RunEvent",
    "RunResult",
    "Strategy",
    "TapeError",
    "__version__",
    "replay",
    "tapes",
]
