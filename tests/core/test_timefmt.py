"""Times and durations as users type them, to the nanosecond."""

from __future__ import annotations

import pytest

from perpsim.core.errors import InputError
from perpsim.core.timefmt import fmt_ns, parse_time_ns

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z, by hand: 19,723 days of 86,400 s


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01", T0),
        ("2024-01-01T00:00:00.000000001Z", T0 + 1),
        ("2024-01-01T00:00:00.5Z", T0 + 500_000_000),
        ("2024-01-01 00:00:01,25", T0 + 1_250_000_000),
        ("2024-01-01T00:00:00.123456789+00:00", T0 + 123_456_789),
        ("2024-01-01T01:00:00.000000002+01:00", T0 + 2),
        ("1969-12-31T23:59:59.5Z", -500_000_000),
        (str(T0 + 7), T0 + 7),
    ],
)
def test_parse_time_keeps_every_nanosecond(text: str, ns: int) -> None:
    assert parse_time_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("2024-01-01T00:00:00.0000000001Z", "finer than a nanosecond"),
        ("yesterday", "cannot read 'yesterday' as a time"),
        ("2024-13-01", "cannot read"),
    ],
)
def test_parse_time_refuses_what_it_cannot_read_exactly(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_time_ns(text, what="--start")


def test_fmt_ns_prints_milliseconds() -> None:
    assert fmt_ns(T0 + 1_234_567_891) == "2024-01-01 00:00:01.234Z"
