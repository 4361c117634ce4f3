"""Orders and their lifecycle, as a table (STYLE habit 4).

``TRANSITIONS[(state, event)]`` is the only place that says what an order may do;
the venue checks it before changing anything, so a refused event changes nothing.

::

    NEW ──accept──► ACCEPTED ──trigger──► TRIGGERED        (stop, stop_limit)
     │                 │  │                   │
     reject            │  partial ──► PARTIALLY_FILLED ──partial──┐
     ▼                 │                   │   ▲────────────────────┘
    REJECTED           fill / cancel / expire (from any open state)
                       ▼
                 FILLED / CANCELLED / EXPIRED

Order types (``type``): ``market``; ``limit`` (``price``); ``stop`` (a market order
once the trigger price reaches ``stop_price``); ``stop_limit`` (a limit at ``price``
once triggered). Time in force (``tif``): ``GTC``; ``IOC`` (what cannot fill at
once is cancelled, reason ``ioc_remainder``); ``FOK`` (all at once or cancelled
whole, reason ``fok_not_filled``); ``GTD`` (``expire_ns`` required; an ``expire``
event at that clock time). A market order's unfilled rest is cancelled (reason
``no_liquidity``, or ``cap_to_top``).

Reasons an order is rejected on arrival, checked in this order (:func:`check_static`
then the venue's market-dependent checks):

====================================  ===============================================
reason                                 when
====================================  ===============================================
``unknown_symbol``                     no instrument for the symbol
``unknown_order_type``                 ``type`` not one of the four
``unknown_tif``                        ``tif`` not GTC/IOC/FOK/GTD
``non_positive_qty``                   ``qty <= 0`` (or not finite)
``qty_below_lot``                      less than one lot (qty is floored to the lot)
``missing_price`` / ``invalid_price``  limit price absent, not finite or <= 0
``price_off_tick``                     limit price not a multiple of the tick
``missing_stop_price`` / ...           the same for ``stop_price``
``price_not_used``                     a ``price`` on a market or stop order
``stop_price_not_used``                a ``stop_price`` on a market or limit order
``post_only_would_take``               post-only market/stop, or marketable on arrival
``gtd_without_expiry``                 GTD without ``expire_ns``
``gtd_expire_in_past``                 ``expire_ns`` at or before arrival
``reduce_only_nothing_to_close``       reduce-only with no opposite position
``settlement_currency_mismatch``       the instrument settles in another currency
``no_price``                           market order with no book, quote or trade
``no_liquidity``                       market order on a book whose taken side is empty
``below_min_notional``                 notional under the instrument's minimum
``stop_would_trigger``                 a stop already through its trigger price
``insufficient_margin``                not enough free margin for the opening part
====================================  ===============================================

Off-tick prices are **rejected**, not snapped: snapping would silently move a
price the strategy chose (up or down, and so change whether it takes or rests).
"""

from __future__ import annotations

import math
from enum import Enum
from fractions import Fraction
from typing import Final, Literal

import msgspec

from perpsim.core.instruments import Instrument, exact

__all__ = [
    "ORDER_TYPES",
    "TIFS",
    "TRANSITIONS",
    "Order",
    "OrderState",
    "OrderType",
    "TimeInForce",
    "check_static",
    "on_tick",
    "transition",
]

OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["GTC", "IOC", "FOK", "GTD"]
ORDER_TYPES: Final = ("market", "limit", "stop", "stop_limit")
TIFS: Final = ("GTC", "IOC", "FOK", "GTD")


class OrderState(Enum):
    NEW = "new"
    ACCEPTED = "accepted"
    TRIGGERED = "triggered"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


_S = OrderState
TRANSITIONS: Final[dict[tuple[OrderState, str], OrderState]] = {
    (_S.NEW, "accept"): _S.ACCEPTED,
    (_S.NEW, "reject"): _S.REJECTED,
    (_S.ACCEPTED, "trigger"): _S.TRIGGERED,
    (_S.ACCEPTED, "partial"): _S.PARTIALLY_FILLED,
    (_S.ACCEPTED, "fill"): _S.FILLED,
    (_S.ACCEPTED, "cancel"): _S.CANCELLED,
    (_S.ACCEPTED, "expire"): _S.EXPIRED,
    (_S.TRIGGERED, "partial"): _S.PARTIALLY_FILLED,
    (_S.TRIGGERED, "fill"): _S.FILLED,
    (_S.TRIGGERED, "cancel"): _S.CANCELLED,
    (_S.TRIGGERED, "expire"): _S.EXPIRED,
    (_S.PARTIALLY_FILLED, "partial"): _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, "fill"): _S.FILLED,
    (_S.PARTIALLY_FILLED, "cancel"): _S.CANCELLED,
    (_S.PARTIALLY_FILLED, "expire"): _S.EXPIRED,
}


