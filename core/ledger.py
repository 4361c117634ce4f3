"""The paper ledger: exact money in integer units of 1e-8 of the settlement currency.

DESIGN.md §5: each fee, realized PnL and funding amount is rounded half-even to
one unit once, when booked, so ``cash == cash_start + realized - fees + funding``
holds to the unit. Quantities and prices are exact decimals (``Fraction``) of the
snapped float values; average entry price is kept exactly.

One currency per ledger. A run settles in the quote currency when it trades linear
instruments and in the base coin (1e-8 coin = one satoshi for BTC) when it trades
inverse ones; ``starting_balance`` is in that currency. The venue fixes
:attr:`Ledger.currency` at the first admitted order and rejects orders on an
instrument that settles in another currency (``settlement_currency_mismatch``), so
amounts in one ledger are never mixed.

Inverse positions (``inverse=True``): ``qty`` contracts of ``contract_size`` quote
units. Their value in coin at price ``p`` is ``qty * contract_size / p``; the entry is
the harmonic average of the fill prices (``|qty| / entry == sum(|q_i| / p_i)``), so
realized PnL on a close of ``c`` contracts is ``c * contract_size * (1/entry - 1/p)``
times the sign of the position; fees are ``|q| * contract_size / p * rate`` and funding
``-qty * contract_size / mark * rate``, all in coin.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import msgspec

from perpsim.core.errors import MoneyOutOfRange

__all__ = ["MAX_UNITS", "OUT_OF_RANGE", "UNITS_PER_CCY", "Booking", "Ledger", "Position", "to_units", "units_to_float"]

UNITS_PER_CCY: Final = 10**8
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
MAX_UNITS: Final = _I64_MAX  # the most a ledger amount can hold, in units
OUT_OF_RANGE: Final = "int64 units of 1e-8, about ±92 billion: prices, sizes or a balance out of scale"
_ZERO: Final = Fraction(0)


def to_units(amount: Fraction) -> int:
    """Round an exact currency amount half-even to ledger units.

    ``round(amount * UNITS_PER_CCY)`` in integers: the same result in a quarter of the
    time, and every cycle's equity row rounds each position's PnL.
    """
    den = amount.denominator
    q, r = divmod(amount.numerator * UNITS_PER_CCY, den)
    twice = 2 * r
    q = q + 1 if twice > den or (twice == den and q & 1) else q
    if not _I64_MIN <= q <= _I64_MAX:  # every money column is int64 units
        size = f"of {q / UNITS_PER_CCY:.3g}" if q.bit_length() < 1000 else "beyond 1e300"
        raise MoneyOutOfRange(f"an amount {size}: money beyond the ledger's range ({OUT_OF_RANGE})")
    return q


def units_to_float(units: int) -> float:
    return units / UNITS_PER_CCY


class Position(msgspec.Struct, kw_only=True):
    """A symbol's position: signed ``qty`` (base units or contracts), exact average entry."""

    qty: Fraction = _ZERO
    entry: Fraction = _ZERO
    contract_size: Fraction = Fraction(1)
    opened_ns: int = 0
    inverse: bool = False

    def notional(self, price: Fraction) -> Fraction:
        """The absolute value of the position at ``price``, in the settlement currency."""
        if self.inverse:
            return abs(self.qty) * self.contract_size / price
        return abs(self.qty) * self.contract_size * price


class Booking(msgspec.Struct, frozen=True, kw_only=True):
    """What one fill did to the ledger, in units."""

    realized: int
    fee: int
    cash_after: int
    position_after: Fraction


