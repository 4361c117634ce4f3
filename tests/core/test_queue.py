"""Queue position of resting limit orders (issue 4 item 3), and the quoter on the real L2 tape."""

from __future__ import annotations

import re
from importlib import resources

import polars as pl
import pytest

from perpsim.core.examples.quoter import Quoter
from perpsim.sim.replay import replay
from tests.core.timed import SYM, at, book, end, events, quote, run, trade

BUY = [at(10), "submit", SYM, "buy", 1.0, {"type": "limit", "price": 99.5}]
BOOK = book(0, [(99.5, 2.0)], [(100.0, 1.0)], seq=1)


def queue(r, reason: str | None = None) -> list[tuple[str, str]]:
    return [(q["reason"], q["text"]) for q in events(r, "queue") if reason is None or q["reason"] == reason]


def test_risk_averse_trades_at_the_price_work_through_the_queue_then_fill_partially() -> None:
    evs = [
        *BOOK,
        trade(20, 99.5, 1.5, -1, seq=101),  # ahead 2.0 -> 0.5
        *book(25, [(99.5, 0.5)], [], seq=2),  # the traded 1.5 explains the decrease: no change
        trade(30, 99.5, 1.0, -1, seq=102),  # ahead 0 and 0.5 reaches us
        trade(40, 99.5, 0.3, -1, seq=103),  # 0.3 more
        trade(50, 99.0, 0.1, -1, seq=104),  # through the price: the rest, whole
        end(100),
    ]
    r = run(evs, [BUY], venue={"queue": "risk_averse"})
    assert queue(r) == [
        ("join", f"arrival clock={at(10)} visible=2.0 ahead=unknown->2.0"),
        ("trade", f"trade seq=101 clock={at(20)} ahead=2.0->0.5"),
        ("trade", f"trade seq=102 clock={at(30)} ahead=0.5->0.0"),
    ]
    assert [(f["qty"], f["price"], f["liquidity"], f["ts"]) for f in events(r, "fill")] == [
        (0.5, 99.5, "maker", at(30)),
        (0.3, 99.5, "maker", at(40)),
        (0.2, 99.5, "maker", at(50)),
    ]


def test_risk_averse_level_shrinking_below_us_advances_and_growth_does_not() -> None:
    evs = [
        *BOOK,
        *book(20, [(99.5, 3.0)], [], seq=8),  # others join behind us
        trade(25, 99.5, 0.5, 1, seq=201),  # same-side aggressor at our price: no queue move
        *book(30, [(99.5, 1.5)], [], seq=9),  # 1.5 cancelled: only what is below us counts
        end(100),
    ]
    r = run(evs, [BUY], venue={"queue": "risk_averse"})
    assert queue(r, "level") == [("level", f"book seq=9 clock={at(30)} ahead=2.0->1.5")]
    assert queue(r, "trade") == [] and events(r, "fill") == []


def test_probabilistic_queue_is_seeded_and_stays_within_its_bounds() -> None:
    evs = [*BOOK, *book(20, [(99.5, 6.0)], [], seq=8), *book(30, [(99.5, 3.0)], [], seq=9), end(100)]
    outcomes = []
    for seed in range(30):
        r = run(evs, [BUY], venue={"queue": "probabilistic"}, seed=seed)
        level = [q for q in events(r, "queue") if q["reason"] == "level"]
        # the 3.0 cancelled came from in front (p = 2/6): ahead 0, else from behind: ahead stays 2
        outcomes.append(level[0]["qty"] if level else 2.0)
        assert r.digest == run(evs, [BUY], venue={"queue": "probabilistic"}, seed=seed).digest
    assert set(outcomes) == {0.0, 2.0}


def test_no_queue_model_fills_whole_on_a_touch_and_logs_no_queue_events() -> None:
    evs = [*BOOK, trade(20, 99.5, 0.1, -1, seq=101), end(100)]
    r = run(evs, [BUY])
    assert [(f["qty"], f["price"]) for f in events(r, "fill")] == [(1.0, 99.5)]
    assert events(r, "queue") == []


def test_queue_from_quotes_without_a_book() -> None:
    evs = [
        quote(0, 99.5, 100.0, bid_size=2.0),
        quote(20, 99.5, 100.0, bid_size=1.0),  # ahead 2 -> 1
        quote(30, 99.0, 100.0, bid_size=4.0),  # our price now improves on the bid: nobody ahead
        trade(40, 99.5, 0.4, -1, seq=7),
        end(100),
    ]
    r = run(evs, [BUY], venue={"queue": "risk_averse"})
    assert queue(r) == [
        ("join", f"arrival clock={at(10)} visible=2.0 ahead=unknown->2.0"),
        ("level", f"quote seq=-1 clock={at(20)} ahead=2.0->1.0"),
        ("level", f"quote seq=-1 clock={at(30)} ahead=1.0->0.0"),
    ]
    assert [(f["qty"], f["ts"]) for f in events(r, "fill")] == [(0.4, at(40))]


def test_an_order_behind_the_quote_learns_its_place_when_the_level_shows() -> None:
    evs = [
        quote(0, 100.0, 100.5),
        trade(20, 99.5, 1.0, -1),  # level unknown: a trade at the price does not fill
        quote(30, 99.5, 100.0, bid_size=3.0),
        end(100),
    ]
    r = run(evs, [BUY], venue={"queue": "risk_averse"})
    assert queue(r) == [
        ("join", f"arrival clock={at(10)} visible=unknown ahead=unknown->unknown"),
        ("level", f"quote seq=-1 clock={at(30)} ahead=unknown->3.0"),
    ]
    assert events(r, "fill") == []


_ROW = re.compile(r"^(trade|book|quote) seq=(-?\d+) clock=(\d+) ")


def test_quoter_on_the_real_l2_tape_logs_each_queue_advance_with_its_tape_row() -> None:
    path = resources.files("perpsim.tapes") / "samples" / "btcusdt_20240808.parquet"
    if not path.is_file():
        pytest.skip("the real BTCUSDT sample tape is not bundled")
    r = replay(
        str(path), strategy=Quoter, params={"symbols": ["BTCUSDT"]}, overrides={"venue": {"queue": "risk_averse"}}
    )
    assert r.summary["reconciles"] and r.summary["errors"] == 0
    q = r.events.filter(pl.col("kind") == "queue")
    advances = q.filter(pl.col("reason") != "join")
    assert advances.height > 100
    assert (q.filter(pl.col("reason") == "join")["text"].str.starts_with("arrival clock=")).all()
    named = []
    for text in advances["text"].to_list():
        m = _ROW.match(text)
        assert m is not None, text
        named.append((m[1], int(m[2]), int(m[3])))
    cited = pl.DataFrame(named, schema={"kind": pl.Utf8, "seq": pl.Int64, "recv_ts": pl.Int64}, orient="row").unique()
    tape = pl.read_parquet(str(path), columns=["kind", "seq", "recv_ts"]).with_columns(pl.col("kind").cast(pl.Utf8))
    found = cited.join(tape.unique(), on=["kind", "seq", "recv_ts"], how="inner")
    assert found.height == cited.height  # every cited row is a row of the tape
    f = r.events.filter(pl.col("kind") == "fill")
    maker = f.filter(pl.col("liquidity") == "maker")
    assert maker.height > 0 and f.filter(pl.col("liquidity") == "taker").height > 0
    # some orders fill in parts: the queue hands them only the volume beyond it
    parts = maker.group_by("order_id").len()
    assert parts.filter(pl.col("len") > 1).height > 0
