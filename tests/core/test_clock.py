from __future__ import annotations

import pytest

from perpsim.core.clock import ReplayClock, align_up
from perpsim.core.errors import ConfigError


def test_clock_fires_ties_in_priority_then_registration_order() -> None:
    clock = ReplayClock(start_ns=5)
    fired: list[tuple[str, int, int]] = []

    def cb(name: str):
        return lambda t: fired.append((name, t, clock.now_ns()))

    clock.call_at(100, "late-low", cb("late-low"), priority=50)
    clock.call_at(100, "first-high", cb("first-high"), priority=10)
    clock.call_at(100, "second-high", cb("second-high"), priority=10)
    clock.call_at(50, "early", cb("early"), priority=99)
    clock.advance_to(100)
    assert [f[0] for f in fired] == ["early", "first-high", "second-high", "late-low"]
    assert all(deadline == now for _, deadline, now in fired)
    assert clock.now_ns() == 100


def test_clock_periodic_timers_align_to_epoch() -> None:
    clock = ReplayClock(start_ns=61)
    seen: list[int] = []
    clock.every(60, "cycle", seen.append)
    clock.advance_to(250)
    assert seen == [120, 180, 240]
    assert align_up(120, 60) == 120 and align_up(121, 60) == 180


def test_clock_timer_scheduled_from_callback_fires_in_same_advance() -> None:
    clock = ReplayClock()
    seen: list[str] = []

    def first(t: int) -> None:
        seen.append(f"first@{t}")
        clock.call_at(t + 5, "child", lambda u: seen.append(f"child@{u}"))
        clock.call_at(t, "same-time", lambda u: seen.append(f"same@{u}"))

    clock.call_at(10, "first", first)
    clock.advance_to(14)
    assert seen == ["first@10", "same@10"]
    clock.advance_to(15)
    assert seen == ["first@10", "same@10", "child@15"]


def test_clock_does_not_fire_timers_after_the_advance_point() -> None:
    clock = ReplayClock(start_ns=1)
    seen: list[int] = []
    clock.every(10, "tick", seen.append)
    clock.advance_to(29)
    assert seen == [10, 20]
    assert clock.next_due == 30


def test_clock_cancel_stops_timer() -> None:
    clock = ReplayClock(start_ns=1)
    seen: list[int] = []
    h = clock.every(10, "tick", seen.append)
    clock.advance_to(10)
    clock.cancel(h)
    clock.advance_to(100)
    assert seen == [10]
    assert clock.next_due == ReplayClock.NEVER


def test_clock_refuses_duplicate_names() -> None:
    clock = ReplayClock()
    clock.every(10, "cycle", lambda t: None)
    with pytest.raises(ConfigError, match="timer 'cycle' is already scheduled"):
        clock.every(20, "cycle", lambda t: None)
