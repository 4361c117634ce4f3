"""Liquidation prices and equity of cross-margined positions against the formulas, computed afresh.

``Margin.liq_price`` keeps each account state's terms and multiplies in the other
positions' marks; the reference here evaluates the formula of core/margin.py's
docstring directly, from the ledger and marks alone, after every change of marks,
cash or positions (so a stale term would show).
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from perpsim.core.config import VenueConfig
from perpsim.core.instruments import Instrument, exact
from perpsim.core.ledger import Ledger, Position
from perpsim.core.margin import Margin
from perpsim.core.market import MarketState

SYMBOLS = ["A", "B", "C"]


def formula(led: Ledger, marks: dict[str, float | None], inst: dict[str, Instrument], symbol: str) -> Fraction | None:
    pos = led.positions[symbol]
    k = Fraction(led.cash, 10**8)
    for other, p in led.positions.items():
        m = marks[other]
        if other == symbol or p.qty == 0 or m is None:
            continue
        mx = exact(m)
        r = exact(inst[other].maintenance_rate)
        if p.inverse:
            k += p.qty * p.contract_size * (1 / p.entry - 1 / mx) - abs(p.qty) * p.contract_size / mx * r
        else:
            k += p.qty * p.contract_size * (mx - p.entry) - abs(p.qty) * p.contract_size * mx * r
    q, e, cs, r = pos.qty, pos.entry, pos.contract_size, exact(inst[symbol].maintenance_rate)
    if pos.inverse:
        den = k + q * cs / e
        if den == 0:
            return None
        m = cs * (q + abs(q) * r) / den
    else:
        m = (q * cs * e - k) / (cs * (q - abs(q) * r))
    return m if m > 0 else None


# Few distinct values, so that one state often keeps the last one's cash or marks.
price = st.one_of(st.sampled_from([50.0, 99.5, 100.0, 1234.56]), st.integers(1, 200_000).map(lambda n: n / 100))
position = st.tuples(
    st.integers(-50, 50).map(lambda n: Fraction(n, 10)),  # qty, 0 = flat
    st.one_of(st.just(Fraction(100)), st.integers(1, 200_000).map(lambda n: Fraction(n, 100))),  # entry
)
state = st.tuples(
    st.one_of(st.sampled_from([10**11, 10**12]), st.integers(-(10**12), 10**13)),  # cash in units
    st.tuples(position, position, position),
    st.tuples(*(st.one_of(st.none(), price) for _ in SYMBOLS)),  # marks
)
terms = st.tuples(*(st.tuples(st.booleans(), st.sampled_from([0.005, 0.01, 0.1])) for _ in SYMBOLS))


@settings(max_examples=150, deadline=None)
@given(terms, st.lists(state, min_size=1, max_size=6))
def test_liq_price_and_equity_are_the_formulas_after_every_change(contracts: tuple, states: list) -> None:
    inst = {
        s: Instrument(symbol=s, kind="inverse" if inverse else "linear", maintenance_rate=rate)
        for s, (inverse, rate) in zip(SYMBOLS, contracts, strict=True)
    }
    led = Ledger(0)
    market = MarketState()
    for s in SYMBOLS:
        market.intern(s, 1)
    margin = Margin(VenueConfig(), led, market, inst)
    for cash, positions, marks in states:
        led.cash = cash
        for s, (qty, entry) in zip(SYMBOLS, positions, strict=True):
            led.positions[s] = Position(qty=qty, entry=entry, inverse=inst[s].kind == "inverse")
        by_symbol = dict(zip(SYMBOLS, marks, strict=True))
        for s, px in by_symbol.items():
            market.mark_px[market.ids[s]] = float("nan") if px is None else px
        want_equity = Fraction(cash, 10**8)
        for s, (qty, entry) in zip(SYMBOLS, positions, strict=True):
            if qty and by_symbol[s] is not None:
                m = exact(by_symbol[s])
                want_equity += qty * ((1 / entry - 1 / m) if inst[s].kind == "inverse" else (m - entry))
        assert margin.equity() == want_equity
        for s in SYMBOLS:
            if led.positions[s].qty == 0:
                assert margin.liq_price(s) is None
                continue
            want = formula(led, by_symbol, inst, s)
            assert margin.liq_price(s) == want
            assert margin.liq_price(s) == want  # and again, from the cache
