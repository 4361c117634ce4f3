"""The simulated venue, shared by replay and live paper trading (DESIGN.md §5, issue 4).

Foundation semantics (profile ``backtest``, unchanged): a market order fills at
once, whole quantity, at the last quote (ask for a buy, bid for a sell), however
old, else at the last trade; the fill's time is the clock's now; the fee is taker
bps of notional. Reduce-only orders are clipped to close the position, or rejected
when there is nothing to close. Funding settles at each tape ``funding`` row.

On top of that, each concept in its own module:

- order types, time in force, reject reasons and the lifecycle table:
  :mod:`perpsim.core.orders` (off-tick prices are rejected, not snapped);
- where taking orders fill (L2 book walk, one fill per level; the touch rule
  without a book; ``cap_to_top``, ``slippage_bps``): :mod:`perpsim.core.matching`;
- queue position of resting limits: :mod:`perpsim.core.queue`;
- latency of entry, cancel and responses: :mod:`perpsim.core.latency`;
- maker/taker fees by tier: :mod:`perpsim.core.fees`;
- funding schedules: :mod:`perpsim.core.funding`;
- cross margin, liquidation price, liquidation: :mod:`perpsim.core.margin`.

Resting orders. A limit order that is not (wholly) marketable on arrival rests
(GTC, GTD) and is filled as a **maker at its limit price** when the market reaches
it: a trade at or through its price (``queue = "none"``; with a queue model, a
trade at its price first works through the queue ahead), or the opposite side of
the book/quote at or through its price. Stops are armed until the trigger price
(the trade price; the mark with ``stop_trigger = "mark"``, or trades while the
symbol has had no mark row) reaches ``stop_price``: a buy stop when the price is
``>= stop_price``, a sell stop ``<=``; a stop becomes a market order and a stop-limit
a limit order, acting on the market as it is at that row. A reduce-only resting
order is clipped at each fill to what still reduces the position and cancelled
(``reduce_only_nothing_to_close``) when nothing does.

Run events: ``order`` (accepted), ``reject``, ``fill`` (``liquidity`` maker/taker;
maker fills caused by a tape row name it in ``text``), ``cancel`` (``reason``:
``requested``, ``ioc_remainder``, ``fok_not_filled``, ``no_liquidity``,
``cap_to_top``, ``post_only_would_take``, ``reduce_only_nothing_to_close``,
``insufficient_margin``, ``liquidation``), ``expire`` (GTD), ``trigger`` (a stop's
trigger, naming the row), ``queue`` (with a queue model), ``cancel_reject`` (a
cancel that arrived after the order closed; only with latency), ``funding``,
``liquidation``. A tape row is named ``<kind> seq=<seq> clock=<clock ns>``
(``seq=-1``: the row has none).

The engine calls ``on_trade``/``on_quote``/``on_book``/``on_mark`` for a symbol only
while :attr:`SimVenue.active` is True for it: the symbol has open orders, or a
position while liquidation is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from itertools import chain
from typing import Any, Final

from perpsim.core.clock import Clock, TimerHandle
from perpsim.core.config import VenueConfig, check_venue
from perpsim.core.events import RunEvent
from perpsim.core.fees import FeeSchedule
from perpsim.core.funding import FundingClock, FundingPayment
from perpsim.core.instruments import Instrument, exact, settlement_currency
from perpsim.core.latency import LatencyModel
from perpsim.core.ledger import Ledger, to_units
from perpsim.core.margin import Margin
from perpsim.core.market import MarketState
from perpsim.core.matching import Take, book_of, crossed, take, touch, visible
from perpsim.core.orders import Order, check_static, transition
from perpsim.core.outbox import Outbox
from perpsim.core.queue import QueueModel, QueueState
from perpsim.core.updates import Fill, OrderUpdate, Update

__all__ = ["VENUE_PRIORITY", "Fill", "OrderUpdate", "SimVenue"]

_BPS: Final = Fraction(1, 10_000)
_ZERO: Final = Fraction(0)
VENUE_PRIORITY: Final = 90
"""Timer priority of order arrivals, cancels, responses and GTD expiries: after the engine's jobs."""


Listener = Callable[[Update], None]


def _row(kind: str, seq: int, now: int) -> str:
    return f"{kind} seq={seq} clock={now}"


