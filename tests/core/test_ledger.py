"""The ledger recomputed independently from the fills with fractions.Fraction (issue 2)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpsim.core.errors import InputError, MoneyOutOfRange
from perpsim.core.ledger import Ledger, to_units
from tests.helpers import MIN, T0, S, cycle_ts, funding, kinds, mark_tape, run
from tests.scripted import Scripted


def recompute(events: list[dict]) -> tuple[int, int, int, int]:
    """Cash, realized, fees and funding from the event stream alone, in units."""
    qty, entry = Fraction(0), Fraction(0)
    cash = realized = fees = fund = 0
    cash = 100_000 * 10**8
    for e in events:
        if e["kind"] == "fill":
            q = Fraction(repr(e["qty"])) * (1 if e["side"] == "buy" else -1)
            px = Fraction(repr(e["price"]))
            r = Fraction(0)
            if qty and (qty > 0) != (q > 0):
                closed = min(abs(qty), abs(q))
                r = closed * (px - entry) * (1 if qty > 0 else -1)
            new = qty + q
            if new == 0:
                entry = Fraction(0)
            elif qty == 0 or (qty > 0) != (new > 0):
                entry = px
            elif abs(new) > abs(qty):
                entry = (entry * abs(qty) + px * abs(q)) / abs(new)
            qty = new
            ru = round(r * 10**8)
            fu = round(abs(q) * px * Fraction(4, 10_000) * 10**8)
            assert (ru, fu) == (e["amount"], e["fee"]), e
            realized += ru
            fees += fu
            cash += ru - fu
        elif e["kind"] == "funding":
            amount = round(-qty * Fraction(repr(e["price"])) * Fraction(e["text"]) * 10**8)
            assert amount == e["amount"], e
            fund += amount
            cash += amount
    return cash, realized, fees, fund


def test_round_half_even_to_units() -> None:
    assert to_units(Fraction(5, 10**9)) == 0  # 0.5 unit → even 0
    assert to_units(Fraction(15, 10**9)) == 2  # 1.5 units → 2
    assert to_units(Fraction(-25, 10**9)) == -2


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.fractions(),
        st.integers(-(10**12), 10**12).map(lambda n: Fraction(2 * n + 1, 2 * 10**8)),  # exact half units
        st.integers(-(10**30), 10**30),
    )
)
def test_to_units_rounds_as_round_does(amount: Fraction) -> None:
    """to_units computes in integers; Python's round() of the Fraction is the reference.
    Beyond int64 units (every money column's type) it refuses."""
    expected = round(Fraction(amount) * 10**8)
    if -(2**63) <= expected < 2**63:
        assert to_units(amount) == expected
    else:
        with pytest.raises(InputError, match="money beyond the ledger's range"):
            to_units(amount)


def test_ledger_average_entry_is_exact() -> None:
    led = Ledger(0)
    led.book_fill("X", Fraction(1), Fraction(100), Fraction(0), Fraction(1), 0)
    led.book_fill("X", Fraction(2), Fraction(103), Fraction(0), Fraction(1), 0)
    assert led.position("X").entry == Fraction(306, 3)
    b = led.book_fill("X", Fraction(-3), Fraction(101), Fraction(0), Fraction(1), 0)
    assert b.realized == to_units(Fraction(3) * (Fraction(101) - Fraction(102))) == -3 * 10**8


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["fill", "mark"]),
            st.integers(-5, 5).filter(bool),
            st.decimals(min_value="1", max_value="200", places=2).map(Fraction),
        ),
        min_size=1,
        max_size=12,
    ),
    inverse=st.booleans(),
)
def test_unrealized_pnl_follows_every_fill_and_mark(steps, inverse) -> None:
    """Unrealized PnL is kept per position and mark: after any fill or new mark it is the
    formula's value again, linear ``q*cs*(m - e)`` or inverse ``q*cs*(1/e - 1/m)``."""
    led, cs, mark = Ledger(10**12), Fraction(10), Fraction(100)
    for what, q, px in steps:
        if what == "fill":
            led.book_fill("X", Fraction(q), px, Fraction(0), cs, 0, inverse)
        else:
            mark = px
        pos = led.position("X")
        want = pos.qty * cs * ((1 / pos.entry - 1 / mark) if inverse else (mark - pos.entry)) if pos.qty else 0
        assert led.unrealized("X", mark) == want
        assert led.unrealized("X", mark) == want  # asked twice, as a cycle does


