"""The live path: Coinbase Advanced Trade feed client, feed server, live driver, recorder, metrics."""

from __future__ import annotations

__all__: list[str] = []
