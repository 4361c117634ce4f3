"""The paper ledger: exact money in integer units of 1e-8 of the settlement currency.

DESIGN.md §5: each fee, realized PnL and funding amount is rounded half-even to
one unit once, when booked, so ``cash == cash_start + realized - fees + funding``
holds to the unit. Quantities and prices are exact decimals (``Fraction``) of the
snapped float values; average entry price is kept exactly.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import msgspec

__all__ = ["UNITS_PER_CCY", "Booking", "Ledger", "Position", "to_units", "units_to_float"]

UNITS_PER_CCY: Final = 10**8
_ZERO: Final = Fraction(0)


def to_units(amount: Fraction) -> int:
    """Round an exact currency amount half-even to ledger units."""
    return round(amount * UNITS_PER_CCY)


def units_to_float(units: int) -> float:
    return units / UNITS_PER_CCY


class Position(msgspec.Struct, kw_only=True):
    """A symbol's position: signed ``qty`` (base units or contracts), exact average entry."""

    qty: Fraction = _ZERO
    entry: Fraction = _ZERO
    contract_size: Fraction = Fraction(1)
    opened_ns: int = 0


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

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position()
        return pos

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
    ) -> Booking:
        """Book a fill of ``signed_qty`` (+ buy, - sell) at ``price``.

        Realized PnL is on the closed part at ``(price - entry) * sign(position)``;
        a fill that flips through zero closes the old position and opens the rest at
        ``price``. ``fee_rate`` may be negative (a maker rebate).
        """
        pos = self.position(symbol)
        pos.contract_size = contract_size
        old = pos.qty
        realized = _ZERO
        if old != 0 and (old > 0) != (signed_qty > 0):
            closed = min(abs(old), abs(signed_qty))
            sign = 1 if old > 0 else -1
            realized = closed * (price - pos.entry) * sign * contract_size
        new = old + signed_qty
        if new == 0:
            pos.entry = _ZERO
        elif old == 0 or (old > 0) != (new > 0):
            pos.entry = price
            pos.opened_ns = ts
        elif abs(new) > abs(old):
            pos.entry = (pos.entry * abs(old) + price * abs(signed_qty)) / abs(new)
        pos.qty = new
        realized_u = to_units(realized)
        fee_u = to_units(abs(signed_qty) * price * contract_size * fee_rate)
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
        amount = to_units(-pos.qty * pos.contract_size * mark * rate)
        self.funding += amount
        self.cash += amount
        return amount

    def unrealized(self, symbol: str, mark: Fraction | None) -> Fraction:
        pos = self.positions.get(symbol)
        if pos is None or pos.qty == 0 or mark is None:
            return _ZERO
        return pos.qty * pos.contract_size * (mark - pos.entry)

    def reconciles(self) -> bool:
        """The ledger identity of DESIGN.md §5, exactly."""
        return self.cash == self.cash_start + self.realized - self.fees + self.funding
