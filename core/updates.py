"""What the venue tells the strategy: fills, order updates (DESIGN.md §9 hooks).

The engine hands these to ``on_fill`` / ``on_order`` (and
:class:`~perpsim.core.funding.FundingPayment` to ``on_funding``), after the venue's
response latency when one is configured.
"""

from __future__ import annotations

import msgspec

from perpsim.core.funding import FundingPayment

__all__ = ["Fill", "OrderUpdate", "Update"]


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """What the strategy's ``on_fill`` receives (``liquidity``: maker, taker or liquidation)."""

    order_id: int
    client_id: str | None
    symbol: str
    side: str
    qty: float
    price: float
    liquidity: str
    fee: int
    realized: int
    position_after: float
    ts: int


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """What the strategy's ``on_order`` receives.

    ``status``: accepted, rejected, triggered, cancelled, expired or cancel_rejected.
    """

    order_id: int
    client_id: str | None
    symbol: str
    status: str
    reason: str | None
    ts: int


Update = Fill | OrderUpdate | FundingPayment
"""Anything the venue sends the strategy."""
