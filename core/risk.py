"""Pre-trade checks of the PerpsBot (issue 3), run in a fixed order on every order.

Order: kill switch, trading paused, reduce-only, shorts disabled, leverage,
liquidation buffer, exposure, projected maintenance buffer, slippage guard, mark
staleness, max trade value, position caps. The first failing check names the
rejection; an order that only reduces an existing position skips the checks that
bound risk it cannot add (leverage, buffers, exposure, slippage). Comparisons are
exact (``Fraction``).

"Post-trade" is the position if this order and every order of the symbol still
working on its side (resting, armed or on its way, reduce-only ones aside) filled:
checked one at a time against the position alone, five resting buys or three
market buys in flight under latency would each pass a cap their sum breaks. Whether
an order reduces is decided by its own size (:func:`reduces`).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from perpsim.core.config import RiskConfig
from perpsim.core.guards import GuardState
from perpsim.core.instruments import Instrument, exact
from perpsim.core.ledger import Ledger
from perpsim.core.market import MarketState, mid_exact
from perpsim.core.orders import Order

__all__ = ["PreTrade", "leverage_cap", "reduces"]

_NS = 10**9
_BPS = 10_000


def reduces(order: Order, position: Fraction) -> bool:
    """True when the order only shrinks an existing position (never opens or flips). A
    reduce-only order always does: the venue clips it to what is left to close. Orders
    already working do not count here: a market close must pass reduce-only mode though
    a take-profit rests on the same side."""
    if position == 0 or (position > 0) == (order.side > 0):
        return False
    return order.reduce_only or order.qty <= abs(position)


def leverage_cap(cfg: RiskConfig, symbol: str, now_ns: int) -> Fraction:
    """The binding leverage cap: min of per-symbol, day/night (by UTC hour) and global."""
    caps = [exact(float(cfg.max_leverage))]
    if symbol in cfg.leverage_caps:
        caps.append(exact(float(cfg.leverage_caps[symbol])))
    hour = (now_ns // (3600 * _NS)) % 24
    start, end = cfg.day_hours_utc
    is_day = start <= hour < end if start <= end else (hour >= start or hour < end)
    window_cap = cfg.day_leverage_cap if is_day else cfg.night_leverage_cap
    if window_cap is not None:
        caps.append(exact(float(window_cap)))
    return min(caps)


class PreTrade:
    """Checks one order against limits, guard state and the market; returns a reason or None."""

    def __init__(
        self,
        cfg: RiskConfig,
        market: MarketState,
        ledger: Ledger,
        instruments: dict[str, Instrument],
        guards: GuardState,
        equity: Callable[[], Fraction],
        working: Callable[[str, int], Fraction],
    ) -> None:
        """``working(symbol, side)``: what that side's working orders could still add to the
        position (:meth:`~perpsim.core.venue.SimVenue.working`)."""
        self.cfg = cfg
        self.market = market
        self.ledger = ledger
        self.instruments = instruments
        self.guards = guards
        self.equity = equity
        self.working = working
        self.warnings: list[str] = []

    def check(self, order: Order, now: int) -> str | None:
        """The reason ``order`` must be rejected, or None; soft warnings go to ``warnings``."""
        cfg, g = self.cfg, self.guards
        self.warnings = []
        if g.kill_switch:
            return "kill_switch"
        if g.paused_until is not None and now < g.paused_until:
            return "trading_paused"
        pos = self.ledger.qty(order.symbol)
        working = self.working(order.symbol, order.side)
        reducing = reduces(order, pos)
        if g.reduce_only or order.symbol in g.reduce_only_symbols:
            if not reducing:
                return "reduce_only_mode"
            # made reduce-only: two closes, or a close beside a resting take-profit, each
            # reducing alone, cannot flip the position together (the venue clips them)
            order.reduce_only = True
        # as a spot venue's locked balance would: the sells working already count
        if not cfg.allow_shorts and order.side < 0 and not order.reduce_only and pos - order.qty - working < 0:
            return "shorts_disabled"
        sid = self.market.ids.get(order.symbol)
        vmark = None if sid is None else self.market.venue_mark(sid)
        if vmark is None:
            return "no_mark"
        inst = self.instruments[order.symbol]
        cs = exact(inst.contract_size)
        mark = exact(vmark)
        price = exact(order.price) if order.price is not None else mark
        post = pos + (order.qty + working if order.side > 0 else -order.qty - working)
        post_notional = abs(post) * cs * mark
        equity = self.equity()
        if not reducing:
            if equity <= 0:
                return "no_equity"
            cap = leverage_cap(cfg, order.symbol, now)
            if post_notional / equity > cap:
                return "leverage"
            if (equity - post_notional / cap) / equity < exact(cfg.min_liquidation_buffer_pct):
                return "liquidation_buffer"
            reason = self._exposure(order.symbol, post_notional, equity)
            if reason:
                return reason
            maint = self._total_notional(order.symbol, rated=True) + exact(inst.maintenance_rate) * post_notional
            if (equity - maint) / equity < exact(cfg.min_liquidation_buffer_pct):
                return "maintenance_buffer"
            slip = self._expected_slippage_bps(sid, order)
            if slip is not None and slip > exact(cfg.slippage_guard_bps):
                return "slippage_guard"
        assert sid is not None
        age = self.market.mark_age_ns(sid, now)
        limit = round(cfg.max_mark_staleness_seconds * _NS)
        if age is not None and age > 2 * limit:
            return "mark_stale"
        if age is not None and age > limit:
            self.warnings.append("mark_stale_warning")
        if cfg.max_trade_value is not None and order.qty * cs * price > exact(cfg.max_trade_value):
            return "max_trade_value"
        if not reducing:
            cap_qty = cfg.max_position_size.get(order.symbol)
            if cap_qty is not None and abs(post) > exact(float(cap_qty)):
                return "position_cap"
            if cfg.max_position_value is not None and post_notional > exact(cfg.max_position_value):
                return "position_value_cap"
        return None

    def _exposure(self, symbol: str, post_notional: Fraction, equity: Fraction) -> str | None:
        cfg = self.cfg
        cap = cfg.max_notional_per_symbol.get(symbol)
        if cap is not None and post_notional > exact(float(cap)):
            return "symbol_notional_cap"
        if post_notional / equity > exact(cfg.max_position_pct_per_symbol):
            return "symbol_exposure"
        if (self._total_notional(symbol) + post_notional) / equity > exact(cfg.max_exposure_pct):
            return "total_exposure"
        return None

    def _total_notional(self, exclude: str, *, rated: bool = False) -> Fraction:
        """Notional of every open position except ``exclude``, at venue marks; with
        ``rated``, each times its instrument's maintenance rate (its maintenance margin)."""
        total = Fraction(0)
        m = self.market
        for symbol, pos in self.ledger.positions.items():
            if symbol == exclude or pos.qty == 0:
                continue
            vm = m.venue_mark(m.ids[symbol])
            if vm is not None:
                notional = abs(pos.qty) * pos.contract_size * exact(vm)
                total += exact(self.instruments[symbol].maintenance_rate) * notional if rated else notional
        return total

    def _expected_slippage_bps(self, sid: int | None, order: Order) -> Fraction | None:
        """Half the spread, plus the spread again for the part beyond the displayed touch size."""
        if sid is None:
            return None
        m = self.market
        bid, ask = m.bid[sid], m.ask[sid]
        if bid != bid or ask != ask:
            return None
        mid = mid_exact(bid, ask)
        if mid <= 0:
            return None
        spread = exact(ask) - exact(bid)
        slip = spread / 2
        top = m.ask_size[sid] if order.side > 0 else m.bid_size[sid]
        if top == top and order.qty > exact(top) > 0:
            slip += spread * (order.qty - exact(top)) / order.qty
        return slip / mid * _BPS
