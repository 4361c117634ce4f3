"""Cross margin, liquidation prices and the liquidation trigger (issue 4 item 7).

One account, cross margin, in the settlement currency (see :mod:`perpsim.core.ledger`):

- **Equity** = cash + unrealized PnL of every position at its venue mark (DESIGN.md
  §5 "Marks": the last ``mark`` row, else the last trade, else the mid).
- **Initial margin** of a position or order = notional / leverage, where leverage is
  ``venue.leverage`` capped at the instrument's ``max_leverage`` (None: the max).
  Notional: linear ``|qty| * contract_size * price``; inverse
  ``|qty| * contract_size / price`` (coin).
- **Free margin** = equity - initial margin of the positions (at the mark) - initial
  margin of resting limit orders (the part of each that would open exposure against
  the current position). An order whose opening part needs more initial margin than
  is free is rejected (``insufficient_margin``); reduce-only and closing parts need none.
  Stops reserve nothing until they trigger and are checked then.
- **Maintenance margin** = sum of notional at the mark * the instrument's
  ``maintenance_rate`` (default 0.5%; one rate, no brackets).
- **Liquidation**: when equity <= maintenance margin every position is closed at its
  mark, paying ``liquidation_fee_bps`` of notional as a fee (at most what is left of
  the margin: the fee never takes cash below zero), and every open order is cancelled.
  Cash ends below zero only if the mark gapped past the bankruptcy price: there is no
  insurance fund and no auto-deleveraging.

The **liquidation price** of a position is the mark at which equity would equal
maintenance margin, with every other position held at its current mark:

- linear: ``m = (Q*cs*E - K) / (cs*(Q - |Q|*r))``
- inverse: ``m = cs*(Q + |Q|*r) / (K + Q*cs/E)``

with ``Q`` signed qty, ``E`` entry, ``cs`` contract size, ``r`` maintenance rate and
``K`` = cash + the other positions' (unrealized - maintenance). None when no positive
price liquidates the position.

Hot path: equity - maintenance is linear in each mark (inverse: in 1/mark), so it is
kept as float coefficients per position, re-armed exactly after every fill, funding
payment and liquidation. A price row of a symbol with a position costs a few float
operations; only when the float slack comes within a tolerance of zero does the exact
check run (and it alone decides).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from perpsim.core.config import VenueConfig
from perpsim.core.instruments import Instrument, exact
from perpsim.core.ledger import UNITS_PER_CCY, Ledger, Position
from perpsim.core.market import MarketState
from perpsim.core.orders import Order

__all__ = ["Margin"]

_ZERO: Final = Fraction(0)
_TOL: Final = 1e-6

# A liquidation price's terms: base, scale, inverse, and each other position's
# (symbol, c0, c1, inverse) for its (unrealized - maintenance) at its mark.
_LiqTerms = tuple[Fraction, Fraction, bool, list[tuple[str, Fraction, Fraction, bool]]]


def _solve(terms: _LiqTerms, marks: tuple[float | None, ...]) -> Fraction | None:
    """The liquidation price from its terms and the other positions' marks (None: no mark, no term)."""
    base, scale, inverse, others = terms
    k = _ZERO
    for (_, c0, c1, inv), px in zip(others, marks, strict=True):
        if px is not None:
            mark = exact(px)
            k += c0 + (c1 / mark if inv else c1 * mark)
    if inverse:
        den = base + k
        if den == 0:
            return None
        found = scale / den
    else:
        found = (base - k) / scale
    return found if found > 0 else None


