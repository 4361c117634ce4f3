"""Seeded random generators for the venue's models (DESIGN.md §7, STYLE habit 7).

Each random model owns its generator, derived from the run's seed and a fixed stream
number, so adding draws to one model never shifts another's. numpy's PCG64 is used
(the stdlib ``random`` module is banned from ``core/`` outright, so no unseeded use can
slip in); its output is the same on every platform for the same seed.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["STREAMS", "seeded"]

STREAMS: Final[dict[str, int]] = {"latency": 1, "queue": 2}
"""The fixed stream number of each model."""


def seeded(seed: int, model: str) -> np.random.Generator:
    """The generator of ``model`` (a key of :data:`STREAMS`) for the run's ``seed``."""
    entropy = [int(seed) & 0xFFFF_FFFF_FFFF_FFFF, STREAMS[model]]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
