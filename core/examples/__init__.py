"""Example strategies shipped with perpsim (``--strategy perpsim.core.examples.quoter:Quoter``)."""

from __future__ import annotations

from perpsim.core.examples.quoter import Quoter

__all__ = ["Quoter"]
