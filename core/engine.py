"""The engine: a state machine fed rows and timer firings; run events come out.

It never touches a file, a socket or the wall clock (DESIGN.md §1, §7). A driver
moves the clock, hands the engine column batches (:meth:`Engine.load` then
:meth:`Engine.run`, between timer deadlines) or single events
(:meth:`Engine.on_event`, the live and test path; both give identical results),
and drains :attr:`Engine.outbox` and :attr:`Engine.equity_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, Final

import msgspec
import numpy as np

from perpsim.core.batch import Batch, Rows, event_rows
from perpsim.core.book import Book
from perpsim.core.bot import PerpsBot, in_trading_window
from perpsim.core.clock import Clock, TimerHandle
from perpsim.core.config import RunConfig
from perpsim.core.errors import MoneyOutOfRange
from perpsim.core.events import Kind, Mark, MarketEvent, Quote, Trade
from perpsim.core.funding import FundingPayment
from perpsim.core.instruments import Instrument, exact, resolve
from perpsim.core.ledger import Ledger, to_units
from perpsim.core.market import MarketState
from perpsim.core.orders import Order
from perpsim.core.outbox import Outbox
from perpsim.core.strategy import Context, Strategy
from perpsim.core.venue import Fill, OrderUpdate, SimVenue

__all__ = ["PRIORITY", "PSEUDO_SYMBOL", "Engine", "EquityRow", "FundingPayment", "PositionRow"]

# At equal deadlines jobs run in this order, then the tape rows at that time (issue 3).
PRIORITY: Final[dict[str, int]] = {
    "guards": 0,
    "cycle": 10,
    "reconcile_orders": 20,
    "reconcile_positions": 30,
    "snapshot": 40,
    "metrics": 50,
    "strategy": 100,
}
_NS = 1_000_000_000
PSEUDO_SYMBOL: Final = "*"  # the symbol of rows about no instrument: timer and feed status rows
_SIDES: Final = {"buy": 1, "sell": -1}
_ZERO = Fraction(0)


def _bad_price(ev: MarketEvent) -> str | None:
    """Why an event's price cannot be used (NaN or not positive), or None."""
    prices: tuple[float, ...]
    if isinstance(ev, Trade | Mark):
        prices = (ev.price,)
    elif isinstance(ev, Quote):
        prices = (ev.bid, ev.ask)
    else:
        return None
    for px in prices:
        if not px > 0:
            return f"{type(ev).__name__.lower()} price {px!r}"
    return None


class _Lazy:
    """A numpy column read one element at a time, as a Python scalar."""

    __slots__ = ("arr",)

    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def __getitem__(self, i: int) -> Any:
        return self.arr[i].item()


