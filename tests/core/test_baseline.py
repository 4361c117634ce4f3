"""The baseline strategy's rules (issue 2 "Exact semantics") on hand-computed marks.

short=2, long=3 throughout: d = 3*sum(last 2) - 2*sum(last 3).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpsim.core.baseline import MACrossover, crossover
from perpsim.core.errors import ConfigError
from tests.helpers import cycle_ts, kinds, mark_tape, run

P = {"short": 2, "long": 3}
FLAT4 = [10.0, 10.0, 10.0, 10.0]


def decisions(result, symbol="BTC-PERP"):
    return [(d["text"], d["reason"]) for d in kinds(result, "decision") if d["symbol"] == symbol]


def test_crossover_needs_long_plus_one_marks() -> None:
    marks = [Fraction(x) for x in (10, 10, 13)]
    assert crossover(marks, 2, 3, Fraction(0)).signal == 0


def test_crossover_bullish_on_hand_computed_window() -> None:
    # prev [10,10,10]: d=0 <= 0; cur [10,10,13]: d = 3*23 - 2*33 = 3 > 0
    c = crossover([Fraction(x) for x in (10, 10, 10, 13)], 2, 3, Fraction(0))
    assert (c.signal, c.d, c.e) == (1, Fraction(3), Fraction(0))
    f = crossover([10.0, 10.0, 10.0, 13.0], 2, 3, Fraction(0))
    assert (f.signal, f.d, f.e) == (1, Fraction(3), Fraction(0))


def test_crossover_bearish_mirror() -> None:
    # cur [10,10,7]: d = 3*17 - 2*27 = -3 < 0
    c = crossover([Fraction(x) for x in (10, 10, 10, 7)], 2, 3, Fraction(0))
    assert (c.signal, c.d) == (-1, Fraction(-3))


def test_crossover_is_exact_where_floats_are_not() -> None:
    # 0.1+0.2 style error: floats would see d_prev != 0 for an equal window.
    marks = [0.1, 0.2, 0.3, 0.3]
    c = crossover(marks, 2, 3, Fraction(0))
    # prev [0.1,0.2,0.3]: 3*0.5 - 2*0.6 = 0.3 ; cur [0.2,0.3,0.3]: 3*0.6 - 2*0.8 = 0.2
    assert c.d == Fraction(1, 5) and c.signal == 0
    assert crossover([Fraction(repr(m)) for m in marks], 2, 3, Fraction(0)).d == Fraction(1, 5)


def test_crossover_falls_back_to_fractions_for_fine_decimals() -> None:
    fine = [1e-13, 1e-13, 1e-13, 3e-13]  # finer than the 1e-12 integer grid
    c = crossover(fine, 2, 3, Fraction(0))
    assert c.signal == 1 and c.d == 3 * Fraction("3e-13") + 3 * Fraction("1e-13") - 2 * (Fraction("5e-13"))


@settings(max_examples=200, deadline=None)
@given(
    marks=st.lists(st.decimals(min_value="95", max_value="105", places=1).map(float), min_size=2, max_size=14),
    windows=st.tuples(st.integers(1, 6), st.integers(2, 12)).filter(lambda w: w[0] < w[1]),
    eps=st.sampled_from([Fraction(0), Fraction(1, 10), Fraction(1, 2)]),
)
def test_crossover_is_the_definition_on_any_window(marks, windows, eps) -> None:
    """The signal and ``d`` are the docstring's definition, summed over Fractions."""
    short, long = windows
    c = crossover(marks, short, long, eps)
    if len(marks) < long + 1:
        assert c.signal == 0
        return
    m = [Fraction(repr(x)) for x in marks]
    cur, prev = m[-long:], m[-long - 1 : -1]
    d_cur = long * sum(cur[-short:]) - short * sum(cur)
    d_prev = long * sum(prev[-short:]) - short * sum(prev)
    e = short * long * eps
    want = 1 if d_prev <= e < d_cur else -1 if d_prev >= -e > d_cur else 0
    assert (c.signal, c.d, c.e) == (want, d_cur, e)


def test_strategy_buys_on_bullish_cross_with_hand_computed_size_and_fee() -> None:
    r = run(mark_tape([*FLAT4, 13.0]), params=P)
    assert decisions(r)[:4] == [("HOLD", "warming_up")] * 3 + [("HOLD", "no_signal")]
    assert decisions(r)[4] == ("BUY", "bullish_cross")
    (fill,) = kinds(r, "fill")
    # E0 = 100000; floor(100000*0.05*2 / (13*0.0001)) = 7692307 lots of 0.0001
    assert fill["qty"] == 769.2307
    assert fill["price"] == 13.0 and fill["ts"] == cycle_ts(5)
    # fee = 769.2307 * 13 * 4/1e4 = 3.99999964 USD
    assert fill["fee"] == 399_999_964
    assert fill["liquidity"] == "taker"


