"""Runtime guards of the PerpsBot (issue 3): a 60 s job, and a check at every cycle.

Each guard is a small state machine; only changes of state are events
(``guard`` or ``reduce_only``, ``text`` "on"/"off"/"warn", ``reason`` the guard),
so evaluating twice at one time is harmless.

- daily loss: equity since the UTC day began below ``-daily_loss_limit`` →
  global reduce-only and open orders cancelled; lifted when a new UTC day begins.
- liquidation buffer: a position whose price distance to liquidation, as a share
  of the mark, falls below ``min_liquidation_buffer_pct`` → that symbol reduce-only.
  It and the volatility breaker each hold a symbol on their own; the symbol is
  released only when neither does.
- volatility circuit breaker: annualized stdev of the last ``volatility_window``
  log returns of the cycle marks: warn, then symbol reduce-only, then the kill
  switch (latched: a person resets it). Levels clear after the cooldown once
  volatility is back under the warn level.
- error breaker: ``error_breaker_count`` consecutive execution errors → trading
  paused for ``error_breaker_pause_s``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from fractions import Fraction

import msgspec

from perpsim.core.config import RiskConfig
from perpsim.core.instruments import Instrument, exact
from perpsim.core.ledger import UNITS_PER_CCY, Ledger, to_units
from perpsim.core.market import MarketState
from perpsim.core.outbox import Outbox

__all__ = ["GuardState", "Guards", "annualized_vol"]

_NS = 10**9
_DAY = 86_400 * _NS
_YEAR_S = 365 * 86_400


class GuardState(msgspec.Struct, kw_only=True):
    """What the guards have decided; saved and restored with the engine (warm restart)."""

    kill_switch: bool = False
    reduce_only: bool = False
    reduce_only_symbols: list[str] = []
    liq_breached: list[str] = []
    paused_until: int | None = None
    consecutive_errors: int = 0
    day: int | None = None
    day_start_equity_units: int = 0
    daily_loss_tripped: bool = False
    vol_level: dict[str, int] = {}
    vol_since: dict[str, int] = {}


def annualized_vol(marks: list[float], window: int, interval_s: float) -> float | None:
    """Sample stdev of the last ``window`` log returns, annualized by the cycle interval."""
    if len(marks) < window + 1:
        return None
    tail = marks[-window - 1 :]
    rets = [math.log(b / a) for a, b in itertools.pairwise(tail)]
    mean = math.fsum(rets) / len(rets)
    var = math.fsum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    return math.sqrt(var) * math.sqrt(_YEAR_S / interval_s)


class Guards:
    """Evaluates the runtime guards and records their state changes."""

    def __init__(
        self,
        cfg: RiskConfig,
        interval_s: float,
        market: MarketState,
        ledger: Ledger,
        instruments: dict[str, Instrument],
        outbox: Outbox,
        equity: Callable[[], Fraction],
        cancel_all: Callable[[int], None],
    ) -> None:
        self.cfg = cfg
        self.interval_s = interval_s
        self.market = market
        self.ledger = ledger
        self.instruments = instruments
        self.outbox = outbox
        self.equity = equity
        self.cancel_all = cancel_all
        self.state = GuardState(kill_switch=cfg.kill_switch, reduce_only=cfg.reduce_only)

    def evaluate(self, now: int) -> None:
        self._daily_loss(now)
        self._liquidation_buffer(now)
        self._volatility(now)
        self._error_breaker_expiry(now)

    # -- errors -----------------------------------------------------------------

    def on_error(self, now: int) -> None:
        st = self.state
        st.consecutive_errors += 1
        if st.consecutive_errors >= self.cfg.error_breaker_count and st.paused_until is None:
            st.paused_until = now + round(self.cfg.error_breaker_pause_s * _NS)
            self._event("guard", now, "error_breaker", "on", text_extra=f"{st.consecutive_errors} consecutive errors")

    def on_success(self) -> None:
        self.state.consecutive_errors = 0

    def _error_breaker_expiry(self, now: int) -> None:
        st = self.state
        if st.paused_until is not None and now >= st.paused_until:
            st.paused_until = None
            st.consecutive_errors = 0
            self._event("guard", now, "error_breaker", "off")

    # -- daily loss ---------------------------------------------------------------

    def _daily_loss(self, now: int) -> None:
        st = self.state
        day = now // _DAY
        equity_u = to_units(self.equity())
        if st.day != day:
            first = st.day is None
            st.day = day
            st.day_start_equity_units = equity_u
            if st.daily_loss_tripped and not first:
                st.daily_loss_tripped = False
                st.reduce_only = self.cfg.reduce_only
                self._event("reduce_only", now, "new_day", "off")
            return
        pnl = equity_u - st.day_start_equity_units
        limit = exact(self.cfg.daily_loss_limit) * UNITS_PER_CCY  # a limit, not money: may exceed int64 units
        if not st.daily_loss_tripped and pnl < -limit:
            st.daily_loss_tripped = True
            st.reduce_only = True
            self._event("reduce_only", now, "daily_loss", "on", amount=pnl)
            self.cancel_all(now)

    # -- liquidation buffer -------------------------------------------------------

    def _liquidation_buffer(self, now: int) -> None:
        st = self.state
        equity = self.equity()
        total = Fraction(0)
        open_positions = []
        for symbol, pos in self.ledger.positions.items():
            if pos.qty == 0:
                continue
            vm = self.market.venue_mark(self.market.ids[symbol])
            if vm is None:
                continue
            mark = exact(vm)
            maint = exact(self.instruments[symbol].maintenance_rate)
            total += maint * abs(pos.qty) * pos.contract_size * mark
            open_positions.append((symbol, pos, mark))
        threshold = exact(self.cfg.min_liquidation_buffer_pct)
        breached = []
        for symbol, pos, mark in open_positions:
            distance = (equity - total) / (abs(pos.qty) * pos.contract_size)
            if distance / mark < threshold:
                breached.append(symbol)
        for symbol in breached:
            if symbol not in st.liq_breached:
                st.liq_breached.append(symbol)
                self._hold(symbol)
                self._event("reduce_only", now, "liquidation_buffer", "on", symbol=symbol)
        for symbol in list(st.liq_breached):
            if symbol not in breached:
                st.liq_breached.remove(symbol)
                self._release(symbol)
                self._event("reduce_only", now, "liquidation_buffer", "off", symbol=symbol)

    def _hold(self, symbol: str) -> None:
        if symbol not in self.state.reduce_only_symbols:
            self.state.reduce_only_symbols.append(symbol)

    def _release(self, symbol: str) -> None:
        """Lift a symbol's reduce-only unless the other guard that sets it still holds it."""
        st = self.state
        held = symbol in st.liq_breached or st.vol_level.get(symbol, 0) >= 2
        if not held and symbol in st.reduce_only_symbols:
            st.reduce_only_symbols.remove(symbol)

    # -- volatility ---------------------------------------------------------------

    def _volatility(self, now: int) -> None:
        cfg, st = self.cfg, self.state
        levels = (cfg.volatility_warn, cfg.volatility_reduce_only, cfg.volatility_kill)
        cooldown = round(cfg.volatility_cooldown_s * _NS)
        for symbol in sorted(self.market.ids):
            sid = self.market.ids[symbol]
            vol = annualized_vol(list(self.market.windows[sid]), cfg.volatility_window, self.interval_s)
            if vol is None:
                continue
            level = sum(1 for lv in levels if vol >= lv)
            old = st.vol_level.get(symbol, 0)
            if level > old:
                st.vol_level[symbol] = level
                st.vol_since[symbol] = now
                extra = f"vol={vol:.4f}"
                if level >= 2 > old:  # a jump from calm to kill passes reduce-only on the way
                    self._hold(symbol)
                    self._event("reduce_only", now, "volatility_reduce_only", "on", symbol=symbol, text_extra=extra)
                if level != 2:
                    name = "volatility_warn" if level == 1 else "volatility_kill"
                    self._event("guard", now, name, "on", symbol=symbol, text_extra=extra)
                if level == 3 and not st.kill_switch:
                    st.kill_switch = True
                    self.cancel_all(now)
            elif old and level == 0 and now - st.vol_since.get(symbol, now) >= cooldown:
                st.vol_level[symbol] = 0
                self._release(symbol)
                self._event("guard", now, "volatility", "off", symbol=symbol, text_extra=f"vol={vol:.4f}")

    def _event(
        self,
        kind: str,
        now: int,
        reason: str,
        state: str,
        *,
        symbol: str | None = None,
        amount: int | None = None,
        text_extra: str = "",
    ) -> None:
        text = f"{state} {text_extra}".strip()
        self.outbox.emit(kind, now, symbol=symbol, reason=reason, text=text, amount=amount)
