"""LiveClock: the Clock protocol on the wall clock, with firings recorded (DESIGN.md §3)."""

from __future__ import annotations

import asyncio

import pytest

from perpsim.core.errors import ConfigError
from perpsim.live.clock import LiveClock


class FakeWall:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_clock_stamps_never_go_backwards_even_when_the_wall_does() -> None:
    wall = FakeWall(1_000)
    clock = LiveClock(wall=wall)
    assert clock.stamp() == 1_000
    wall.t = 900  # an NTP step back
    assert clock.stamp() == 1_000
    wall.t = 1_500
    assert clock.stamp() == 1_500


def test_clock_fires_due_timers_in_order_at_their_deadlines_and_reports_the_firing_stamp() -> None:
    wall = FakeWall(61)
    fired: list[tuple[str, int, int]] = []
    seen: list[tuple[str, int, int]] = []
    clock = LiveClock(wall=wall, on_fire=lambda n, d, at: fired.append((n, d, at)))
    clock.every(60, "cycle", lambda t: seen.append(("cycle", t, clock.now_ns())), priority=10)
    clock.call_at(120, "guards", lambda t: seen.append(("guards", t, clock.now_ns())), priority=0)
    assert clock.next_due == 120
    assert clock.advance_to(185) == 3
    assert seen == [("guards", 120, 120), ("cycle", 120, 120), ("cycle", 180, 180)]
    assert fired == [("guards", 120, 185), ("cycle", 120, 185), ("cycle", 180, 185)]
    assert clock.now_ns() == 185 and clock.next_due == 240
    assert [h.name for h in clock.timers()] == ["cycle"]


def test_clock_refuses_duplicate_names_and_bad_intervals() -> None:
    clock = LiveClock(wall=FakeWall(0))
    clock.every(10, "x", lambda t: None)
    with pytest.raises(ConfigError, match="'x' is already scheduled"):
        clock.call_at(5, "x", lambda t: None)
    with pytest.raises(ConfigError, match="interval must be positive"):
        clock.every(0, "y", lambda t: None)


def test_clock_realign_skips_missed_periodic_firings_after_a_warm_start() -> None:
    clock = LiveClock(wall=FakeWall(0))
    seen: list[int] = []
    clock.set_now(100)
    clock.every(10, "cycle", seen.append)
    clock.realign(1_003)
    clock.advance_to(1_025)
    assert seen == [1_010, 1_020]


def test_clock_wakes_on_asyncio_when_no_message_comes() -> None:
    async def main() -> list[int]:
        clock = LiveClock()
        seen: list[int] = []
        woke: list[int] = []

        def wake() -> None:
            t = clock.stamp()
            woke.append(t)
            clock.advance_to(t)

        clock.set_now(clock.stamp())
        clock.call_at(clock.stamp() + 50_000_000, "soon", seen.append)
        clock.attach(asyncio.get_running_loop(), wake)
        await asyncio.sleep(0.2)
        clock.detach()
        assert woke and woke[0] >= seen[0]
        return seen

    assert len(asyncio.run(main())) == 1
