"""Instruments: tick, lot, contract size, margin and funding terms (DESIGN.md §4).

Resolution order for a symbol: the tape's metadata, then :data:`BUILTIN`, then
:data:`DEFAULT` with a warning (the caller emits it; core does no I/O).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Final, Literal

import msgspec

from perpsim.core.memo import register_memo

__all__ = [
    "BUILTIN",
    "DEFAULT",
    "Instrument",
    "exact",
    "resolve",
    "settlement_currency",
]


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """Contract terms for one symbol.

    ``tick`` None means prices are not snapped. Linear: size in base units, PnL in
    the quote (settlement) currency. Inverse: size in contracts of ``contract_size``
    quote units each (e.g. 100 USD), PnL, fees, funding and margin in the base coin
    ``base``.

    ``min_notional``: orders below it are rejected (linear: ``qty * contract_size *
    price``; inverse: ``qty * contract_size``, in quote units); reduce-only orders are
    exempt. ``max_leverage`` caps the account's leverage on this instrument (initial
    margin = notional / leverage). ``maintenance_rate``: maintenance margin as a
    fraction of notional at the mark. ``funding_interval_s``: the interval of a
    constant-rate funding schedule.
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
    base: str | None = None


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
            base="BTC",
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


def settlement_currency(inst: Instrument) -> str:
    """The currency an instrument settles in: ``"quote"`` for linear, the base coin for inverse.

    Every linear instrument shares one quote bucket (USD and USDT are not told apart); an
    inverse instrument settles in ``base`` (its symbol when ``base`` is not set).
    """
    if inst.kind == "linear":
        return "quote"
    return inst.base or inst.symbol


@lru_cache(maxsize=65536)
def exact(x: float) -> Fraction:
    """The decimal a float prints as, exactly: ``exact(0.1) == Fraction(1, 10)``.

    Prices and sizes are snapped to decimal ticks and lots, so their shortest repr is
    the value a person means; money arithmetic runs on these, never on binary floats.
    """
    return Fraction(repr(x))


register_memo(exact.cache_clear)
