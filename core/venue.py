"""The simulated venue, shared by replay and live paper trading (DESIGN.md §5).

Foundation semantics (profile ``backtest``): a market order fills at once, whole
quantity, at the last quote (ask for a buy, bid for a sell), however old, else at
the last trade; the fill's time is the clock's now; the fee is taker bps of
notional. Reduce-only orders are clipped to close the position, or rejected when
there is nothing to close. Funding settles at each tape ``funding`` row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import msgspec
from perpsim.core.clock import Clock
from perpsim.core.config import VenueConfig
from perpsim.core.events import RunEvent
from perpsim.core.instruments import Instrument, exact
from perpsim.core.ledger import Ledger
from perpsim.core.market import MarketState
from perpsim.core.orders import Order, transition
from perpsim.core.outbox import Outbox

__all__ = ["Fill", "OrderUpdate", "SimVenue"]

_BPS = Fraction(1, 10_000)


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """What the strategy's ``on_fill`` receives."""

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
    """What the strategy's ``on_order`` receives: accepted, rejected, cancelled, expired."""

    order_id: int
    client_id: str | None
    symbol: str
    status: str
    reason: str | None
    ts: int


Listener = Callable[[Fill | OrderUpdate], None]


class SimVenue:
    """Matches orders against market state and books the results in the ledger."""

    def __init__(
        self,
        cfg: VenueConfig,
        market: MarketState,
        ledger: Ledger,
        instruments: dict[str, Instrument],
        outbox: Outbox,
        listener: Listener,
        clock: Clock,
    ) -> None:
        self.cfg = cfg
        self.market = market
        self.ledger = ledger
        self.instruments = instruments
        self.outbox = outbox
        self.listener = listener
        self.clock = clock
        self.orders: dict[int, Order] = {}
        # active[sid]: the symbol has resting or triggerable orders, so market rows must reach the venue
        self.active: list[bool] = []
        self.taker_rate = exact(cfg.taker_bps) * _BPS
        self.maker_rate = exact(cfg.maker_bps) * _BPS
        self.fills = 0

    # -- orders -----------------------------------------------------------------

    def submit(self, order: Order, now: int) -> None:
        """Accept or reject ``order``, then fill what can fill now."""
        reason = self._admit(order)
        if reason is not None:
            self._reject(order, reason, now)
            return
        transition(order, "accept")
        self.outbox.emit(
            "order",
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            side=order.side_name,
            qty=float(order.qty),
            price=order.price,
            reason="reduce_only" if order.reduce_only else None,
            text=f"{order.type} {order.tif}",
        )
        self._notify_order(order, "accepted", None, now)
        if order.type == "market":
            self._fill_market(order, now)
        else:  # resting order types arrive with the venue issue
            self._cancel(order, "unsupported_order_type", now, kind="cancel")

    def cancel(self, order_id: int, now: int) -> bool:
        order = self.orders.get(order_id)
        if order is None or not order.is_open:
            return False
        self._cancel(order, "requested", now, kind="cancel")
        return True

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    # -- market rows (called by the engine only when active[sid]) ----------------

    def add_symbol(self, sid: int) -> None:
        while len(self.active) <= sid:
            self.active.append(False)

    def on_trade(self, sid: int, price: float, size: float, side: int, now: int) -> None:
        """A trade printed: resting limits may fill, stops may trigger."""

    def on_quote(self, sid: int, now: int) -> None:
        """The top of book changed."""

    def on_book(self, sid: int, now: int) -> None:
        """A book message finished applying."""

    def on_mark(self, sid: int, price: float, now: int) -> None:
        """A mark price arrived (mark-triggered stops)."""

    # -- funding ----------------------------------------------------------------

    def settle_funding(self, sid: int, rate: float, ts: int, recv_ts: int) -> RunEvent | None:
        """Settle a tape ``funding`` row: ``qty * contract_size * venue_mark * rate``, longs pay."""
        symbol = self.market.names[sid]
        mark = self.market.venue_mark(sid)
        if mark is None or rate != rate:
            return None
        amount = self.ledger.book_funding(symbol, exact(mark), exact(rate))
        if amount is None:
            return None
        return self.outbox.emit(
            "funding",
            ts,
            recv_ts,
            symbol=symbol,
            price=mark,
            amount=amount,
            cash_after=self.ledger.cash,
            position_after=float(self.ledger.qty(symbol)),
            text=repr(rate),
        )

    # -- internals --------------------------------------------------------------

    def _admit(self, order: Order) -> str | None:
        inst = self.instruments.get(order.symbol)
        if inst is None:
            return "unknown_symbol"
        if order.qty <= 0:
            return "non_positive_qty"
        lot = exact(inst.lot)
        lots = math.floor(order.qty / lot)
        if lots == 0:
            return "qty_below_lot"
        order.qty = lots * lot
        if order.reduce_only:
            pos = self.ledger.qty(order.symbol)
            if pos == 0 or (pos > 0) == (order.side > 0):
                return "reduce_only_nothing_to_close"
            order.qty = min(order.qty, abs(pos))
        if order.type == "market" and self._touch(order) is None:
            return "no_price"
        return None

    def _touch(self, order: Order) -> float | None:
        m, sid = self.market, order.sid
        px = m.ask[sid] if order.side > 0 else m.bid[sid]
        if px == px:
            return px
        px = m.last_px[sid]
        return px if px == px else None

    def _fill_market(self, order: Order, now: int) -> None:
        px = self._touch(order)
        assert px is not None  # admitted orders have a price
        self._book(order, order.remaining, px, "taker", now)

    def _book(self, order: Order, qty: Fraction, px: float, liquidity: str, now: int) -> None:
        inst = self.instruments[order.symbol]
        rate = self.taker_rate if liquidity == "taker" else self.maker_rate
        signed = qty if order.side > 0 else -qty
        b = self.ledger.book_fill(order.symbol, signed, exact(px), rate, exact(inst.contract_size), now)
        order.filled += qty
        transition(order, "fill" if order.remaining == 0 else "partial")
        if not order.is_open:
            self.orders.pop(order.order_id, None)
        else:
            self.orders[order.order_id] = order
        self.fills += 1
        pos_after = float(b.position_after)
        self.outbox.emit(
            "fill",
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            side=order.side_name,
            qty=float(qty),
            price=px,
            liquidity=liquidity,
            fee=b.fee,
            amount=b.realized,
            cash_after=b.cash_after,
            position_after=pos_after,
        )
        self.listener(
            Fill(
                order_id=order.order_id,
                client_id=order.client_id,
                symbol=order.symbol,
                side=order.side_name,
                qty=float(qty),
                price=px,
                liquidity=liquidity,
                fee=b.fee,
                realized=b.realized,
                position_after=pos_after,
                ts=now,
            )
        )

    def reject(self, order: Order, reason: str, now: int) -> None:
        """Refuse an order before it reaches the book (pre-trade checks, dry run)."""
        self._reject(order, reason, now)

    def _reject(self, order: Order, reason: str, now: int) -> None:
        transition(order, "reject")
        self.outbox.emit(
            "reject",
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            side=order.side_name,
            qty=float(order.qty),
            price=order.price,
            reason=reason,
        )
        self._notify_order(order, "rejected", reason, now)

    def _cancel(self, order: Order, reason: str, now: int, kind: str) -> None:
        transition(order, "cancel" if kind == "cancel" else "expire")
        self.orders.pop(order.order_id, None)
        self.outbox.emit(
            kind,
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            side=order.side_name,
            qty=float(order.remaining),
            reason=reason,
        )
        self._notify_order(order, "cancelled" if kind == "cancel" else "expired", reason, now)

    def _notify_order(self, order: Order, status: str, reason: str | None, now: int) -> None:
        self.listener(
            OrderUpdate(
                order_id=order.order_id,
                client_id=order.client_id,
                symbol=order.symbol,
                status=status,
                reason=reason,
                ts=now,
            )
        )
