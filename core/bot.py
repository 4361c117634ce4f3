"""The PerpsBot around a strategy: jobs, trading window, pre-trade gate, reconciliation.

Everything runs on the engine's clock (DESIGN.md §5): background jobs are
epoch-aligned timers, registered in :meth:`PerpsBot.start` and cancelled with
the engine's other timers on shutdown. At equal deadlines they run in the order
of ``engine.PRIORITY``: guards, cycle, order reconciliation, position
reconciliation, snapshot, metrics; then the tape rows at that time.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Final

from perpsim.core.clock import Clock, TimerHandle
from perpsim.core.config import RunConfig
from perpsim.core.guards import Guards
from perpsim.core.instruments import Instrument
from perpsim.core.ledger import Ledger, to_units
from perpsim.core.market import MarketState
from perpsim.core.orders import Order
from perpsim.core.outbox import Outbox
from perpsim.core.risk import PreTrade
from perpsim.core.venue import Fill, OrderUpdate, SimVenue

__all__ = ["JOBS", "PerpsBot", "in_trading_window"]

_NS = 10**9
# name → (interval seconds, priority); the cycle itself is the engine's.
JOBS: Final[dict[str, tuple[float, int]]] = {
    "guards": (60.0, 0),
    "reconcile_orders": (45.0, 20),
    "reconcile_positions": (90.0, 30),
    "snapshot": (300.0, 40),
    "metrics": (60.0, 50),
}


def _minutes(hhmm: str) -> int:
    h, _, m = hhmm.partition(":")
    return int(h) * 60 + int(m or 0)


def in_trading_window(cfg: RunConfig, now_ns: int) -> bool:
    """UTC ``trading_days`` (0 = Monday) and ``trading_start``/``trading_end`` ("HH:MM");
    an end before the start wraps overnight (the day is the one the window opened on)."""
    secs = now_ns // _NS
    minute = (secs // 60) % 1440
    weekday = ((secs // 86_400) + 3) % 7  # 1970-01-01 was a Thursday
    start = _minutes(cfg.trading_start) if cfg.trading_start else 0
    end = _minutes(cfg.trading_end) if cfg.trading_end else 1440
    if start <= end:
        inside = start <= minute < end
        day = weekday
    else:
        inside = minute >= start or minute < end
        day = weekday if minute >= start else (weekday - 1) % 7
    return inside and (cfg.trading_days is None or day in cfg.trading_days)


class PerpsBot:
    """Wires pre-trade checks, guards and jobs around the engine's strategy."""

    def __init__(
        self,
        config: RunConfig,
        market: MarketState,
        ledger: Ledger,
        instruments: dict[str, Instrument],
        venue: SimVenue,
        outbox: Outbox,
        equity: Callable[[], Fraction],
    ) -> None:
        self.config = config
        self.market = market
        self.ledger = ledger
        self.venue = venue
        self.outbox = outbox
        self.equity = equity
        self.guards = Guards(
            config.risk, config.interval_s, market, ledger, instruments, outbox, equity, self._cancel_all
        )
        self.pretrade = PreTrade(config.risk, market, ledger, instruments, self.guards.state, equity, venue.working)
        # The bot's own view, kept from notifications; reconcilers compare it with the venue's.
        self.known_orders: dict[int, str] = {}
        self.known_positions: dict[str, Fraction] = {}
        self.jobs_run: dict[str, int] = dict.fromkeys(JOBS, 0)
        self.metrics_sink: Callable[[int], None] | None = None

    def start(self, clock: Clock) -> list[TimerHandle]:
        """Schedule the background jobs; the engine owns (and cancels) the handles."""
        jobs = {
            "guards": self._job_guards,
            "reconcile_orders": self._job_reconcile_orders,
            "reconcile_positions": self._job_reconcile_positions,
            "snapshot": self._job_snapshot,
            "metrics": self._job_metrics,
        }
        return [clock.every(round(JOBS[n][0] * _NS), n, jobs[n], JOBS[n][1]) for n in JOBS]

    # -- the cycle's steps ------------------------------------------------------

    def window_open(self, now: int) -> bool:
        return in_trading_window(self.config, now)

    def gate(self, order: Order, now: int) -> str | None:
        reason = self.pretrade.check(order, now)
        for w in self.pretrade.warnings:
            self.outbox.emit("guard", now, symbol=order.symbol, order_id=order.order_id, reason=w, text="warn")
        return reason

    def on_update(self, update: Fill | OrderUpdate) -> None:
        if isinstance(update, Fill):
            self.known_positions[update.symbol] = self.ledger.qty(update.symbol)
            if update.order_id in self.known_orders and update.order_id not in self.venue.orders:
                del self.known_orders[update.order_id]
        elif update.status == "accepted":
            if update.order_id in self.venue.orders:
                self.known_orders[update.order_id] = update.symbol
        else:
            self.known_orders.pop(update.order_id, None)

    # -- jobs -------------------------------------------------------------------

    def _job_guards(self, now: int) -> None:
        self.jobs_run["guards"] += 1
        self.guards.evaluate(now)

    def _job_reconcile_orders(self, now: int) -> None:
        self.jobs_run["reconcile_orders"] += 1
        venue_ids = {o.order_id: o.symbol for o in self.venue.open_orders()}
        for oid in sorted(set(self.known_orders) - set(venue_ids)):
            self.outbox.emit("reconcile", now, symbol=self.known_orders[oid], order_id=oid, reason="order_not_at_venue")
            del self.known_orders[oid]
        for oid in sorted(set(venue_ids) - set(self.known_orders)):
            self.outbox.emit("reconcile", now, symbol=venue_ids[oid], order_id=oid, reason="order_unknown_to_bot")
            self.known_orders[oid] = venue_ids[oid]

    def _job_reconcile_positions(self, now: int) -> None:
        self.jobs_run["reconcile_positions"] += 1
        symbols = sorted(set(self.known_positions) | set(self.ledger.positions))
        for symbol in symbols:
            venue_qty = self.ledger.qty(symbol)
            mine = self.known_positions.get(symbol, Fraction(0))
            if mine != venue_qty:
                self.outbox.emit(
                    "reconcile",
                    now,
                    symbol=symbol,
                    reason="position_mismatch",
                    qty=float(mine),
                    position_after=float(venue_qty),
                )
                self.known_positions[symbol] = venue_qty

    def _job_snapshot(self, now: int) -> None:
        self.jobs_run["snapshot"] += 1
        self.outbox.emit("snapshot", now, amount=to_units(self.equity()), cash_after=self.ledger.cash, text="account")

    def _job_metrics(self, now: int) -> None:
        self.jobs_run["metrics"] += 1
        if self.metrics_sink is not None:
            self.metrics_sink(now)

    def _cancel_all(self, now: int) -> None:
        for order in self.venue.open_orders():
            self.venue.cancel(order.order_id, now)
