"""Properties of the venue over random tapes and order sequences (hypothesis).

1. The ledger reconciles to the unit, and an independent recomputation from the
   fill and liquidation events (exact fractions) matches every amount and fee.
2. No fill ever happens at a price the market did not offer: a taker fill is at a
   level of the book (or the quote's touch) standing at that moment; a maker fill
   is at its order's limit and the tape traded at or through it, or the opposite
   side reached it, at that moment; a liquidation is at the venue mark.

Tape rows sit on even milliseconds and strategy actions (and, with latency, order
arrivals) on odd ones, so "the market at the moment of a fill" is unambiguous.
"""

from __future__ import annotations

from bisect import bisect_right
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpsim.core.events import BookLevel, MarketEvent, Quote, Trade
from tests.core.timed import SYM, at, end, run

MAKER, TAKER, LIQ = Fraction(2, 10_000), Fraction(4, 10_000), Fraction(50, 10_000)
TICK = 0.5


def F(x: float) -> Fraction:
    return Fraction(repr(x))


@st.composite
def tapes(draw: st.DrawFn) -> tuple[str, list[MarketEvent]]:
    mode = draw(st.sampled_from(["book", "quote"]))
    evs: list[MarketEvent] = []
    mid = 200  # in ticks: price 100.0
    live: dict[tuple[int, float], float] = {}
    drift = draw(st.integers(-1, 1))  # a trend makes liquidations reachable
    for k in range(1, 60):
        t = at(2 * k)
        mid += draw(st.integers(-2, 2)) + drift
        what = draw(st.sampled_from(["trade", "depth", "depth"]))
        if what == "trade":
            px = (mid + draw(st.integers(-3, 3))) * TICK
            size = draw(st.integers(1, 20)) / 10
            evs.append(Trade(ts=t, recv_ts=t, symbol=SYM, price=px, size=size, side=draw(st.sampled_from([1, -1]))))
        elif mode == "quote":
            bid = (mid - draw(st.integers(1, 2))) * TICK
            ask = (mid + draw(st.integers(1, 2))) * TICK
            bs, az = draw(st.integers(1, 30)) / 10, draw(st.integers(1, 30)) / 10
            evs.append(Quote(ts=t, recv_ts=t, symbol=SYM, bid=bid, bid_size=bs, ask=ask, ask_size=az))
        else:
            new: dict[tuple[int, float], float] = {}
            for side in (1, -1):
                for j in range(1, draw(st.integers(1, 4)) + 1):
                    new[(side, (mid - side * j) * TICK)] = draw(st.integers(1, 30)) / 10
            rows = [(s, p, 0.0) for (s, p) in live if (s, p) not in new] + [(s, p, z) for (s, p), z in new.items()]
            for n, (s, p, z) in enumerate(rows):
                evs.append(
                    BookLevel(
                        ts=t, recv_ts=t, symbol=SYM, price=p, size=z, side=s, seq=k, flags=int(n == len(rows) - 1)
                    )
                )
            live = new
    evs.append(end(2 * 60))
    return mode, evs