class Order(msgspec.Struct, kw_only=True):
    """An order as the venue holds it. ``qty`` and ``filled`` are exact.

    ``filled_value`` is the exact sum of ``qty * price`` over its fills, so
    :attr:`avg_price` is the order's VWAP.
    """

    order_id: int
    symbol: str
    sid: int
    side: int
    qty: Fraction
    type: OrderType = "market"
    price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = "GTC"
    expire_ns: int | None = None
    reduce_only: bool = False
    post_only: bool = False
    client_id: str | None = None
    created_ns: int = 0
    state: OrderState = OrderState.NEW
    filled: Fraction = Fraction(0)
    filled_value: Fraction = Fraction(0)
    arrived_ns: int | None = None

    @property
    def remaining(self) -> Fraction:
        return self.qty - self.filled

    @property
    def side_name(self) -> str:
        return "buy" if self.side > 0 else "sell"

    @property
    def is_open(self) -> bool:
        return self.state in (_S.ACCEPTED, _S.TRIGGERED, _S.PARTIALLY_FILLED)

    @property
    def avg_price(self) -> float | None:
        """The volume-weighted average fill price, or None before the first fill."""
        return float(self.filled_value / self.filled) if self.filled else None

    @property
    def is_stop(self) -> bool:
        """True for a stop or stop-limit order not yet triggered."""
        return self.type in ("stop", "stop_limit") and self.state is _S.ACCEPTED

    @property
    def limit(self) -> Fraction | None:
        """The exact limit price (None for market and stop orders)."""
        return exact(self.price) if self.price is not None and self.type in ("limit", "stop_limit") else None


def transition(order: Order, event: str) -> OrderState:
    """Move ``order`` along the table.

    Raises:
        ValueError: naming the order, the event and the state it is in.
    """
    new = TRANSITIONS.get((order.state, event))
    if new is None:
        raise ValueError(f"cannot {event} order {order.order_id} in state {order.state.name}")
    order.state = new
    return new


def on_tick(price: float, tick: float | None) -> bool:
    """True when ``price`` is an exact multiple of ``tick`` (always, with no tick)."""
    if tick is None:
        return True
    return (exact(price) / exact(tick)).denominator == 1


def _bad_price(px: float | None) -> bool:
    return px is None or not math.isfinite(px) or px <= 0


def check_static(order: Order, inst: Instrument | None) -> str | None:
    """The checks that need only the order and its instrument; floors ``qty`` to the lot.

    Returns:
        A reject reason (see the module table), or None; on None ``order.qty`` is a
        whole number of lots.
    """
    if inst is None:
        return "unknown_symbol"
    if order.type not in ORDER_TYPES:
        return "unknown_order_type"
    if order.tif not in TIFS:
        return "unknown_tif"
    if not order.qty > 0:
        return "non_positive_qty"
    lot = exact(inst.lot)
    lots = math.floor(order.qty / lot)
    if lots == 0:
        return "qty_below_lot"
    order.qty = lots * lot
    if order.type in ("limit", "stop_limit"):
        if order.price is None:
            return "missing_price"
        if _bad_price(order.price):
            return "invalid_price"
        if not on_tick(order.price, inst.tick):
            return "price_off_tick"
    if order.type in ("stop", "stop_limit"):
        if order.stop_price is None:
            return "missing_stop_price"
        if _bad_price(order.stop_price):
            return "invalid_stop_price"
        if not on_tick(order.stop_price, inst.tick):
            return "stop_price_off_tick"
    # A price the order type does not use would be ignored: a "limit" sent as a market order fills anywhere.
    if order.price is not None and order.type in ("market", "stop"):
        return "price_not_used"
    if order.stop_price is not None and order.type in ("market", "limit"):
        return "stop_price_not_used"
    if order.post_only and order.type in ("market", "stop"):
        return "post_only_would_take"
    if order.tif == "GTD" and order.type != "market" and order.expire_ns is None:
        return "gtd_without_expiry"
    return None