class PositionRow(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: float
    entry: float
    mark: float | None
    unrealized: int
    liq_price: float | None


class EquityRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``equity.parquet`` per cycle; money in ledger units."""

    ts: int
    cash: int
    equity: int
    unrealized: int
    realized: int
    fees: int
    funding: int
    positions: list[PositionRow]


class Engine:
    """One run's market state, venue, ledger and strategy, driven through a clock."""

    def __init__(
        self,
        *,
        clock: Clock,
        strategy: Strategy,
        config: RunConfig,
        instruments: dict[str, Instrument] | None = None,
    ) -> None:
        self.clock = clock
        self.config = config
        self.strategy = strategy
        self.market = MarketState()
        self.ledger = Ledger(to_units(exact(config.venue.starting_balance)))
        self.outbox = Outbox()
        self.equity_rows: list[EquityRow] = []
        self.instruments: dict[str, Instrument] = {}
        self.warnings: list[str] = []
        self._tape_instruments = instruments or {}
        self.venue = SimVenue(
            config.venue,
            self.market,
            self.ledger,
            self.instruments,
            self.outbox,
            self._pending_append,
            clock,
            seed=config.seed,
            flush=self._flush,
        )
        self.bot = (
            PerpsBot(config, self.market, self.ledger, self.instruments, self.venue, self.outbox, self.equity_exact)
            if config.risk.enabled
            else None
        )
        self._bad_price: dict[int, str] = {}
        self.ctx = Context(self)
        self.cycle_symbols: list[str] = []
        self.cycles = 0
        self.rows = 0
        self.errors = 0
        self._pending: list[Fill | OrderUpdate | FundingPayment] = []
        self._flushing = False
        self._order: list[str] = []
        self._seen: list[bool] = []
        self._next_order_id = 0
        self._timers: list[TimerHandle] = []
        self._strategy_timers = 0
        self.strategy_window = max(1, strategy.window)
        # The volatility guard reads the same cycle marks; keep enough for it too.
        vol_need = config.risk.volatility_window + 1 if config.risk.enabled else 1
        self._window = max(self.strategy_window, vol_need)
        self._on_trade = getattr(strategy, "on_trade", None)
        self._on_quote = getattr(strategy, "on_quote", None)
        self._on_fill = getattr(strategy, "on_fill", None)
        self._on_order = getattr(strategy, "on_order", None)
        self._on_funding = getattr(strategy, "on_funding", None)
        self._loaded: tuple[Any, ...] = ()
        self._base = 0
        self._text: Sequence[str | None] = ()
        self.started = False
        self.stopped = False
        for name in config.symbols or sorted(self._tape_instruments):
            self._declare(name)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Schedule the cycle (epoch-aligned, at or after now) and call ``on_start``."""
        self.started = True
        self.venue.start()
        interval = round(self.config.interval_s * _NS)
        self._timers.append(self.clock.every(interval, "cycle", self._cycle, PRIORITY["cycle"]))
        if self.bot is not None:
            self._timers.extend(self.bot.start(self.clock))
        self._call(self.strategy.on_start, self.ctx)

    def stop(self) -> None:
        """Cancel every timer and call ``on_stop``; nothing is force-closed."""
        if self.stopped:
            return
        self.stopped = True
        for h in self._timers:
            self.clock.cancel(h)
        self._timers.clear()
        self._call(self.strategy.on_stop, self.ctx)

    # -- input ------------------------------------------------------------------

    def load(self, batch: Batch, lo: int = 0, hi: int | None = None) -> None:
        """Take rows ``lo:hi`` of a batch as Python lists (the fastest form to index per row).

        :meth:`run` then takes indices into the whole batch.
        """
        batch.require_columns()
        sid_of = self.symbol_ids(batch)
        self._base = lo
        if lo != 0 or hi is not None:
            batch = batch.rows(slice(lo, hi))
        # Columns every trade or quote row reads become lists; the rest are read rarely
        # and convert one element at a time.
        self._loaded = (
            batch.clock.tolist(),
            batch.kind.tolist(),
            np.asarray(sid_of, dtype=np.int64)[batch.symbol].tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            batch.side.tolist(),
            batch.bid.tolist(),
            batch.bid_size.tolist(),
            batch.ask.tolist(),
            batch.ask_size.tolist(),
            _Lazy(batch.rate),
            _Lazy(batch.next_ts),
            _Lazy(batch.ts),
            _Lazy(batch.recv_ts),
            batch.flags.tolist(),  # read by every book row
            batch.seq.tolist(),  # read by the venue on every row of a watched symbol
        )
        self._text = batch.text

    def load_rows(self, rows: Rows, clock: str = "ts") -> None:
        """Take :class:`~perpsim.core.batch.Rows` (a socket read's) for :meth:`run`, indices from 0."""
        try:
            sid = list(map(self.market.ids.__getitem__, rows.symbol))
        except KeyError:  # a symbol seen for the first time
            sid = [self._declare(s, False) for s in rows.symbol]
        self._base = 0
        self._loaded = (
            rows.recv_ts if clock == "recv_ts" else rows.ts,
            rows.kind,
            sid,
            rows.price,
            rows.size,
            rows.side,
            rows.bid,
            rows.bid_size,
            rows.ask,
            rows.ask_size,
            rows.rate,
            rows.next_ts,
            rows.ts,
            rows.recv_ts,
            rows.flags,
            rows.seq,
        )
        self._text = rows.text

    def mark_seen(self, sid: int) -> None:
        self._seen[sid] = True

    @property
    def wants_ticks(self) -> bool:
        """True when every market row must be dispatched one by one (a tick hook is defined)."""
        return self._on_trade is not None or self._on_quote is not None

    def symbol_ids(self, batch: Batch) -> list[int]:
        """Engine symbol ids for the batch's symbol dictionary."""
        return [self._declare(name, seen=False) for name in batch.symbols]

    def run(self, lo: int, hi: int) -> int:
        """Dispatch loaded rows ``lo:hi``; the driver guarantees no timer is due before ``hi``.

        Returns the index of the first row not dispatched: ``hi``, or earlier when a
        strategy hook scheduled a timer that is now due before the next row.
        """
        clk, kind, sid, price, size, side, bid, bsz, ask, asz, _rate, _nts, _ts, _rts, flags, seq = self._loaded
        m = self.market
        books, seen = m.books, self._seen
        last_px, last_size, last_ts = m.last_px, m.last_size, m.last_ts
        q_bid, q_bsz, q_ask, q_asz, q_ts = m.bid, m.bid_size, m.ask, m.ask_size, m.quote_ts
        on_trade, on_quote = self._on_trade, self._on_quote
        hooks = on_trade is not None or on_quote is not None
        venue = self.venue
        active, resting, pending = venue.active, venue.resting, self._pending
        self.rows += hi - lo
        base = self._base
        if not hooks and self._on_funding is None and not any(active):
            # Nothing wants single rows (no tick hook, no order or position to watch): state only.
            # Rows cannot change that: only strategy code places orders, and none runs here.
            for i in range(lo - base, hi - base):
                k = kind[i]
                if k == 0:
                    s = sid[i]
                    last_px[s] = price[i]
                    last_size[s] = size[i]
                    last_ts[s] = clk[i]
                elif k == 1:
                    s = sid[i]
                    q_bid[s] = bid[i]
                    q_bsz[s] = bsz[i]
                    q_ask[s] = ask[i]
                    q_asz[s] = asz[i]
                    q_ts[s] = clk[i]
                elif k == 2 and (book := books[sid[i]]) is not None:
                    book.apply(side[i], price[i], size[i])
                    seen[sid[i]] = True
                else:
                    self._other_row(i, k, sid[i])
            return hi
        clock = self.clock
        due = clock.next_due
        for i in range(lo - base, hi - base):
            k = kind[i]
            s = sid[i]
            acted = False
            if k == 0:
                last_px[s] = price[i]
                last_size[s] = size[i]
                last_ts[s] = clk[i]
                if active[s]:
                    venue.on_trade(s, price[i], size[i], side[i], clk[i], seq[i])
                    acted = True
            elif k == 1:
                q_bid[s] = bid[i]
                q_bsz[s] = bsz[i]
                q_ask[s] = ask[i]
                q_asz[s] = asz[i]
                q_ts[s] = clk[i]
                # A quote matters to the venue only for resting orders, or as the mark
                # of a position while no trade has printed (SimVenue.on_quote).
                if active[s] and (resting[s] or last_px[s] != last_px[s]):
                    venue.on_quote(s, clk[i], seq[i])
                    acted = True
            elif k == 2 and (book := books[s]) is not None:
                book.apply(side[i], price[i], size[i])
                seen[s] = True
                if active[s] and flags[i] & 1:
                    venue.on_book(s, clk[i], seq[i])
                    acted = True
            else:
                self._other_row(i, k, s)
                acted = True
            # What the venue did on this row reaches the strategy at the row's time; a timer
            # set before the next row (a response latency, an order or a timer placed by a
            # hook) stops the loop, for the driver to fire it in order.
            if acted:
                if pending:
                    self._flush(clk[i])
                if hooks:
                    self._hook_row(i, k, s)
            elif hooks:
                self._hook_row(i, k, s)
            else:
                continue
            if clock.next_due < due and i + 1 + base < hi:
                self.rows -= hi - (i + 1 + base)
                return i + 1 + base
        return hi

    def on_event(self, ev: MarketEvent) -> None:
        """Dispatch one event (the live and test path); the caller moves the clock first.

        A live feed can deliver a NaN or non-positive price; such a row is not applied,
        and the next cycle reports it as an ``error`` for that symbol only.
        """
        bad = _bad_price(ev)
        if bad is not None:
            self._bad_price[self._declare(ev.symbol)] = bad
            return
        self.load_rows(event_rows([ev]))
        self._loaded = ([self.clock.now_ns()], *self._loaded[1:])
        self.run(0, 1)

    def _other_row(self, i: int, k: int, s: int) -> None:
        clk, _, _, price, size, side, *_rest = self._loaded
        m = self.market
        self._seen[s] = True
        if k == Kind.BOOK:
            book = m.books[s]
            if book is None:
                book = m.books[s] = Book()
            book.apply(side[i], price[i], size[i])  # the first row of a book; then run() applies them
            if self.venue.active[s] and self._loaded[14][i] & 1:
                self.venue.on_book(s, clk[i], self._loaded[15][i])
                self._flush(clk[i])
        elif k == Kind.BOOK_RESET:
            book = m.books[s]
            if book is None:
                m.books[s] = Book()
            else:
                book.reset()
        elif k == Kind.FUNDING:
            rate = self._loaded[10][i]
            m.rate[s] = rate
            m.next_funding[s] = self._loaded[11][i]
            ts, rts = self._loaded[12][i], self._loaded[13][i]
            ev = self.venue.settle_funding(s, rate, ts, rts)
            if ev is not None and self._on_funding is not None:
                assert ev.amount is not None and ev.price is not None
                pay = FundingPayment(symbol=m.names[s], rate=rate, mark=ev.price, amount=ev.amount, ts=ts)
                self._catch_up(clk[i])  # the hook runs, and orders, at the row's time
                self._call(self._on_funding, self.ctx, pay)
        elif k == Kind.MARK:
            m.mark_px[s] = price[i]
            m.mark_ts[s] = clk[i]
            if self.venue.active[s]:
                self.venue.on_mark(s, price[i], clk[i], self._loaded[15][i])
                self._flush(clk[i])

    def _hook_row(self, i: int, k: int, s: int) -> None:
        """Call a tick hook for row ``i``, at the row's time."""
        clk, _, _, price, size, side, bid, bsz, ask, asz, _, _, ts, rts, _flags, _seq = self._loaded
        m = self.market
        self.clock.set_now(clk[i])
        if k == 0 and self._on_trade is not None:
            ev: MarketEvent = Trade(
                ts=ts[i], recv_ts=rts[i], symbol=m.names[s], price=price[i], size=size[i], side=side[i]
            )
            self._call(self._on_trade, self.ctx, ev)
        elif k == 1 and self._on_quote is not None:
            ev = Quote(
                ts=ts[i],
                recv_ts=rts[i],
                symbol=m.names[s],
                bid=bid[i],
                bid_size=bsz[i],
                ask=ask[i],
                ask_size=asz[i],
            )
            self._call(self._on_quote, self.ctx, ev)

    # -- the cycle --------------------------------------------------------------

    def _cycle(self, now: int) -> None:
        self.cycles += 1
        m = self.market
        eligible: list[str] = []
        for name in self._order:
            sid = m.ids[name]
            bad = self._bad_price.pop(sid, None)
            if bad is not None:
                self.outbox.emit("error", now, symbol=name, reason="invalid_price", text=bad)
                continue
            if not m.has_price(sid):
                if self._seen[sid]:
                    self.outbox.emit("decision", now, symbol=name, text="HOLD", reason="no_mark")
                continue
            mark = m.strategy_mark(sid)
            if mark is None or not mark > 0:
                self.outbox.emit("error", now, symbol=name, reason="invalid_mark", text=repr(mark))
                continue
            m.windows[sid].append(mark)
            m.window_ts[sid] = now
            eligible.append(name)
        self.cycle_symbols = eligible
        if in_trading_window(self.config, now):
            bot = self.bot
            if bot is not None:
                bot.guards.evaluate(now)
            errors = self.errors
            self._call(self.strategy.on_cycle, self.ctx)
            if bot is not None and self.errors == errors:
                bot.guards.on_success()
        else:
            self.outbox.emit("status", now, reason="outside_trading_window")
        self._record_equity(now)
        limit = self.config.max_cycles  # cycles outside the window count: a cycle is a cycle
        if limit is not None and self.cycles >= limit:
            for h in self._timers:
                if h.name == "cycle":
                    self.clock.cancel(h)

    def equity_exact(self) -> Fraction:
        """Cash plus unrealized PnL at venue marks (DESIGN: Equity for sizing)."""
        return self.venue.margin.equity()

    def _record_equity(self, now: int) -> None:
        led, m = self.ledger, self.market
        rows: list[PositionRow] = []
        unreal = _ZERO
        for symbol, pos in led.positions.items():
            if pos.qty == 0:
                continue
            mark = m.venue_mark(m.ids[symbol])
            u = led.unrealized(symbol, None if mark is None else exact(mark))
            unreal += u
            rows.append(
                PositionRow(
                    symbol=symbol,
                    qty=float(pos.qty),
                    entry=float(pos.entry),
                    mark=mark,
                    unrealized=to_units(u),
                    liq_price=self.venue.liq_price(symbol),
                )
            )
        equity = led.cash + to_units(unreal)
        self.equity_rows.append(
            EquityRow(
                ts=now,
                cash=led.cash,
                equity=equity,
                unrealized=to_units(unreal),
                realized=led.realized,
                fees=led.fees,
                funding=led.funding,
                positions=rows,
            )
        )
        self.outbox.emit("cycle", now, amount=equity, cash_after=led.cash, text=f"{len(self.cycle_symbols)} symbols")

    # -- orders -----------------------------------------------------------------

    def submit(
        self,
        symbol: str,
        side: str,
        qty: float | Fraction,
        *,
        type: str = "market",
        price: float | None = None,
        stop_price: float | None = None,
        tif: str | None = None,
        reduce_only: bool = False,
        post_only: bool = False,
        client_id: str | None = None,
        expire_ns: int | None = None,
    ) -> int:
        if side not in _SIDES:
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        self._next_order_id += 1
        sid = self.market.ids.get(symbol, -1)
        # a NaN or infinite qty is rejected by the venue (non_positive_qty), never raised
        q = qty if isinstance(qty, Fraction) else exact(float(qty)) if math.isfinite(qty) else _ZERO
        order = Order(
            order_id=self._next_order_id,
            symbol=symbol,
            sid=sid,
            side=_SIDES[side],
            qty=q,
            type=type,  # type: ignore[arg-type]
            price=price,
            stop_price=stop_price,
            tif=tif or self.config.time_in_force,  # type: ignore[arg-type]
            expire_ns=expire_ns,
            reduce_only=reduce_only,
            post_only=post_only,
            client_id=client_id,
            created_ns=self.clock.now_ns(),
        )
        now = self.clock.now_ns()
        reason = None
        if self.bot is not None and sid >= 0:
            reason = self.bot.gate(order, now)
        if reason is None and self.config.dry_run:  # after the checks, so a dry run shows their verdicts
            reason = "dry_run"
        if reason is not None:
            self.venue.reject(order, reason, now)
        else:
            self.venue.submit(order, now)
        return order.order_id

    def strategy_timer(self, at_ns: int, every_ns: int | None, cb: Callable[[int], None]) -> str:
        """A strategy's one-shot timer at ``at_ns`` (``every_ns`` None) or periodic timer.

        Raises:
            ValueError: a period that is not positive, or once rows have been dispatched a
                one-shot time already past (it would fire after later rows, stamped before
                them); the strategy's call becomes an ``error`` event. Before the first row
                any time may be asked for: nothing has happened yet.
        """
        if every_ns is not None and not every_ns > 0:
            raise ValueError(f"every: the period must be positive, got {every_ns} ns")
        if every_ns is None and self.rows and at_ns < self.clock.now_ns():
            raise ValueError(f"call_at: {at_ns} is before now ({self.clock.now_ns()})")
        self._strategy_timers += 1
        name = f"strategy:{self._strategy_timers}"

        def fire(now: int) -> None:
            self._call(cb, now)

        if every_ns is not None:
            h = self.clock.every(every_ns, name, fire, PRIORITY["strategy"])
        else:
            h = self.clock.call_at(at_ns, name, fire, PRIORITY["strategy"])
        self._timers.append(h)
        return name

    # -- plumbing ---------------------------------------------------------------

    def _declare(self, name: str, seen: bool = True) -> int:
        m = self.market
        sid = m.ids.get(name)
        if sid is None:
            sid = m.intern(name, self._window)
            inst, fallback = resolve(name, self._tape_instruments)
            self.instruments[name] = inst
            self.venue.add_symbol(sid)
            if fallback and name != PSEUDO_SYMBOL:
                self.warnings.append(
                    f"instrument {name}: not in the tape or the built-in table; "
                    "using lot 0.0001, no tick snapping, contract size 1"
                )
            self._seen.append(False)
            self._order = sorted(n for n in m.names if n != PSEUDO_SYMBOL)
        if name == PSEUDO_SYMBOL:
            return sid
        if seen:
            self._seen[sid] = True
        return sid

    def _pending_append(self, update: Fill | OrderUpdate | FundingPayment) -> None:
        self._pending.append(update)

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        """Call strategy code; an exception becomes an ``error`` event and the run goes on."""
        try:
            fn(*args)
        except MoneyOutOfRange:
            raise
        except Exception as exc:
            self.errors += 1
            if self.bot is not None:
                self.bot.guards.on_error(self.clock.now_ns())
            self.outbox.emit(
                "error",
                self.clock.now_ns(),
                reason="strategy_exception",
                text=f"{getattr(fn, '__name__', 'strategy')}: {type(exc).__name__}: {exc}",
            )
        self._flush()

    def _catch_up(self, t: int) -> None:
        """Move the clock forward to ``t``, the time of the row strategy code is about to see."""
        if t > self.clock.now_ns():
            self.clock.set_now(t)

    def _flush(self, now: int | None = None) -> None:
        """Hand the venue's updates to the bot and the strategy hooks; ``now``: the time of
        the row that caused them, so a hook sees (and orders at) that time, not the last
        cycle's."""
        if self._flushing or not self._pending:  # a hook's own flush: the loop below takes its updates
            return
        if now is not None and self._pending:
            self._catch_up(now)
        self._flushing = True
        try:
            while self._pending:
                update = self._pending.pop(0)
                if isinstance(update, FundingPayment):  # a scheduled settlement (venue.funding != "tape")
                    if self._on_funding is not None:
                        self._call(self._on_funding, self.ctx, update)
                    continue
                if self.bot is not None:
                    self.bot.on_update(update)
                hook = self._on_fill if isinstance(update, Fill) else self._on_order
                if hook is not None:
                    self._call(hook, self.ctx, update)
        finally:
            self._flushing = False
