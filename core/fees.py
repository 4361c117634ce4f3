"""Maker/taker fees by tier (issue 4 item 5).

A fill pays ``notional * bps / 1e4`` where notional is in the settlement currency
(linear: ``qty * contract_size * price``; inverse: ``qty * contract_size / price``)
and ``bps`` is the maker or taker rate of the account's tier. A negative maker rate
is a rebate: the fee is negative and cash goes up; the ledger identity
``cash == start + realized - fees + funding`` holds either way.

Tiers: with no ``fee_tiers`` in the config, ``maker_bps``/``taker_bps`` apply
(defaults 2.0/4.0, Coinbase International's base perpetuals tier). With a table,
``fee_tier`` fixes the tier, else each fill uses the highest tier whose
``min_volume_30d`` is at most the notional traded in the 30 days before the fill
(a rolling window over this run's own fills; the fill itself does not count).
Real venues re-tier once a day; re-tiering per fill is the deterministic limit of
that and differs only on the day a threshold is crossed.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Final

from perpsim.core.config import VenueConfig
from perpsim.core.instruments import exact

__all__ = ["WINDOW_NS", "FeeSchedule"]

WINDOW_NS: Final = 30 * 86_400 * 1_000_000_000
_BPS: Final = Fraction(1, 10_000)


class FeeSchedule:
    """The fee rate of each fill, and the trailing volume that picks the tier."""

    def __init__(self, cfg: VenueConfig) -> None:
        self._tiers: list[tuple[Fraction, Fraction, Fraction]] = [
            (exact(t.min_volume_30d), exact(t.maker_bps) * _BPS, exact(t.taker_bps) * _BPS) for t in cfg.fee_tiers
        ]
        self._fixed = cfg.fee_tier
        self._maker = exact(cfg.maker_bps) * _BPS
        self._taker = exact(cfg.taker_bps) * _BPS
        self._window: deque[tuple[int, Fraction]] = deque()
        self.volume_30d = Fraction(0)

    def tier(self, now: int) -> int | None:
        """The index of the tier in force at ``now`` (None without a tier table)."""
        if not self._tiers:
            return None
        if self._fixed is not None:
            return self._fixed
        self._expire(now)
        best = 0
        for i, (floor, _, _) in enumerate(self._tiers):
            if self.volume_30d >= floor:
                best = i
        return best

    def rate(self, liquidity: str, now: int) -> Fraction:
        """The fee rate (a fraction of notional) for a ``maker`` or ``taker`` fill at ``now``."""
        i = self.tier(now)
        if i is None:
            return self._maker if liquidity == "maker" else self._taker
        _, maker, taker = self._tiers[i]
        return maker if liquidity == "maker" else taker

    def record(self, now: int, notional: Fraction) -> None:
        """Count a fill's notional in the trailing window (only when tiers are by volume)."""
        if self._tiers and self._fixed is None:
            self._window.append((now, notional))
            self.volume_30d += notional

    def _expire(self, now: int) -> None:
        w = self._window
        while w and w[0][0] <= now - WINDOW_NS:
            self.volume_30d -= w.popleft()[1]