orders = st.lists(
    st.tuples(
        st.integers(1, 8),
        st.sampled_from(["buy", "sell"]),
        st.decimals(min_value="0.0001", max_value="3", places=4).map(float),
        st.booleans(),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(
    orders=orders,
    prices=st.lists(st.decimals(min_value="50", max_value="150", places=1).map(float), min_size=8, max_size=8),
    rates=st.lists(st.decimals(min_value="-0.001", max_value="0.001", places=6).map(float), min_size=3, max_size=3),
)
def test_ledger_reconciles_to_the_unit_after_any_order_sequence(orders, prices, rates) -> None:
    extra = [funding(cycle_ts(k) + k, rate) for k, rate in zip((2, 4, 7), rates)]
    script = [[c, "BTC-PERP", side, q, {"reduce_only": ro}] for c, side, q, ro in orders]
    r = run(mark_tape(prices, extra=extra), strategy=Scripted, params={"orders": script})
    cash, realized, fees, fund = recompute(r.events.to_dicts())
    u = r.summary["units"]
    assert (cash, realized, fees, fund) == (u["cash_end"], u["realized"], u["fees"], u["funding"])
    assert u["cash_end"] == u["cash_start"] + u["realized"] - u["fees"] + u["funding"]
    assert len(kinds(r, "error")) == 0


@pytest.mark.parametrize(
    ("price", "amount"),
    [
        (1e300, "beyond 1e300"),
        # equity 1.5e11 is 1.5e19 units: past int64 (9.2e18) though inside uint64, which
        # the digest's encoder would have taken, and the equity column would not
        (1.5e11, "of 1.5e+11"),
    ],
)
def test_money_beyond_int64_units_is_one_input_error_not_a_crash(price: float, amount: str) -> None:
    # long 1 from 100, then trades at ``price``: the cycle's equity fits no int64 unit
    message = rf"^at 2023-11-14 22:16:00\.000Z: an amount {re.escape(amount)}: money beyond the ledger's range"
    with pytest.raises(InputError, match=message):
        run(mark_tape([100.0, price, price]), strategy=Scripted, params={"orders": [[1, "BTC-PERP", "buy", 1.0]]})


def test_money_out_of_range_in_strategy_code_stops_the_run_and_says_when() -> None:
    # long 1 from 100; the cycle at 22:16 sells it into a trade at 1e12: the realized PnL
    # (1e20 units) fits no int64. Raised inside on_cycle, it was an error event and the run
    # went on with the position gone and no fill booked
    with pytest.raises(MoneyOutOfRange, match=r"^at 2023-11-14 22:16:00\.000Z: an amount of 1e\+12: money beyond"):
        run(
            mark_tape([100.0, 1e12, 1e12]),
            strategy=Scripted,
            params={"orders": [[1, "BTC-PERP", "buy", 1.0], [2, "BTC-PERP", "sell", 1.0]]},
        )


def test_money_out_of_range_after_the_last_cycle_leaves_no_run_directory(tmp_path: Path) -> None:
    # the last cycle is fine; a trade after it puts the final equity (for the summary) out
    # of range: the run fails as bad input does, and its directory goes
    from perpsim.core.events import Trade

    late = T0 + 3 * MIN + 30 * S
    evs = mark_tape([100.0, 100.0, 100.0])
    evs.append(Trade(ts=late, recv_ts=late, symbol="BTC-PERP", price=1.5e11, size=1.0, side=1))
    with pytest.raises(MoneyOutOfRange):
        run(evs, strategy=Scripted, params={"orders": [[1, "BTC-PERP", "buy", 1.0]]}, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
