"""Latency of order entry, cancels and responses, applied on the clock (issue 4 item 4)."""

from __future__ import annotations

from tests.core.timed import SYM, at, end, events, quote, run, trade

JUMP = [quote(0, 99.5, 100.0), quote(15, 109.5, 110.0), end(100)]
BUY = [at(10), "submit", SYM, "buy", 1.0]


def test_an_order_sent_before_a_price_jump_but_arriving_after_it_fills_at_the_new_price() -> None:
    r = run(JUMP, [BUY], venue={"latency_ms": 10.0})
    (order,) = events(r, "order")
    (fill,) = events(r, "fill")
    assert order["ts"] == at(20)  # accepted when it arrives
    assert (fill["price"], fill["ts"]) == (110.0, at(20))
    r0 = run(JUMP, [BUY])  # no latency: the backtest semantics
    assert [(f["price"], f["ts"]) for f in events(r0, "fill")] == [(100.0, at(10))]


def test_an_order_arriving_before_the_jump_fills_at_the_old_price() -> None:
    r = run(JUMP, [BUY], venue={"latency_ms": 4.0})
    assert [(f["price"], f["ts"]) for f in events(r, "fill")] == [(100.0, at(14))]


def test_responses_reach_the_strategy_after_the_response_latency() -> None:
    r = run(JUMP, [BUY], venue={"latency_ms": 10.0, "response_latency_ms": 5.0}, log=True)
    seen = [(d["text"], d["ts"]) for d in events(r, "decision") if d["text"].startswith("SEEN")]
    assert seen == [("SEEN_ACCEPTED", at(25)), ("SEEN_FILL", at(25))]
    (fill,) = events(r, "fill")
    assert fill["ts"] == at(20)  # the venue filled it at arrival; the strategy learns 5 ms later


def test_a_cancel_that_arrives_after_the_fill_is_rejected_too_late() -> None:
    evs = [quote(0, 99.5, 100.0), trade(33, 98.0, 5.0, -1), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0}], [at(30), "cancel", 0]]
    r = run(evs, acts, venue={"latency_ms": 5.0}, log=True)
    (fill,) = events(r, "fill")
    assert fill["ts"] == at(33)  # the cancel left at 30 ms and arrives at 35 ms: too late
    (rej,) = events(r, "cancel_reject")
    assert (rej["order_id"], rej["ts"], rej["reason"], rej["text"]) == (1, at(35), "too_late", "filled")
    assert events(r, "cancel") == []
    assert ("SEEN_CANCEL_REJECTED", at(35)) in [(d["text"], d["ts"]) for d in events(r, "decision")]


def test_a_cancel_that_arrives_in_time_cancels() -> None:
    evs = [quote(0, 99.5, 100.0), trade(40, 98.0, 5.0, -1), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0}], [at(30), "cancel", 0]]
    r = run(evs, acts, venue={"latency_ms": 5.0, "cancel_latency_ms": 2.0})
    (c,) = events(r, "cancel")
    assert (c["ts"], c["reason"]) == (at(32), "requested")
    assert events(r, "fill") == []


def test_a_cancel_sent_while_the_order_travels_follows_it() -> None:
    evs = [quote(0, 99.5, 100.0), end(100)]
    acts = [[at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0}], [at(11), "cancel", 0]]
    r = run(evs, acts, venue={"latency_ms": 10.0, "cancel_latency_ms": 1.0})
    # the cancel's own latency would land it at 12 ms, before the order (20 ms): one channel keeps them in order
    assert [(e["kind"], e["ts"]) for e in r.events.to_dicts() if e["kind"] in ("order", "cancel")] == [
        ("order", at(20)),
        ("cancel", at(20)),
    ]


def test_jittered_latency_is_seeded_and_keeps_the_send_order() -> None:
    evs = [quote(0, 99.5, 100.0), end(1000)]
    acts = [[at(10 + k), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.0}] for k in range(20)]
    venue = {"latency_ms": 1.0, "latency_jitter_ms": 20.0, "latency_dist": "exponential"}
    a, b, c = (
        run(evs, acts, venue=venue, seed=1),
        run(evs, acts, venue=venue, seed=1),
        run(evs, acts, venue=venue, seed=2),
    )
    arrivals = [o["ts"] for o in events(a, "order")]
    assert [o["order_id"] for o in events(a, "order")] == list(range(1, 21))
    assert arrivals == sorted(arrivals) and all(t >= at(11) for t in arrivals)
    assert a.digest == b.digest and a.digest != c.digest