class Margin:
    """The account's margin arithmetic over the ledger, the market's marks and the instruments."""

    def __init__(
        self,
        cfg: VenueConfig,
        ledger: Ledger,
        market: MarketState,
        instruments: dict[str, Instrument],
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.market = market
        self.instruments = instruments
        self.check_orders = cfg.margin_check
        self.liquidates = cfg.liquidation
        # fast check state, indexed by symbol id
        self._a: list[float] = []
        self._b: list[float] = []
        self._inv: list[bool] = []
        self._contrib: list[float] = []
        self._open: list[int] = []  # sids with a position, in ledger order
        self.watch: list[bool] = []  # per sid: a position is open and liquidation is on
        self._cash = 0.0
        self._tol = _TOL
        self._liq_cache: dict[str, tuple[object, _LiqTerms, object, Fraction | None]] = {}

    # -- exact quantities --------------------------------------------------------

    def leverage(self, inst: Instrument) -> Fraction:
        cap = exact(inst.max_leverage)
        if self.cfg.leverage is None:
            return cap
        return min(exact(self.cfg.leverage), cap)

    def mark(self, symbol: str) -> Fraction | None:
        px = self._mark_px(symbol)
        return None if px is None else exact(px)

    def _mark_px(self, symbol: str) -> float | None:
        sid = self.market.ids.get(symbol)
        return None if sid is None else self.market.venue_mark(sid)

    def equity(self) -> Fraction:
        """Cash plus unrealized PnL at venue marks, exactly."""
        num, den = self.ledger.cash, UNITS_PER_CCY  # summed in integers, reduced once
        for symbol, pos in self.ledger.positions.items():
            if pos.qty != 0:
                u = self.ledger.unrealized(symbol, self.mark(symbol))
                num, den = num * u.denominator + u.numerator * den, den * u.denominator
        return Fraction(num, den)

    def maintenance(self) -> Fraction:
        """Maintenance margin of every position at its venue mark."""
        total = _ZERO
        for symbol, pos in self.ledger.positions.items():
            m = self.mark(symbol) if pos.qty != 0 else None
            if m is not None:
                total += pos.notional(m) * exact(self.instruments[symbol].maintenance_rate)
        return total

    def position_margin(self) -> Fraction:
        """Initial margin of every position at its venue mark."""
        total = _ZERO
        for symbol, pos in self.ledger.positions.items():
            m = self.mark(symbol) if pos.qty != 0 else None
            if m is not None:
                total += pos.notional(m) / self.leverage(self.instruments[symbol])
        return total

    def order_margin(self, order: Order, qty: Fraction, price: Fraction) -> Fraction:
        """Initial margin of the part of ``qty`` at ``price`` that opens exposure."""
        if order.reduce_only:
            return _ZERO
        inst = self.instruments[order.symbol]
        pos = self.ledger.qty(order.symbol)
        signed = qty if order.side > 0 else -qty
        opening = max(abs(pos + signed) - abs(pos), _ZERO)
        if opening == 0:
            return _ZERO
        cs = exact(inst.contract_size)
        notional = opening * cs / price if inst.kind == "inverse" else opening * cs * price
        return notional / self.leverage(inst)

    def free(self, resting: list[Order]) -> Fraction:
        """Equity less the initial margin of positions and of ``resting`` limit orders."""
        used = self.position_margin()
        for o in resting:
            lim = o.limit
            if lim is not None and not o.is_stop:  # an armed stop-limit reserves nothing until it triggers
                used += self.order_margin(o, o.remaining, lim)
        return self.equity() - used

    def slack(self) -> Fraction:
        """Equity minus maintenance margin; the account is liquidated when it is <= 0."""
        return self.equity() - self.maintenance()

    def liq_price(self, symbol: str) -> Fraction | None:
        """The mark at which ``symbol``'s position would be liquidated (others held), or None.

        ``K`` is affine in each other position's mark (inverse: in 1/mark), so its terms
        are kept per account state (cash and every position) and only the marks are
        multiplied in: a cycle with moving marks costs a few exact operations.
        """
        pos = self.ledger.positions.get(symbol)
        if pos is None or pos.qty == 0:
            return None
        led = self.ledger
        state = (led.cash, tuple((o, p.qty, p.entry) for o, p in led.positions.items() if p.qty != 0))
        cached = self._liq_cache.get(symbol)
        if cached is None or cached[0] != state:
            cached = (state, self._liq_terms(symbol, pos), None, None)
        terms = cached[1]
        marks = tuple(self._mark_px(o) for o, _, _, _ in terms[3])
        if cached[2] == marks:
            return cached[3]
        found = _solve(terms, marks)
        self._liq_cache[symbol] = (state, terms, marks, found)  # one entry per symbol
        return found

    def _liq_terms(self, symbol: str, pos: Position) -> _LiqTerms:
        """The liquidation price's terms (module docstring) for the account as it is now."""
        led = self.ledger
        cash = Fraction(led.cash, UNITS_PER_CCY)
        others: list[tuple[str, Fraction, Fraction, bool]] = []
        for other, p in led.positions.items():
            if other == symbol or p.qty == 0:
                continue
            q, e, cs = p.qty, p.entry, p.contract_size
            r = exact(self.instruments[other].maintenance_rate)
            # (unrealized - maintenance) at mark m = c0 + c1 * m (inverse: c0 + c1 / m)
            if p.inverse:
                others.append((other, q * cs / e, -cs * (q + abs(q) * r), True))
            else:
                others.append((other, -q * cs * e, cs * (q - abs(q) * r), False))
        q, e, cs = pos.qty, pos.entry, pos.contract_size
        r = exact(self.instruments[symbol].maintenance_rate)
        if pos.inverse:  # m = cs*(Q + |Q|*r) / (cash + Q*cs/E + others)
            return (cash + q * cs / e, cs * (q + abs(q) * r), True, others)
        return (q * cs * e - cash, cs * (q - abs(q) * r), False, others)  # m = (Q*cs*E - cash - others) / scale

    # -- the fast check ----------------------------------------------------------

    def add_symbol(self, sid: int) -> None:
        for col, v in ((self._a, 0.0), (self._b, 0.0), (self._contrib, 0.0)):
            while len(col) <= sid:
                col.append(v)
        while len(self._inv) <= sid:
            self._inv.append(False)
        while len(self.watch) <= sid:
            self.watch.append(False)

    def arm(self) -> None:
        """Recompute the float coefficients from the ledger (after any booking)."""
        led, m = self.ledger, self.market
        self._cash = led.cash / UNITS_PER_CCY
        for was in self._open:
            self.watch[was] = False
        self._open = []
        gross = 0.0
        for symbol, pos in led.positions.items():
            sid = m.ids.get(symbol)
            if sid is None or pos.qty == 0:
                if sid is not None:
                    self._contrib[sid] = 0.0
                continue
            a, b = self._coefficients(pos, exact(self.instruments[symbol].maintenance_rate))
            self._a[sid], self._b[sid], self._inv[sid] = float(a), float(b), pos.inverse
            mark = m.venue_mark(sid)
            self._contrib[sid] = self._value(sid, mark) if mark is not None else 0.0
            self._open.append(sid)
            self.watch[sid] = self.liquidates
            gross += abs(float(b))
        self._tol = _TOL + 1e-12 * gross

    @staticmethod
    def _coefficients(pos: Position, r: Fraction) -> tuple[Fraction, Fraction]:
        q, cs, e = pos.qty, pos.contract_size, pos.entry
        if pos.inverse:  # contrib = b - a/m
            return cs * (q + abs(q) * r), q * cs / e
        return cs * (q - abs(q) * r), -q * cs * e  # contrib = a*m + b

    def _value(self, sid: int, mark: float) -> float:
        if self._inv[sid]:
            return self._b[sid] - self._a[sid] / mark
        return self._a[sid] * mark + self._b[sid]

    @property
    def has_positions(self) -> bool:
        return bool(self._open)

    def band(self, sid: int) -> tuple[float, float]:
        """Marks of ``sid`` (others held) that cannot trigger the exact check: ``(lo, hi)`` exclusive.

        ``(-inf, inf)`` without a position. A driver that skips rows in bulk may skip a
        symbol kept active only by the liquidation watch while its marks stay inside.
        """
        inf = float("inf")
        if not self.watch[sid]:
            return -inf, inf
        rest = self._cash - self._tol
        for x in self._open:
            if x != sid:
                rest += self._contrib[x]
        a, b = self._a[sid], self._b[sid]
        if not self._inv[sid]:  # need a*m + b + rest > 0
            if a > 0:
                return (-(b + rest) / a, inf)
            if a < 0:
                return (-inf, -(b + rest) / a)
            return (-inf, inf) if b + rest > 0 else (inf, -inf)
        # inverse: need b - a/m + rest > 0, m > 0
        k = b + rest
        if a > 0:
            return (a / k, inf) if k > 0 else (inf, -inf)
        if a < 0:
            return (-inf, inf) if k > 0 else (-inf, a / k) if k < 0 else (inf, -inf)
        return (-inf, inf) if k > 0 else (inf, -inf)

    def resync(self, sid: int, mark: float) -> None:
        """Set ``sid``'s mark in the fast check without checking (a bulk skip stopped inside its band)."""
        if self.watch[sid]:
            self._contrib[sid] = self._value(sid, mark)

    def skip_band(self, sid: int, k: int) -> tuple[float, float]:
        """Marks of ``sid`` that keep the fast check far from tripping while ``k`` watched symbols move.

        Each of the ``k`` symbols may spend at most half of ``1/k`` of the current slack
        (equity - maintenance - tolerance), so no combination of marks inside every
        symbol's band can bring the slack near zero: rows inside may be skipped in bulk.
        ``(inf, -inf)`` (empty) when there is no slack to share.
        """
        inf = float("inf")
        if not self.watch[sid]:
            return -inf, inf
        total = self._cash - self._tol
        for x in self._open:
            total += self._contrib[x]
        if not total > 0:
            return inf, -inf
        floor = self._contrib[sid] - total / (2 * k)  # contrib(mark) must stay above this
        a, b = self._a[sid], self._b[sid]
        if not self._inv[sid]:  # contrib = a*m + b
            if a > 0:
                return (floor - b) / a, inf
            if a < 0:
                return -inf, (floor - b) / a
            return (-inf, inf) if b > floor else (inf, -inf)
        # inverse: contrib = b - a/m with m > 0
        gap = b - floor
        if a > 0:
            return (a / gap, inf) if gap > 0 else (inf, -inf)
        if a < 0:
            return (-inf, inf) if gap >= 0 else (-inf, a / gap)
        return (-inf, inf) if gap > 0 else (inf, -inf)

    def breached(self, sid: int, mark: float) -> bool:
        """Update ``sid``'s mark in the fast check; True when the exact check must run.

        Callers pass only marks of symbols with a position.
        """
        c = self._b[sid] - self._a[sid] / mark if self._inv[sid] else self._a[sid] * mark + self._b[sid]
        self._contrib[sid] = c
        if len(self._open) == 1:
            return self._cash + c <= self._tol
        s = self._cash
        for x in self._open:
            s += self._contrib[x]
        return s <= self._tol