def test_strategy_eps_blocks_a_small_cross() -> None:
    # e = short*long*mark*eps = 6*13*0.04 = 3.12 >= d_cur 3: no signal at 400 bps; 300 bps: e=2.34 < 3
    blocked = run(mark_tape([*FLAT4, 13.0]), params={**P, "eps_bps": 400.0})
    assert kinds(blocked, "fill") == []
    passed = run(mark_tape([*FLAT4, 13.0]), params={**P, "eps_bps": 300.0})
    assert len(kinds(passed, "fill")) == 1


def test_strategy_confirmation_acts_n_cycles_later_if_cross_holds() -> None:
    # cross at cycle 5 (13); cycle 6 window [10,13,14]: d = 3*27 - 2*37 = 7 > 0 → acts at cycle 6
    r = run(mark_tape([*FLAT4, 13.0, 14.0]), params={**P, "confirm": 1})
    (fill,) = kinds(r, "fill")
    assert fill["ts"] == cycle_ts(6) and fill["price"] == 14.0


def test_strategy_confirmation_drops_cross_that_fades() -> None:
    # cycle 6 window [10,13,7]: d = 3*20 - 2*30 = 0, not beyond 0 → dropped
    r = run(mark_tape([*FLAT4, 13.0, 7.0]), params={**P, "confirm": 1})
    assert kinds(r, "fill") == []


def test_strategy_trailing_stop_arms_ratchets_and_closes_at_the_threshold() -> None:
    # entry cycle 5 at 13; cycle 6 arms R=14 (no test); cycle 7 R=15; cycle 8: 14.85 <= 15*0.99 → close
    r = run(mark_tape([*FLAT4, 13.0, 14.0, 15.0, 14.85]), params=P)
    d = decisions(r)
    assert d[5] == ("HOLD", "trail_armed")
    assert d[6] == ("HOLD", "in_position")
    assert d[7] == ("CLOSE", "trailing_stop")
    buy, sell = kinds(r, "fill")
    assert sell["side"] == "sell" and sell["qty"] == buy["qty"] and sell["price"] == 14.85
    assert sell["position_after"] == 0.0
    # realized = 769.2307 * (14.85 - 13) = 1423.076795 ; exit fee = 769.2307*14.85*0.0004 = 4.569230358
    assert sell["amount"] == 142_307_679_500
    assert sell["fee"] == 456_923_036
    assert r.summary["units"]["cash_end"] == 10_000_000_000_000 + 142_307_679_500 - 399_999_964 - 456_923_036


def test_strategy_trailing_stop_holds_just_above_threshold() -> None:
    r = run(mark_tape([*FLAT4, 13.0, 14.0, 15.0, 14.86]), params=P)
    assert decisions(r)[7] == ("HOLD", "in_position")
    assert len(kinds(r, "fill")) == 1


def test_strategy_closes_on_opposite_signal_without_opening_the_other_side() -> None:
    # long from cycle 5; cycle 6 arms; cycle 7 window [13,13,5]: d_prev = 3*26-2*36 = 6 >= 0, d = 3*18-2*31 = -8
    r = run(mark_tape([*FLAT4, 13.0, 13.0, 5.0, 5.0]), params=P)
    d = decisions(r)
    assert d[6] == ("CLOSE", "opposite_signal")
    fills = kinds(r, "fill")
    assert [f["side"] for f in fills] == ["buy", "sell"]
    assert fills[1]["position_after"] == 0.0
    assert d[7][0] == "HOLD"  # no new cross at cycle 8: flat, window [13,5,5] d_prev=-8, d=3*10-2*23=-16


def test_strategy_shorts_disabled_holds_on_bearish() -> None:
    r = run(mark_tape([*FLAT4, 7.0]), params={**P, "enable_shorts": False})
    assert decisions(r)[4] == ("HOLD", "shorts_disabled")
    r2 = run(mark_tape([*FLAT4, 7.0]), params=P)
    assert decisions(r2)[4] == ("SELL", "bearish_cross")
    assert kinds(r2, "fill")[0]["position_after"] < 0


def test_strategy_mark_window_keeps_long_plus_five() -> None:
    s = MACrossover(short=10, long=30)
    assert s.window == 35


def test_strategy_rejects_bad_params() -> None:
    with pytest.raises(ConfigError, match=r"short .5. must be less than long .3."):
        MACrossover(short=5, long=3)
    with pytest.raises(ConfigError, match=r"unknown parameter.*shrot"):
        MACrossover(shrot=5)
