"""Simulation drivers over tapes: replay, run outputs, profiles, drift, soak, characterization, sweeps."""

from __future__ import annotations

__all__: list[str] = []
