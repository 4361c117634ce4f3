"""Funding from a constant-rate schedule or a CSV of real rates (issue 4 item 6).

The tape trades at 100 every 10 minutes from T0 (= 2023-11-14 22:14:00 UTC). The hourly
boundaries after T0 are H = 23:00:00 (T0 + 2760 s), H + 1 h, H + 2 h, H + 3 h. The
strategy buys 1 at T0 + 60 s, 2 more at H + 30 min (between boundaries) and sells 3 at
H + 2 h 30 min. So at a rate of 0.0001 a long pays 100 * 0.0001 = 0.01 per unit held at
each boundary: 1 at H, 3 at H + 1 h and H + 2 h, nothing at H + 3 h. The increase between
boundaries is charged once, at the next boundary, on what is held then.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from perpsim.core.errors import ConfigError
from perpsim.core.events import Funding
from tests.core.timed import SYM, T0, TEST, end, events, run, trade

S = 10**9
H = T0 + 2760 * S
HOUR = 3600 * S


def tape(hours: float = 3.5) -> list:
    n = int(hours * 6) + 6
    return [trade(k * 600_000, 100.0, 1.0, 1) for k in range(n)] + [end(n * 600_000)]


ACTS = [
    [T0 + 60 * S, "submit", SYM, "buy", 1.0],
    [H + HOUR // 2, "submit", SYM, "buy", 2.0],
    [H + 2 * HOUR + HOUR // 2, "submit", SYM, "sell", 3.0],
]
EXPECTED = [(H, -1_000_000), (H + HOUR, -3_000_000), (H + 2 * HOUR, -3_000_000)]


def paid(r) -> list[tuple[int, int]]:
    return [(f["ts"], f["amount"]) for f in events(r, "funding")]


def test_constant_hourly_rate_settles_at_boundaries_on_the_position_held_then() -> None:
    r = run(tape(), ACTS, venue={"funding": "constant", "funding_rate": 0.0001}, log=True)
    assert paid(r) == EXPECTED
    assert r.summary["units"]["funding"] == -7_000_000 and r.summary["reconciles"]
    seen = [(d["ts"], d["reason"]) for d in events(r, "decision") if d["text"] == "SEEN_FUNDING"]
    assert seen == [(t, str(a)) for t, a in EXPECTED]  # the strategy's on_funding hears each one


def test_schedule_gives_the_same_settlements_as_tape_funding_rows() -> None:
    rows = [Funding(ts=t, recv_ts=t, symbol=SYM, rate=0.0001) for t in (H, H + HOUR, H + 2 * HOUR, H + 3 * HOUR)]
    from_tape = run(tape() + rows, ACTS)
    assert paid(from_tape) == EXPECTED
    scheduled = run(tape() + rows, ACTS, venue={"funding": "constant", "funding_rate": 0.0001})
    assert events(scheduled, "funding") == events(from_tape, "funding")  # tape rows ignored, same settlements


def test_binance_style_eight_hour_interval_from_the_instrument_or_the_config() -> None:
    inst = msgspec.structs.replace(TEST, funding_interval_s=8 * 3600)
    first = T0 + 6360 * S  # 2023-11-15 00:00 UTC, a multiple of 8 h
    acts = [[T0 + 60 * S, "submit", SYM, "buy", 2.0]]
    r = run(tape(9.0), acts, venue={"funding": "constant"}, instruments={SYM: inst})  # the tape ends at T0 + 10 h
    assert paid(r) == [(first, -2_000_000), (first + 8 * HOUR, -2_000_000)]  # 2 * 100 * 0.0001
    hourly = run(tape(9.0), acts, venue={"funding": "constant", "funding_interval_s": 3600.0}, instruments={SYM: inst})
    assert [t for t, _ in paid(hourly)] == [H + k * HOUR for k in range(10)]


def test_schedule_from_a_funding_history_csv(tmp_path: Path) -> None:
    csv = tmp_path / "TEST_history.csv"
    csv.write_text(
        "Symbol,Date,Funding Rate\n"
        "TEST,2023-11-14 22:00:00,0.5\n"  # before the tape: never settles
        "TEST,2023-11-14 23:00:00,0.0001\n"
        "TEST,2023-11-15 00:00:00,-0.0002\n"
        "TEST,2023-11-15 00:30:00,0.0003\n"
    )
    venue = {"funding": "schedule", "funding_schedule": {SYM: str(csv)}, "funding_utc_offset_h": 0.0}
    r = run(tape(), ACTS, venue=venue)
    # 1 held at 23:00 pays 0.01; 3 held at 00:00 receive 3*100*0.0002 = 0.06; 3 held at 00:30 pay 0.09
    assert paid(r) == [(H, -1_000_000), (H + HOUR, 6_000_000), (H + HOUR + HOUR // 2, -9_000_000)]
    assert [f["text"] for f in events(r, "funding")] == ["0.0001", "-0.0002", "0.0003"]


def test_schedule_without_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="funding_schedule"):
        run(tape(), ACTS, venue={"funding": "schedule"})


def test_funding_off_settles_nothing() -> None:
    rows = [Funding(ts=H, recv_ts=H, symbol=SYM, rate=0.0001)]
    assert paid(run(tape() + rows, ACTS, venue={"funding": "off"})) == []