class SimVenue:
    """Matches orders against market state and books the results in the ledger.

    Args:
        cfg: the venue's terms.
        market, ledger, instruments, outbox: shared with the engine.
        listener: receives :class:`Fill`, :class:`OrderUpdate` and scheduled
            :class:`~perpsim.core.funding.FundingPayment` notifications for the strategy.
        clock: the run's clock (GTD expiry, latency, funding schedules).
        seed: the run's seed; each random model derives its own generator from it.
        flush: called after each venue timer callback so notifications reach the strategy.
    """

    def __init__(
        self,
        cfg: VenueConfig,
        market: MarketState,
        ledger: Ledger,
        instruments: dict[str, Instrument],
        outbox: Outbox,
        listener: Listener,
        clock: Clock,
        *,
        seed: int = 0,
        flush: Callable[[], None] | None = None,
    ) -> None:
        check_venue(cfg)
        self.cfg = cfg
        self.market = market
        self.ledger = ledger
        self.instruments = instruments
        self.outbox = outbox
        self.listener = listener
        self.clock = clock
        self._flush = flush or _nothing
        self.orders: dict[int, Order] = {}  # open orders, by id, in acceptance order
        # active[sid]: market rows of the symbol must reach the venue (engine hot path)
        self.active: list[bool] = []
        self.resting: list[list[Order]] = []  # per sid: resting limits and armed stops, arrival order
        self.fees = FeeSchedule(cfg)
        self.taker_rate = exact(cfg.taker_bps) * _BPS
        self.maker_rate = exact(cfg.maker_bps) * _BPS
        self._liq_rate = exact(cfg.liquidation_fee_bps) * _BPS
        self.latency = LatencyModel(cfg, seed)
        self.queue = QueueModel(cfg.queue, seed)
        self.margin = Margin(cfg, ledger, market, instruments)
        self._watch = self.margin.watch  # aliases read on the hot path (lists only ever grow)
        self._mark_px = market.mark_px
        self.funding = FundingClock(cfg, clock, market.names, instruments, self._settle_scheduled)
        self._queues: dict[int, QueueState] = {}
        # orders that rest facing liquidity they already took (fills do not consume the book):
        # the book crossing them fills them only after it has uncrossed once
        self._stale: dict[int, bool] = {}
        self._gtd: dict[int, TimerHandle] = {}
        self._inflight: dict[int, Order] = {}
        self._timers = 0
        self._stops_on_trade = cfg.stop_trigger == "trade"
        self.fills = 0
        self.liquidations = 0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Called once when the run starts (the clock is at the first row): funding timers."""
        self.funding.start()
        self.margin.arm()

    def add_symbol(self, sid: int) -> None:
        while len(self.active) <= sid:
            self.active.append(False)
            self.resting.append([])
        self.margin.add_symbol(sid)
        self.funding.add_symbol(sid)

    # -- orders -----------------------------------------------------------------

    def submit(self, order: Order, now: int) -> None:
        """Send ``order``: it reaches the venue now, or after the entry latency."""
        if self.latency.requests_enabled:
            self._inflight[order.order_id] = order
            self._timer(self.latency.entry(now), f"venue:arrive:{order.order_id}", lambda t: self._arrive(order, t))
        else:
            self._arrive(order, now)

    def cancel(self, order_id: int, now: int) -> bool:
        """Request a cancel; True when the order is open (or on its way) so the request was sent."""
        order = self.orders.get(order_id)
        if self.latency.requests_enabled:
            target = order or self._inflight.get(order_id)
            if target is None:
                return False
            self._timers += 1
            name = f"venue:cancel:{order_id}:{self._timers}"
            self._timer(self.latency.cancel(now), name, lambda t: self._cancel_arrives(target, t))
            return True
        if order is None or not order.is_open:
            return False
        self._cancel(order, "requested", now)
        return True

    def reject(self, order: Order, reason: str, now: int) -> None:
        """Refuse an order before it is sent (pre-trade checks, dry run): no latency."""
        self._reject(order, reason, now, remote=False)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (accepted at the venue), oldest first; orders still in flight are not listed."""
        return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def working(self, symbol: str, side: int) -> Fraction:
        """What ``symbol``'s orders on ``side`` that are open or in flight could still add
        to the position: their unfilled quantity, reduce-only orders aside."""
        total = Fraction(0)
        for o in chain(self._inflight.values(), self.orders.values()):
            if o.symbol == symbol and o.side == side and not o.reduce_only:
                total += o.remaining
        return total

    def has_orders(self, sid: int) -> bool:
        """True when the symbol has resting limits or armed stops (its rows can fill or trigger)."""
        return bool(self.resting[sid])

    def liquidation_band(self, sid: int) -> tuple[float, float]:
        """Venue marks of ``sid`` that cannot liquidate (exclusive bounds; others' marks held).

        For a driver that skips rows in bulk while a symbol is active only for the
        liquidation watch (``not has_orders(sid)``): it may skip while every mark-moving
        row (mark rows, else trades, else quote mids) stays strictly inside the band.
        """
        return self.margin.band(sid)

    def liq_price(self, symbol: str) -> float | None:
        """The liquidation price of ``symbol``'s position (other marks held), or None."""
        px = self.margin.liq_price(symbol)
        return None if px is None else float(px)

    # -- market rows (called by the engine only when active[sid]) ----------------

    # Hot path: these run for every row of an active symbol. Each is a few list lookups
    # unless the symbol has resting orders or its mark moves under an open position;
    # ``active`` is refreshed where orders and positions change, not here.

    def on_trade(self, sid: int, price: float, size: float, side: int, now: int, seq: int = -1) -> None:
        """A trade printed: stops may trigger, resting limits may fill, the mark may move."""
        if self.resting[sid]:
            self._trade_hits_orders(sid, price, size, side, now, seq)
        mark_px = self._mark_px[sid]
        if self._watch[sid] and mark_px != mark_px and self.margin.breached(sid, price):
            self._liquidate(now, _row("trade", seq, now))

    def on_quote(self, sid: int, now: int, seq: int = -1) -> None:
        """The top of book changed: without an L2 book it is the liquidity resting orders see."""
        m = self.market
        if self.resting[sid] and book_of(m, sid) is None:
            self._levels_changed(sid, now, "quote", seq)
        if self._watch[sid] and m.mark_px[sid] != m.mark_px[sid] and m.last_px[sid] != m.last_px[sid]:
            b, a = m.bid[sid], m.ask[sid]
            if b == b and a == a and self.margin.breached(sid, (b + a) / 2):
                self._liquidate(now, _row("quote", seq, now))

    def on_book(self, sid: int, now: int, seq: int = -1) -> None:
        """A book message finished applying."""
        if self.resting[sid] and book_of(self.market, sid) is not None:
            self._levels_changed(sid, now, "book", seq)

    def on_mark(self, sid: int, price: float, now: int, seq: int = -1) -> None:
        """A mark price arrived: mark-triggered stops, the liquidation check."""
        lst = self.resting[sid]
        if lst and not self._stops_on_trade:
            px = exact(price)
            for order in list(lst):
                if order.is_open and order.is_stop and self._stop_hit(order, px):
                    self._trigger(order, now, _row("mark", seq, now))
        if self._watch[sid] and self.margin.breached(sid, price):
            self._liquidate(now, _row("mark", seq, now))

    # -- funding ----------------------------------------------------------------

    def settle_funding(self, sid: int, rate: float, ts: int, recv_ts: int) -> RunEvent | None:
        """Settle a tape ``funding`` row: ``qty * contract_size * venue_mark * rate``, longs pay.

        Returns None (nothing settled) without a position or mark, or when funding comes
        from a schedule (``venue.funding`` is not ``tape``).
        """
        if self.cfg.funding != "tape":
            return None
        return self._settle(sid, rate, ts, recv_ts)

    def _settle(self, sid: int, rate: float, ts: int, recv_ts: int) -> RunEvent | None:
        symbol = self.market.names[sid]
        mark = self.market.venue_mark(sid)
        if mark is None or rate != rate:
            return None
        amount = self.ledger.book_funding(symbol, exact(mark), exact(rate))
        if amount is None:
            return None
        ev = self.outbox.emit(
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
        self.margin.arm()
        if self.margin.watch[sid] and self.margin.slack() <= 0:
            self._liquidate(ts, f"funding clock={ts}")
        return ev

    def _settle_scheduled(self, sid: int, rate: float, now: int) -> None:
        ev = self._settle(sid, rate, now, now)
        if ev is not None and ev.amount is not None and ev.price is not None:
            pay = FundingPayment(symbol=self.market.names[sid], rate=rate, mark=ev.price, amount=ev.amount, ts=now)
            self._notify(pay, now)
        self._flush()

    # -- arrival and admission ----------------------------------------------------

    def _arrive(self, order: Order, now: int) -> None:
        self._inflight.pop(order.order_id, None)
        order.arrived_ns = now
        reason = self._admit(order, now)
        if reason is not None:
            self._reject(order, reason, now)
            return
        transition(order, "accept")
        self.orders[order.order_id] = order
        text = f"{order.type} {order.tif}"
        if order.stop_price is not None and order.type in ("stop", "stop_limit"):
            text += f" stop={order.stop_price!r}"
        if order.post_only:
            text += " post_only"
        self._order_event(
            "order",
            order,
            now,
            qty=float(order.qty),
            price=order.price,
            reason="reduce_only" if order.reduce_only else None,
            text=text,
        )
        self._notify_order(order, "accepted", None, now)
        if order.tif == "GTD" and order.type != "market" and order.expire_ns is not None:
            oid = order.order_id
            self._gtd[oid] = self._timer(order.expire_ns, f"venue:gtd:{oid}", lambda t: self._expire(oid, t))
        if order.type == "market":
            self._take(order, now)
        elif order.type == "limit":
            self._work_limit(order, now)
        else:
            self.resting[order.sid].append(order)
            self.active[order.sid] = True

    def _admit(self, order: Order, now: int) -> str | None:
        inst = self.instruments.get(order.symbol)
        reason = check_static(order, inst)
        if reason is not None or inst is None:
            return reason
        if order.tif == "GTD" and order.type != "market" and order.expire_ns is not None and order.expire_ns <= now:
            return "gtd_expire_in_past"
        if order.reduce_only:
            pos = self.ledger.qty(order.symbol)
            if pos == 0 or (pos > 0) == (order.side > 0):
                return "reduce_only_nothing_to_close"
            order.qty = min(order.qty, abs(pos))
        currency = settlement_currency(inst)
        if self.ledger.currency is not None and self.ledger.currency != currency:
            return "settlement_currency_mismatch"
        sid, side = order.sid, order.side
        ref: Fraction
        if order.type == "market":
            t = touch(self.market, sid, side)
            if t is None:
                return "no_liquidity" if book_of(self.market, sid) is not None else "no_price"
            ref = exact(t[0])
        elif order.type == "stop":
            ref = exact(order.stop_price)
        else:
            ref = exact(order.price)
        if not order.reduce_only and inst.min_notional > 0:
            cs = exact(inst.contract_size)
            notional = order.qty * cs if inst.kind == "inverse" else order.qty * cs * ref
            if notional < exact(inst.min_notional):
                return "below_min_notional"
        if order.type in ("stop", "stop_limit"):
            last = self._trigger_price(sid)
            if last is not None and self._stop_hit(order, exact(last)):
                return "stop_would_trigger"
        elif order.type == "limit" and order.post_only and self._marketable(sid, side, ref):
            return "post_only_would_take"
        if self.margin.check_orders and order.type in ("market", "limit"):
            need = self.margin.order_margin(order, order.qty, ref)
            if need > 0 and need > self.margin.free(list(self.orders.values())):
                return "insufficient_margin"
        if self.ledger.currency is None:
            self.ledger.currency = currency
        return None

    def _trigger_price(self, sid: int) -> float | None:
        m = self.market
        if self._stops_on_trade or m.mark_px[sid] != m.mark_px[sid]:
            px = m.last_px[sid]
            return px if px == px else None
        return m.venue_mark(sid)

    @staticmethod
    def _stop_hit(order: Order, px: Fraction) -> bool:
        stop = exact(order.stop_price)
        return px >= stop if order.side > 0 else px <= stop

    def _marketable(self, sid: int, side: int, limit: Fraction) -> bool:
        t = touch(self.market, sid, side)
        if t is None:
            return False
        px = exact(t[0])
        return px <= limit if side > 0 else px >= limit

    # -- taking and resting ---------------------------------------------------------

    def _cross(self, order: Order, limit: Fraction | None, now: int) -> Take | None:
        """Fill what the market offers up to ``limit`` (None: any price), as a taker.

        Returns what was taken, or None when the order ended here (a FOK that could not
        fill whole is cancelled; a fill can end it).
        """
        inst = self.instruments[order.symbol]
        tk = take(self.market, order.sid, order.side, order.remaining, limit, self.cfg, inst)
        if order.tif == "FOK" and tk.qty < order.remaining:
            self._cancel(order, "fok_not_filled", now)
            return None
        for px, q in tk.fills:
            if not self._fill(order, q, px, "taker", now) or not order.is_open:
                return None  # a reduce-only order that closed its position is cancelled mid-walk
        return tk

    def _take(self, order: Order, now: int) -> None:
        """A market order (or triggered stop): take what the market offers, cancel the rest."""
        tk = self._cross(order, None, now)
        if tk is not None and order.is_open:
            self._cancel(order, tk.short or "no_liquidity", now)

    def _work_limit(self, order: Order, now: int) -> None:
        """A limit order (or triggered stop-limit) on arrival: take what is marketable, rest the rest."""
        lim = order.limit
        assert lim is not None
        if self._marketable(order.sid, order.side, lim):
            if order.post_only:
                self._cancel(order, "post_only_would_take", now)
                return
            if self._cross(order, lim, now) is None:
                return
        if not order.is_open:
            return
        if order.tif == "FOK":
            self._cancel(order, "fok_not_filled", now)
        elif order.tif == "IOC":
            self._cancel(order, "ioc_remainder", now)
        else:
            self._rest(order, now)

    def _rest(self, order: Order, now: int) -> None:
        self.resting[order.sid].append(order)
        self.active[order.sid] = True
        lim = order.limit
        assert lim is not None
        if crossed(self.market, order.sid, order.side, lim):
            self._stale[order.order_id] = True
        if self.queue.enabled:
            lim = order.limit
            assert lim is not None
            vis = visible(self.market, order.sid, order.side, lim)
            st = self.queue.join(vis)
            self._queues[order.order_id] = st
            seen = "unknown" if vis is None else repr(float(vis))
            self._queue_event(order, st, None, "join", f"arrival clock={now} visible={seen}", now)

    def _trigger(self, order: Order, now: int, cause: str) -> None:
        self._unrest(order)
        transition(order, "trigger")
        self._order_event(
            "trigger",
            order,
            now,
            qty=float(order.remaining),
            price=order.stop_price,
            text=cause,
        )
        self._notify_order(order, "triggered", None, now)
        if self.margin.check_orders and not order.reduce_only:
            lim = order.limit
            if lim is None:
                t = touch(self.market, order.sid, order.side)
                lim = exact(t[0]) if t is not None else None
            others = [o for o in self.orders.values() if o is not order]
            if lim is not None:
                need = self.margin.order_margin(order, order.remaining, lim)
                if need > 0 and need > self.margin.free(others):
                    self._cancel(order, "insufficient_margin", now)
                    return
        if order.type == "stop":
            self._take(order, now)
        else:
            self._work_limit(order, now)

    # -- resting orders against market rows ---------------------------------------

    def _trade_hits_orders(self, sid: int, price: float, size: float, side: int, now: int, seq: int) -> None:
        px = exact(price)
        budget = exact(size)
        mark_less = self.market.mark_px[sid] != self.market.mark_px[sid]
        for order in list(self.resting[sid]):
            if not order.is_open:
                continue
            if order.is_stop:
                if (self._stops_on_trade or mark_less) and self._stop_hit(order, px):
                    self._trigger(order, now, _row("trade", seq, now))
                continue
            lim = order.limit
            assert lim is not None and order.price is not None
            if px < lim if order.side > 0 else px > lim:
                self._fill(order, order.remaining, order.price, "maker", now, _row("trade", seq, now))
                continue
            if px != lim:
                continue
            if not self.queue.enabled:
                self._fill(order, order.remaining, order.price, "maker", now, _row("trade", seq, now))
                continue
            if side == order.side:
                continue
            st = self._queues.get(order.order_id)
            if st is None:
                continue
            before = st.ahead
            got = self.queue.on_trade(st, exact(size))
            if st.ahead != before:
                self._queue_event(order, st, before, "trade", _row("trade", seq, now), now)
            if got > 0 and budget > 0:
                lot = exact(self.instruments[order.symbol].lot)
                q = math.floor(min(got, budget, order.remaining) / lot) * lot
                if q > 0:
                    budget -= q
                    self._fill(order, q, order.price, "maker", now, _row("trade", seq, now))

    def _levels_changed(self, sid: int, now: int, kind: str, seq: int) -> None:
        m = self.market
        for order in list(self.resting[sid]):
            if not order.is_open or order.is_stop:
                continue
            lim = order.limit
            assert lim is not None and order.price is not None
            if crossed(m, sid, order.side, lim):
                if order.order_id not in self._stale:
                    self._fill(order, order.remaining, order.price, "maker", now, _row(kind, seq, now))
                continue
            self._stale.pop(order.order_id, None)
            if self.queue.enabled:
                st = self._queues.get(order.order_id)
                if st is None:
                    continue
                before = st.ahead
                self.queue.on_level(st, visible(m, sid, order.side, lim))
                if st.ahead != before:
                    self._queue_event(order, st, before, "level", _row(kind, seq, now), now)

    def _queue_event(
        self, order: Order, st: QueueState, before: Fraction | None, reason: str, cause: str, now: int
    ) -> None:
        def show(x: Fraction | None) -> str:
            return "unknown" if x is None else repr(float(x))

        self._order_event(
            "queue",
            order,
            now,
            qty=None if st.ahead is None else float(st.ahead),
            price=order.price,
            reason=reason,
            text=f"{cause} ahead={show(before)}->{show(st.ahead)}",
        )

    # -- booking ------------------------------------------------------------------

    def _fill(self, order: Order, qty: Fraction, px: float, liquidity: str, now: int, text: str | None = None) -> bool:
        """Book a fill of ``qty`` at ``px``; False when the order closed without filling."""
        symbol = order.symbol
        if order.reduce_only:
            pos = self.ledger.qty(symbol)
            room = abs(pos) if pos != 0 and (pos > 0) != (order.side > 0) else _ZERO
            if room == 0:
                self._cancel(order, "reduce_only_nothing_to_close", now)
                return False
            qty = min(qty, room)
        inst = self.instruments[symbol]
        inverse = inst.kind == "inverse"
        cs = exact(inst.contract_size)
        ex = exact(px)
        rate = self.fees.rate(liquidity, now)
        signed = qty if order.side > 0 else -qty
        b = self.ledger.book_fill(symbol, signed, ex, rate, cs, now, inverse)
        self.fees.record(now, qty * cs / ex if inverse else qty * cs * ex)
        order.filled += qty
        order.filled_value += qty * ex
        transition(order, "fill" if order.remaining == 0 else "partial")
        if not order.is_open:
            self._close(order)
        self.fills += 1
        pos_after = float(b.position_after)
        self.outbox.emit(
            "fill",
            now,
            symbol=symbol,
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
            text=text,
        )
        self._notify(
            Fill(
                order_id=order.order_id,
                client_id=order.client_id,
                symbol=symbol,
                side=order.side_name,
                qty=float(qty),
                price=px,
                liquidity=liquidity,
                fee=b.fee,
                realized=b.realized,
                position_after=pos_after,
                ts=now,
            ),
            now,
        )
        self.margin.arm()
        self._refresh(order.sid)
        if order.reduce_only and order.is_open and b.position_after == 0:
            self._cancel(order, "reduce_only_nothing_to_close", now)
        return True

    def _liquidate(self, now: int, cause: str) -> None:
        """Close every position at its mark if equity is at or below maintenance margin (exact)."""
        margin = self.margin
        equity, maint = margin.equity(), margin.maintenance()
        if equity > maint:
            margin.arm()  # the float check was within its tolerance only
            return
        self.liquidations += 1
        for order in list(self.orders.values()):
            self._cancel(order, "liquidation", now)
        text = f"equity_units={to_units(equity)} maintenance_units={to_units(maint)} cause={cause}"
        for symbol, pos in list(self.ledger.positions.items()):
            if pos.qty == 0:
                continue
            sid = self.market.ids[symbol]
            mark = self.market.venue_mark(sid)
            if mark is None:
                continue
            qty = pos.qty
            b = self.ledger.book_fill(
                symbol, -qty, exact(mark), self._liq_rate, pos.contract_size, now, pos.inverse, self.ledger.cash
            )
            side = "sell" if qty > 0 else "buy"
            self.outbox.emit(
                "liquidation",
                now,
                symbol=symbol,
                side=side,
                qty=float(abs(qty)),
                price=mark,
                fee=b.fee,
                amount=b.realized,
                cash_after=b.cash_after,
                position_after=float(b.position_after),
                reason="maintenance_margin",
                text=text,
            )
            fill = Fill(
                order_id=0,
                client_id=None,
                symbol=symbol,
                side=side,
                qty=float(abs(qty)),
                price=mark,
                liquidity="liquidation",
                fee=b.fee,
                realized=b.realized,
                position_after=float(b.position_after),
                ts=now,
            )
            self._notify(fill, now)
        margin.arm()
        for sid in range(len(self.active)):
            self._refresh(sid)

    # -- closing orders -----------------------------------------------------------

    def _reject(self, order: Order, reason: str, now: int, remote: bool = True) -> None:
        transition(order, "reject")
        self._order_event(
            "reject",
            order,
            now,
            qty=float(order.qty),
            price=order.price,
            reason=reason,
        )
        self._notify_order(order, "rejected", reason, now, remote)

    def _cancel(self, order: Order, reason: str, now: int, kind: str = "cancel") -> None:
        transition(order, "cancel" if kind == "cancel" else "expire")
        self._close(order)
        self._order_event(
            kind,
            order,
            now,
            qty=float(order.remaining),
            reason=reason,
        )
        self._notify_order(order, "cancelled" if kind == "cancel" else "expired", reason, now)

    def _cancel_arrives(self, order: Order, now: int) -> None:
        if order.is_open:
            self._cancel(order, "requested", now)
            self._refresh(order.sid)
            return
        self.outbox.emit(
            "cancel_reject",
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            reason="too_late",
            text=order.state.value,
        )
        update = OrderUpdate(
            order_id=order.order_id,
            client_id=order.client_id,
            symbol=order.symbol,
            status="cancel_rejected",
            reason="too_late",
            ts=now,
        )
        self._notify(update, now)

    def _expire(self, order_id: int, now: int) -> None:
        self._gtd.pop(order_id, None)
        order = self.orders.get(order_id)
        if order is not None and order.is_open:
            self._cancel(order, "gtd", now, kind="expire")
            self._refresh(order.sid)

    def _close(self, order: Order) -> None:
        self.orders.pop(order.order_id, None)
        self._unrest(order)
        self._refresh(order.sid)
        self._queues.pop(order.order_id, None)
        self._stale.pop(order.order_id, None)
        h = self._gtd.pop(order.order_id, None)
        if h is not None:
            self.clock.cancel(h)

    def _unrest(self, order: Order) -> None:
        lst = self.resting[order.sid] if 0 <= order.sid < len(self.resting) else []
        for i, o in enumerate(lst):
            if o is order:
                del lst[i]
                return

    def _refresh(self, sid: int) -> None:
        if 0 <= sid < len(self.active):
            self.active[sid] = bool(self.resting[sid]) or self.margin.watch[sid]

    # -- notifications --------------------------------------------------------------

    def _order_event(self, kind: str, order: Order, now: int, **fields: Any) -> RunEvent:
        """A run event about ``order``: its symbol, ids and side, plus ``fields``."""
        return self.outbox.emit(
            kind,
            now,
            symbol=order.symbol,
            order_id=order.order_id,
            client_id=order.client_id,
            side=order.side_name,
            **fields,
        )

    def _notify_order(self, order: Order, status: str, reason: str | None, now: int, remote: bool = True) -> None:
        update = OrderUpdate(
            order_id=order.order_id,
            client_id=order.client_id,
            symbol=order.symbol,
            status=status,
            reason=reason,
            ts=now,
        )
        if remote:
            self._notify(update, now)
        else:
            self.listener(update)

    def _notify(self, update: Update, now: int) -> None:
        if self.latency.responses_enabled:
            self._timers += 1
            at = self.latency.response(now)
            self._timer(at, f"venue:response:{self._timers}", lambda t: self.listener(update))
        else:
            self.listener(update)

    def _timer(self, at: int, name: str, fn: Callable[[int], None]) -> TimerHandle:
        """A venue timer; what it changes reaches the strategy when it fires, not at some
        later flush (which the two engines reach at different times)."""

        def fire(t: int) -> None:
            fn(t)
            self._flush()

        return self.clock.call_at(at, name, fire, VENUE_PRIORITY)


def _nothing() -> None:
    return None