@st.composite
def actions(draw: st.DrawFn) -> list[list[Any]]:
    out: list[list[Any]] = []
    n_orders = 0
    for _ in range(draw(st.integers(1, 14))):
        t = at(2 * draw(st.integers(0, 58)) + 1)
        if n_orders and draw(st.integers(0, 4)) == 0:
            out.append([t, "cancel", draw(st.integers(0, n_orders - 1))])
            continue
        kind = draw(st.sampled_from(["market", "limit", "limit", "stop", "stop_limit"]))
        kw: dict[str, Any] = {"type": kind, "tif": draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK", "GTD"]))}
        if kind in ("limit", "stop_limit"):
            kw["price"] = (200 + draw(st.integers(-6, 6))) * TICK
        if kind in ("stop", "stop_limit"):
            kw["stop_price"] = (200 + draw(st.integers(-6, 6))) * TICK
        if kw["tif"] == "GTD":
            kw["expire_ns"] = t + 2 * draw(st.integers(1, 30)) * 1_000_000
        kw["post_only"] = kind == "limit" and draw(st.booleans())
        kw["reduce_only"] = draw(st.integers(0, 3)) == 0
        qty = draw(st.integers(1, 30)) / 10
        out.append([t, "submit", SYM, draw(st.sampled_from(["buy", "sell"])), qty, kw])
        n_orders += 1
    out.sort(key=lambda a: a[0])
    return out


class Market:
    """The tape's state after each row time, rebuilt independently of the engine."""

    def __init__(self, evs: list[MarketEvent]) -> None:
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        quote: tuple[float, float] | None = None
        last: float | None = None
        self.times: list[int] = []
        self.states: list[dict[str, Any]] = []
        trades_at: dict[int, list[tuple[float, int]]] = {}
        for ev in evs:
            if isinstance(ev, Trade):
                last = ev.price
                trades_at.setdefault(ev.ts, []).append((ev.price, ev.side))
            elif isinstance(ev, Quote):
                quote = (ev.bid, ev.ask)
            elif isinstance(ev, BookLevel):
                book = bids if ev.side == 1 else asks
                if ev.size == 0:
                    book.pop(ev.price, None)
                else:
                    book[ev.price] = ev.size
            state = {"bids": dict(bids), "asks": dict(asks), "quote": quote, "last": last}
            if self.times and self.times[-1] == ev.ts:
                self.states[-1] = state
            else:
                self.times.append(ev.ts)
                self.states.append(state)
        self.trades_at = trades_at

    def at(self, t: int) -> dict[str, Any]:
        i = bisect_right(self.times, t) - 1
        assert i >= 0, t
        return self.states[i]


def check_offered(mode: str, evs: list[MarketEvent], rows: list[dict[str, Any]]) -> None:
    mkt = Market(evs)
    limit_of = {e["order_id"]: e["price"] for e in rows if e["kind"] == "order"}
    for e in rows:
        if e["kind"] not in ("fill", "liquidation"):
            continue
        s = mkt.at(e["ts"])
        px, buy = e["price"], e["side"] == "buy"
        assert e["qty"] > 0 and F(e["qty"]) / F(0.1) == int(F(e["qty"]) / F(0.1)), e
        if e["kind"] == "liquidation":
            mid = None if s["quote"] is None else float((F(s["quote"][0]) + F(s["quote"][1])) / 2)
            assert px == (s["last"] if s["last"] is not None else mid), e
            continue
        on_book = mode == "book" and (s["bids"] or s["asks"])
        if e["liquidity"] == "taker":
            if on_book:
                assert px in (s["asks"] if buy else s["bids"]), (e, s)
            else:
                touch = s["quote"][1 if buy else 0] if s["quote"] is not None else s["last"]
                assert px == touch, (e, s)
            continue
        assert px == limit_of[e["order_id"]], e  # a maker fill is at its own limit
        through = any((p <= px) if buy else (p >= px) for p, _ in mkt.trades_at.get(e["ts"], []))
        if on_book:
            opp = s["asks"] if buy else s["bids"]
            best = (min(opp) if buy else max(opp)) if opp else None
        else:
            best = s["quote"][1 if buy else 0] if s["quote"] is not None else None
        crossed = best is not None and ((best <= px) if buy else (best >= px))
        assert through or crossed, (e, s)


def recompute(rows: list[dict[str, Any]], start: int) -> tuple[int, int, int]:
    qty, entry = Fraction(0), Fraction(0)
    cash, realized, fees = start, 0, 0
    for e in rows:
        if e["kind"] not in ("fill", "liquidation"):
            continue
        q = F(e["qty"]) * (1 if e["side"] == "buy" else -1)
        px = F(e["price"])
        r = Fraction(0)
        if qty and (qty > 0) != (q > 0):
            r = min(abs(qty), abs(q)) * (px - entry) * (1 if qty > 0 else -1)
        new = qty + q
        if new == 0:
            entry = Fraction(0)
        elif qty == 0 or (qty > 0) != (new > 0):
            entry = px
        elif abs(new) > abs(qty):
            entry = (entry * abs(qty) + px * abs(q)) / abs(new)
        qty = new
        rate = LIQ if e["kind"] == "liquidation" else MAKER if e["liquidity"] == "maker" else TAKER
        ru, fu = round(r * 10**8), round(abs(q) * px * rate * 10**8)
        if e["kind"] == "liquidation":
            fu = min(fu, max(cash + ru, 0))  # the liquidation fee takes at most the remaining margin
        assert (ru, fu) == (e["amount"], e["fee"]), e
        realized += ru
        fees += fu
        cash += ru - fu
        assert cash == e["cash_after"], e
    return cash, realized, fees


VENUES = st.fixed_dictionaries(
    {
        "starting_balance": st.sampled_from([20.0, 1000.0, 100_000.0]),
        "queue": st.sampled_from(["none", "risk_averse", "probabilistic"]),
        "cap_to_top": st.booleans(),
        "latency_ms": st.sampled_from([0.0, 2.0, 4.0]),
        "stop_trigger": st.just("trade"),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tape=tapes(), acts=actions(), venue=VENUES, seed=st.integers(0, 3))
def test_ledger_reconciles_and_every_fill_is_at_an_offered_price(
    tape: tuple[str, list[MarketEvent]], acts: list[list[Any]], venue: dict[str, Any], seed: int
) -> None:
    mode, evs = tape
    r = run(evs, acts, venue=venue, seed=seed)
    rows = r.events.to_dicts()
    assert [e for e in rows if e["kind"] == "error"] == []
    u = r.summary["units"]
    assert r.summary["reconciles"]
    assert recompute(rows, u["cash_start"]) == (u["cash_end"], u["realized"], u["fees"])
    check_offered(mode, evs, rows)