class Ledger:
    """Cash, positions and running totals; every change is booked through a method here."""

    def __init__(self, cash_units: int) -> None:
        self.cash_start = cash_units
        self.cash = cash_units
        self.realized = 0
        self.fees = 0
        self.funding = 0
        self.positions: dict[str, Position] = {}
        self.currency: str | None = None
        # symbol -> (qty, entry, contract_size, inverse, mark, unrealized): a cycle asks for
        # the same PnL for sizing, margin and its equity row. Fractions are immutable and a
        # change replaces them, so ``is`` on the kept objects is an exact key.
        self._unreal: dict[str, tuple[Fraction, Fraction, Fraction, bool, Fraction, Fraction]] = {}

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position()
        return pos

    def open_positions(self) -> bool:
        """True if any position is not flat (a cheap test before exact sums)."""
        return any(p.qty for p in self.positions.values())

    def qty(self, symbol: str) -> Fraction:
        pos = self.positions.get(symbol)
        return pos.qty if pos is not None else _ZERO

    def book_fill(
        self,
        symbol: str,
        signed_qty: Fraction,
        price: Fraction,
        fee_rate: Fraction,
        contract_size: Fraction,
        ts: int,
        inverse: bool = False,
        fee_cap: int | None = None,
    ) -> Booking:
        """Book a fill of ``signed_qty`` (+ buy, - sell) at ``price``.

        Realized PnL is on the closed part at ``(price - entry) * sign(position)``
        (inverse: ``(1/entry - 1/price)``, in coin); a fill that flips through zero
        closes the old position and opens the rest at ``price``. ``fee_rate`` may be
        negative (a maker rebate). ``fee_cap`` (units) limits a positive fee to what cash
        holds after the realized PnL, never below zero (a liquidation fee takes at most the
        remaining margin).
        """
        pos = self.position(symbol)
        pos.contract_size = contract_size
        pos.inverse = inverse
        old = pos.qty
        realized = _ZERO
        if old != 0 and (old > 0) != (signed_qty > 0):
            closed = min(abs(old), abs(signed_qty))
            sign = 1 if old > 0 else -1
            if inverse:
                realized = closed * contract_size * (1 / pos.entry - 1 / price) * sign
            else:
                realized = closed * (price - pos.entry) * sign * contract_size
        # in units before anything changes: an amount out of range (to_units raises) leaves
        # the books as they were
        realized_u = to_units(realized)
        traded = abs(signed_qty) * contract_size
        fee_u = to_units((traded / price if inverse else traded * price) * fee_rate)
        new = old + signed_qty
        if new == 0:
            pos.entry = _ZERO
        elif old == 0 or (old > 0) != (new > 0):
            pos.entry = price
            pos.opened_ns = ts
        elif abs(new) > abs(old):
            if inverse:
                pos.entry = abs(new) / (abs(old) / pos.entry + abs(signed_qty) / price)
            else:
                pos.entry = (pos.entry * abs(old) + price * abs(signed_qty)) / abs(new)
        pos.qty = new
        if fee_cap is not None and fee_u > 0:
            fee_u = min(fee_u, max(fee_cap + realized_u, 0))
        self.realized += realized_u
        self.fees += fee_u
        self.cash += realized_u - fee_u
        return Booking(realized=realized_u, fee=fee_u, cash_after=self.cash, position_after=new)

    def book_funding(self, symbol: str, mark: Fraction, rate: Fraction) -> int | None:
        """Settle funding on the position held now; a long pays a positive rate.

        Returns the units paid (negative) or received, or None with no position.
        """
        pos = self.positions.get(symbol)
        if pos is None or pos.qty == 0:
            return None
        value = pos.qty * pos.contract_size / mark if pos.inverse else pos.qty * pos.contract_size * mark
        amount = to_units(-value * rate)
        self.funding += amount
        self.cash += amount
        return amount

    def unrealized(self, symbol: str, mark: Fraction | None) -> Fraction:
        pos = self.positions.get(symbol)
        if pos is None or pos.qty == 0 or mark is None:
            return _ZERO
        qty, entry, cs, inverse = pos.qty, pos.entry, pos.contract_size, pos.inverse
        kept = self._unreal.get(symbol)
        if (
            kept is not None
            and kept[0] is qty
            and kept[1] is entry
            and kept[2] is cs
            and kept[3] is inverse
            and kept[4] is mark
        ):
            return kept[5]
        # qty*cs*(mark - entry), or qty*cs*(1/entry - 1/mark), in integers: one reduction
        qn, qd = qty.numerator * cs.numerator, qty.denominator * cs.denominator
        mn, md, en, ed = mark.numerator, mark.denominator, entry.numerator, entry.denominator
        if inverse:
            value = Fraction(qn * (ed * mn - md * en), qd * en * mn)
        else:
            value = Fraction(qn * (mn * ed - en * md), qd * md * ed)
        self._unreal[symbol] = (qty, entry, cs, inverse, mark, value)
        return value

    def reconciles(self) -> bool:
        """The ledger identity of DESIGN.md §5, exactly."""
        return self.cash == self.cash_start + self.realized - self.fees + self.funding
