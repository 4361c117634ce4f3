"""The public Strategy API (DESIGN.md §9).

A strategy is a class built fresh for every run with its parameters; it sees the
market and acts only through the :class:`Context` the engine hands it. Optional
hooks (``on_trade``, ``on_quote``, ``on_fill``, ``on_order``, ``on_funding``) are
called only if the class defines them, so a strategy that does not want ticks
costs nothing per tick.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from perpsim.core.errors import ConfigError
from perpsim.core.instruments import Instrument

if TYPE_CHECKING:
    from perpsim.core.engine import Engine
    from perpsim.core.orders import Order

__all__ = ["HOOKS", "Context", "QuoteView", "Strategy", "make_strategy"]

HOOKS = ("on_trade", "on_quote", "on_fill", "on_order", "on_funding")


class QuoteView(msgspec.Struct, frozen=True, kw_only=True):
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    ts: int


def make_strategy(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    """``cls(**params)`` with a usable ``window``; what the user's code raises is bad input.

    Raises:
        ConfigError: the constructor raised, or ``window`` is not an integer >= 1
            (one line naming the class, not a traceback).
    """
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        strategy = cls(**params)
        window = strategy.window
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"strategy {name}: {type(exc).__name__}: {exc}") from exc
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"strategy {name}: window must be an integer >= 1, got {window!r}")
    return strategy


class Strategy:
    """Base class: override ``on_cycle`` and set ``window`` (marks kept per symbol).

    Parameters arrive as keyword arguments; unknown ones are refused so a typo in
    a config cannot silently fall back to a default.
    """

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown parameter(s) {', '.join(unknown)}")
        self.params: dict[str, Any] = {**self.defaults, **params}

    @property
    def window(self) -> int:
        """How many marks per symbol the engine keeps for ``ctx.marks``."""
        return 1

    def on_start(self, ctx: Context) -> None:
        """Called once before the first row."""

    def on_cycle(self, ctx: Context) -> None:
        """Called every ``interval`` of clock time, after marks are updated."""

    def on_stop(self, ctx: Context) -> None:
        """Called once after the last row."""


class Context:
    """The strategy's only door into the engine: market views, account, orders, timers."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    @property
    def now_ns(self) -> int:
        return self._e.clock.now_ns()

    @property
    def symbols(self) -> list[str]:
        """Symbols eligible this cycle (a trade or quote seen), in code-point order."""
        return self._e.cycle_symbols

    def instrument(self, symbol: str) -> Instrument:
        return self._e.instruments[symbol]

    def mark(self, symbol: str) -> float | None:
        sid = self._e.market.ids.get(symbol)
        return None if sid is None else self._e.market.strategy_mark(sid)

    def marks(self, symbol: str) -> list[float]:
        sid = self._e.market.ids.get(symbol)
        if sid is None:
            return []
        window = self._e.market.windows[sid]
        keep = self._e.strategy_window
        return list(window)[-keep:] if len(window) > keep else list(window)

    def quote(self, symbol: str) -> QuoteView | None:
        m = self._e.market
        sid = m.ids.get(symbol)
        if sid is None or m.bid[sid] != m.bid[sid]:
            return None
        return QuoteView(
            bid=m.bid[sid], bid_size=m.bid_size[sid], ask=m.ask[sid], ask_size=m.ask_size[sid], ts=m.quote_ts[sid]
        )

    def book(self, symbol: str) -> object | None:
        sid = self._e.market.ids.get(symbol)
        return None if sid is None else self._e.market.books[sid]

    def position(self, symbol: str) -> float:
        return float(self._e.ledger.qty(symbol))

    def exact_position(self, symbol: str) -> Fraction:
        return self._e.ledger.qty(symbol)

    def entry_price(self, symbol: str) -> float | None:
        pos = self._e.ledger.positions.get(symbol)
        return float(pos.entry) if pos is not None and pos.qty != 0 else None

    def equity(self) -> float:
        return float(self._e.equity_exact())

    def exact_equity(self) -> Fraction:
        """Cash plus unrealized PnL at venue marks, exactly."""
        return self._e.equity_exact()

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return self._e.venue.open_orders(symbol)

    def call_at(self, ns: int, cb: Callable[[int], None]) -> str:
        return self._e.strategy_timer(ns, None, cb)

    def every(self, ns: int, cb: Callable[[int], None]) -> str:
        return self._e.strategy_timer(0, ns, cb)

    def submit(
        self,
        symbol: str,
        side: str,
        qty: float | Fraction,
        type: str = "market",
        price: float | None = None,
        stop_price: float | None = None,
        tif: str | None = None,
        reduce_only: bool = False,
        post_only: bool = False,
        client_id: str | None = None,
        expire_ns: int | None = None,
    ) -> int:
        """Send an order; returns its id. Rejections arrive as ``reject`` events, not exceptions.

        ``tif`` defaults to the profile's ``time_in_force`` (GTC unless it says otherwise).
        """
        return self._e.submit(
            symbol,
            side,
            qty,
            type=type,
            price=price,
            stop_price=stop_price,
            tif=tif,
            reduce_only=reduce_only,
            post_only=post_only,
            client_id=client_id,
            expire_ns=expire_ns,
        )

    def cancel(self, order_id: int) -> bool:
        return self._e.venue.cancel(order_id, self._e.clock.now_ns())

    def decide(self, symbol: str, action: str, reason: str, mark: float | None = None) -> None:
        """Log a decision (BUY, SELL, CLOSE or HOLD with its reason) as a ``decision`` event."""
        self._e.outbox.emit("decision", self._e.clock.now_ns(), symbol=symbol, text=action, reason=reason, price=mark)
