"""perpsim: a deterministic backtest-and-live simulator for perpetual-futures bots.

Importing perpsim does nothing but define names.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout the subpackages are the folders beside this one (DESIGN.md §2:
# core/ is perpsim.core), so `python -m perpsim` run from a clone finds them too.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "core")):
    __path__.append(_os.path.dirname(_here))

from perpsim import tapes
from perpsim.core.baseline import MACrossover
from perpsim.core.errors import CheckFailed, ConfigError, InputError, PerpsimError, TapeError
from perpsim.core.events import RunEvent
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.replay import RunSpec, replay, replay_many
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
    "RunSpec",
    "Strategy",
    "TapeError",
    "__version__",
    "replay",
    "replay_many",
    "tapes",
]
