"""Orders and their lifecycle, as a table (STYLE habit 4).

``TRANSITIONS[(state, event)]`` is the only place that says what an order may do;
the venue checks it before changing anything, so a refused event changes nothing.
"""

from __future__ import annotations

from enum import Enum
from fractions import Fraction
from typing import Final, Literal

import msgspec

__all__ = ["TRANSITIONS", "Order", "OrderState", "OrderType", "TimeInForce", "transition"]

OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["GTC", "IOC", "FOK", "GTD"]


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
    """An order as the venue holds it. ``qty`` and ``filled`` are exact."""

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

    @property
    def remaining(self) -> Fraction:
        return self.qty - self.filled

    @property
    def side_name(self) -> str:
        return "buy" if self.side > 0 else "sell"

    @property
    def is_open(self) -> bool:
        return self.state in (_S.ACCEPTED, _S.TRIGGERED, _S.PARTIALLY_FILLED)


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
