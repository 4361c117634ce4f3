"""Strategy hooks run at the time of the row that caused them, in both engines.

A hook called for a fill or a funding row used to see the last cycle's time, so an
order it placed was stamped in the past and the run's events went backwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from perpsim.core.events import Funding, Quote, Trade
from perpsim.core.strategy import Context, Strategy
from perpsim.core.updates import Fill
from perpsim.sim.replay import replay
from perpsim.tapes.memory import MemoryTape

S = 10**9
SYM = "BTC-PERP"


def trade(t: float, px: float) -> Trade:
    return Trade(ts=round(t * S), recv_ts=round(t * S), symbol=SYM, price=px, size=1.0, side=1)


def quote(t: float, bid: float, ask: float) -> Quote:
    return Quote(ts=round(t * S), recv_ts=round(t * S), symbol=SYM, bid=bid, bid_size=5.0, ask=ask, ask_size=5.0)


class Flip(Strategy):
    """Rests a buy at 95 on the cycle at 60 s; sells what fills at once; records what hooks saw."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.seen: list[tuple[str, int, float | None]] = []

    def on_cycle(self, ctx: Context) -> None:
        if ctx.now_ns == 60 * S:
            ctx.submit(SYM, "buy", 1, type="limit", price=95.0)

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        q = ctx.quote(SYM)
        self.seen.append(("fill", ctx.now_ns, None if q is None else q.bid))
        if fill.side == "buy":
            ctx.submit(SYM, "sell", 1)

    def on_funding(self, ctx: Context, pay: Any) -> None:
        self.seen.append(("funding", ctx.now_ns, None))


class FlipWithTicks(Flip):
    def on_quote(self, ctx: Context, q: Any) -> None:
        pass


def _run(events: list[Any], cls: type[Flip], engine: str, **venue: Any) -> tuple[list[Any], list[tuple[int, str]]]:
    made: list[Flip] = []

    class Kept(cls):  # type: ignore[valid-type, misc]
        def __init__(self, **params: Any) -> None:
            super().__init__(**params)
            made.append(self)

    over = {"venue": venue} if venue else None
    r = replay(MemoryTape(events), strategy=Kept, engine=engine, overrides=over)
    rows = [(e["ts"], e["kind"]) for e in r.events.to_dicts() if e["kind"] in ("order", "fill", "funding")]
    return made[0].seen, rows


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("cls", [Flip, FlipWithTicks])
def test_on_fill_runs_at_the_fill_row_and_its_order_is_stamped_then(engine: str, cls: type[Flip]) -> None:
    tape = [trade(0, 100), quote(10, 99, 101), trade(70, 100), quote(75, 99, 101), trade(80, 94), quote(85, 93, 95)]
    seen, rows = _run([*tape, trade(130, 100)], cls, engine)
    assert [s[:2] for s in seen] == [("fill", 80 * S), ("fill", 80 * S)]
    assert rows == [(60 * S, "order"), (80 * S, "fill"), (80 * S, "order"), (80 * S, "fill")]


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_on_funding_runs_at_the_funding_row(engine: str) -> None:
    class Long(Flip):
        def on_cycle(self, ctx: Context) -> None:
            if ctx.now_ns == 60 * S:
                ctx.submit(SYM, "buy", 1)

        def on_fill(self, ctx: Context, fill: Fill) -> None:
            self.seen.append(("fill", ctx.now_ns, None))

    funding = Funding(ts=90 * S, recv_ts=90 * S, symbol=SYM, rate=0.001)
    seen, rows = _run([trade(0, 100), quote(10, 99, 101), trade(75, 100), funding, trade(130, 100)], Long, engine)
    assert seen == [("fill", 60 * S, None), ("funding", 90 * S, None)]
    assert [t for t, _ in rows] == sorted(t for t, _ in rows)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_a_response_due_before_the_next_row_reaches_the_strategy_before_that_row(engine: str) -> None:
    # The fill at 80 s is learnt 5 ms later: after the quote at 80.002 s, before the one at 80.009 s.
    tape = [trade(0, 100), quote(10, 99, 101), trade(70, 100), quote(75, 99, 101), trade(80, 94)]
    tape += [quote(80.002, 93, 95), quote(80.009, 91, 92), trade(130, 100)]
    seen, _ = _run(tape, Flip, engine, response_latency_ms=5.0)
    assert seen[0] == ("fill", 80 * S + 5_000_000, 93.0)


def test_a_timer_period_of_zero_is_an_error_event_not_a_timer_at_the_epoch() -> None:
    fired: list[int] = []

    class Zero(Strategy):
        def on_start(self, ctx: Context) -> None:
            ctx.every(0, fired.append)

    r = replay(MemoryTape([trade(0, 100), trade(130, 100)]), strategy=Zero)
    (err,) = [e for e in r.events.to_dicts() if e["kind"] == "error"]
    assert "every: the period must be positive, got 0 ns" in err["text"] and fired == []


def test_a_one_shot_timer_in_the_past_is_refused_once_rows_have_run() -> None:
    fired: list[int] = []

    class Past(Strategy):
        def on_start(self, ctx: Context) -> None:
            ctx.call_at(ctx.now_ns - S, fired.append)  # before the first row: nothing has happened yet

        def on_cycle(self, ctx: Context) -> None:
            if ctx.now_ns == 60 * S:
                ctx.call_at(30 * S, fired.append)  # would fire after the rows since 30 s

    r = replay(MemoryTape([trade(0.5, 100), trade(70, 100), trade(130, 100)]), strategy=Past)
    (err,) = [e for e in r.events.to_dicts() if e["kind"] == "error"]
    assert f"call_at: {30 * S} is before now ({60 * S})" in err["text"]
    assert fired == [-S // 2]
