"""Venue test kit: a strategy acting at given clock times, and small tape builders.

``Timed`` takes ``actions``: ``[t_ns, "submit", symbol, side, qty, {submit kwargs}]`` or
``[t_ns, "cancel", k]`` (k: the k-th submitted order, 0-based). With ``log`` it records
every notification it receives as a ``decision`` event (``text`` SEEN_<STATUS> or
SEEN_FILL, ``reason`` the order id), so a test can see *when* the strategy learnt it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from perpsim.core.events import BookLevel, BookReset, Mark, MarketEvent, Quote, Status, Trade
from perpsim.core.instruments import Instrument
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.replay import replay
from perpsim.sim.runs import RunResult
from perpsim.tapes.memory import MemoryTape

__all__ = ["MS", "SYM", "T0", "TEST", "Timed", "at", "book", "end", "events", "mark", "quote", "reset", "trade"]

SYM = "TEST-PERP"
T0 = 1_700_000_040 * 10**9  # a multiple of 60 s
MS = 1_000_000
TEST = Instrument(symbol=SYM, tick=0.5, lot=0.1, contract_size=1.0, max_leverage=10.0, maintenance_rate=0.05)


def at(ms: float) -> int:
    """T0 + ``ms`` milliseconds, in ns."""
    return T0 + round(ms * MS)


class Timed(Strategy):
    defaults: ClassVar[dict[str, Any]] = {"actions": [], "log": False}

    def on_start(self, ctx: Context) -> None:
        self.ids: list[int] = []
        for t, action, *args in self.params["actions"]:
            ctx.call_at(t, lambda now, a=action, args=args: self._do(ctx, a, args))

    def _do(self, ctx: Context, action: str, args: list[Any]) -> None:
        if action == "submit":
            symbol, side, qty, *kw = args
            self.ids.append(ctx.submit(symbol, side, qty, **(kw[0] if kw else {})))
        elif action == "cancel" and args[0] < len(self.ids):  # a cancel of a not-yet-sent order is dropped
            ctx.cancel(self.ids[args[0]])

    def on_fill(self, ctx: Context, fill: Any) -> None:
        if self.params["log"]:
            ctx.decide(fill.symbol, "SEEN_FILL", reason=str(fill.order_id), mark=fill.price)

    def on_funding(self, ctx: Context, pay: Any) -> None:
        if self.params["log"]:
            ctx.decide(pay.symbol, "SEEN_FUNDING", reason=str(pay.amount), mark=pay.mark)

    def on_order(self, ctx: Context, update: Any) -> None:
        if self.params["log"]:
            ctx.decide(update.symbol or "-", f"SEEN_{update.status.upper()}", reason=str(update.order_id))


def trade(ms: float, px: float, size: float = 1.0, side: int = 1, seq: int | None = None) -> Trade:
    t = at(ms)
    return Trade(ts=t, recv_ts=t, symbol=SYM, price=px, size=size, side=side, seq=seq)


def quote(ms: float, bid: float, ask: float, bid_size: float = 5.0, ask_size: float = 5.0) -> Quote:
    t = at(ms)
    return Quote(ts=t, recv_ts=t, symbol=SYM, bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size)


def mark(ms: float, px: float) -> Mark:
    t = at(ms)
    return Mark(ts=t, recv_ts=t, symbol=SYM, price=px)


def reset(ms: float) -> BookReset:
    t = at(ms)
    return BookReset(ts=t, recv_ts=t, symbol=SYM)


def book(ms: float, bids: list[tuple[float, float]], asks: list[tuple[float, float]], seq: int = 0) -> list[BookLevel]:
    """One book message: absolute sizes per level (0 deletes); the last row ends the message."""
    t = at(ms)
    rows = [BookLevel(ts=t, recv_ts=t, symbol=SYM, price=p, size=s, side=1, seq=seq) for p, s in bids]
    rows += [BookLevel(ts=t, recv_ts=t, symbol=SYM, price=p, size=s, side=-1, seq=seq) for p, s in asks]
    rows[-1] = BookLevel(
        ts=t, recv_ts=t, symbol=SYM, price=rows[-1].price, size=rows[-1].size, side=rows[-1].side, seq=seq, flags=1
    )
    return rows


def end(ms: float) -> Status:
    t = at(ms)
    return Status(ts=t, recv_ts=t, symbol=SYM, text="heartbeat")


def run(
    evs: list[MarketEvent],
    actions: list[list[Any]],
    *,
    venue: dict[str, Any] | None = None,
    instruments: dict[str, Instrument] | None = None,
    log: bool = False,
    **kw: Any,
) -> RunResult:
    """Replay ``evs`` (sorted here, stable) with :class:`Timed` and venue overrides."""
    evs = sorted(evs, key=lambda e: e.ts)
    tape = MemoryTape(evs, instruments={SYM: TEST} if instruments is None else instruments)
    over: dict[str, Any] = {"venue": venue} if venue else {}
    return replay(tape, strategy=Timed, params={"actions": actions, "log": log}, overrides=over, **kw)


def events(r: RunResult, kind: str) -> list[dict[str, Any]]:
    return r.events.filter(kind=kind).to_dicts()
