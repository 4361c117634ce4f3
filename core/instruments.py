"""Instruments: tick, lot, contract size, margin and funding terms (DESIGN.md §4).

Resolution order for a symbol: the tape's metadata, then :data:`BUILTIN`, then
:data:`DEFAULT` with a warning (the caller emits it; core does no I/O).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Final, Literal

import msgspec

__all__ = [
    "BUILTIN",
    "DEFAULT",
    "Instrument",
    "exact",
    "resolve",
]


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """Contract terms for one symbol.

    ``tick`` None means prices are not snapped. Linear: size in base units, PnL in
    the quote (settlement) currency. Inverse: size in contracts of ``contract_size``
    quote units each, PnL in the base coin.
    """

    symbol: str
    tick: float | None = None
    lot: float = 0.0001
    contract_size: float = 1.0
    kind: Literal["linear", "inverse"] = "linear"
    maintenance_rate: float = 0.005
    funding_interval_s: int = 3600
    min_notional: float = 0.0
    max_leverage: float = 20.0
    product_id: str | None = None


DEFAULT: Final = Instrument(symbol="*")

BUILTIN: Final[dict[str, Instrument]] = {
    i.symbol: i
    for i in (
        Instrument(symbol="BTC-PERP", tick=0.1, lot=0.0001, product_id="BTC-PERP-INTX", min_notional=10.0),
        Instrument(symbol="ETH-PERP", tick=0.01, lot=0.001, product_id="ETH-PERP-INTX", min_notional=10.0),
        Instrument(symbol="SOL-PERP", tick=0.01, lot=0.01, product_id="SOL-PERP-INTX", min_notional=10.0),
        Instrument(symbol="BTCUSDT", tick=0.1, lot=0.001, funding_interval_s=8 * 3600, max_leverage=125.0),
        Instrument(symbol="ETHUSDT", tick=0.01, lot=0.001, funding_interval_s=8 * 3600, max_leverage=100.0),
        Instrument(
            symbol="BTCUSD-INV",
            tick=0.1,
            lot=1.0,
            contract_size=100.0,
            kind="inverse",
            funding_interval_s=8 * 3600,
            max_leverage=100.0,
        ),
    )
}


def resolve(symbol: str, from_tape: dict[str, Instrument] | None = None) -> tuple[Instrument, bool]:
    """The instrument for ``symbol`` and whether it fell back to the defaults."""
    if from_tape and symbol in from_tape:
        return from_tape[symbol], False
    if symbol in BUILTIN:
        return BUILTIN[symbol], False
    return msgspec.structs.replace(DEFAULT, symbol=symbol), True


@lru_cache(maxsize=65536)
def exact(x: float) -> Fraction:
    """The decimal a float prints as, exactly: ``exact(0.1) == Fraction(1, 10)``.

    Prices and sizes are snapped to decimal ticks and lots, so their shortest repr is
    the value a person means; money arithmetic runs on these, never on binary floats.
    """
    return Fraction(repr(x))
