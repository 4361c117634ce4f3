"""The fast-forward engine is bit-identical to the reference engine (issue 7)."""

from __future__ import annotations

import re
import tempfile
from importlib import resources
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perpsim
from perpsim.core.batch import batch_from_events
from perpsim.core.events import BookLevel, BookReset, Funding, Mark, Quote, Status, Trade
from perpsim.live.recorder import batch_arrow
from perpsim.sim.replay import ReplayDriver, RunSpec, build_config
from perpsim.tapes import open_tape, write
from perpsim.tapes.memory import MemoryTape
from tests.helpers import T0, S
from tests.scripted import Scripted

SAMPLES = Path(str(resources.files("perpsim.tapes") / "samples"))


def both(tape, **kw):
    ref = perpsim.replay(tape, engine="reference", **kw)
    fast = perpsim.replay(tape, engine="fast", **kw)
    return ref, fast


@pytest.mark.parametrize("profile", ["backtest", "prod", "canary", "spot"])
def test_fast_equals_reference_on_the_bundled_sample(profile: str) -> None:
    ref, fast = both(SAMPLES / "sample.parquet", profile=profile)
    assert ref.summary["fills"] > 0 or profile == "canary"
    assert fast.digest == ref.digest
    assert fast.summary["rows"] == ref.summary["rows"]


def test_fast_equals_reference_on_the_real_btcusdt_tape() -> None:
    ref, fast = both(SAMPLES / "btcusdt_20240808.parquet", interval_s=5.0, params={"short": 2, "long": 5})
    assert ref.summary["cycles"] > 50
    assert fast.digest == ref.digest


def test_fast_equals_reference_with_resting_orders() -> None:
    from tests.helpers import mark_tape

    orders = [
        [1, "BTC-PERP", "buy", 1.0, {"type": "limit", "price": 95.0}],
        [2, "BTC-PERP", "sell", 1.0, {"type": "stop", "stop_price": 90.0}],
        [3, "BTC-PERP", "buy", 2.0],
    ]
    tape = MemoryTape(mark_tape([100.0, 99.0, 94.0, 96.0, 89.0, 92.0], quotes=True))
    ref, fast = both(tape, strategy=Scripted, params={"orders": orders})
    assert fast.digest == ref.digest


row = st.tuples(
    st.integers(0, 400),  # seconds since T0
    st.sampled_from(["trade", "quote", "mark", "funding", "status"]),
    st.sampled_from(["BTC-PERP", "ETH-PERP"]),
    st.integers(950, 1050),  # price in ticks of 0.1
)


def build(rows: list[tuple[int, str, str, int]]) -> list:
    evs = []
    for sec, kind, sym, ticks in sorted(rows, key=lambda r: r[0]):
        t, px = T0 + sec * S, ticks / 10
        if kind == "trade":
            evs.append(Trade(ts=t, recv_ts=t, symbol=sym, price=px, size=0.5, side=1))
        elif kind == "quote":
            evs.append(Quote(ts=t, recv_ts=t, symbol=sym, bid=px, bid_size=1.0, ask=round(px + 0.1, 1), ask_size=2.0))
        elif kind == "mark":
            evs.append(Mark(ts=t, recv_ts=t, symbol=sym, price=px))
        elif kind == "funding":
            evs.append(Funding(ts=t, recv_ts=t, symbol=sym, rate=(ticks - 1000) / 1e5))
        else:
            evs.append(Status(ts=t, recv_ts=t, symbol=sym, text="heartbeat"))
    return evs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=120), interval=st.sampled_from([5.0, 10.0, 30.0]))
def test_fast_equals_reference_on_generated_tapes(rows, interval: float) -> None:
    tape = MemoryTape(build(rows), batch_rows=17)
    params = {"short": 2, "long": 3}
    ref, fast = both(tape, interval_s=interval, params=params, profile="prod")
    assert fast.digest == ref.digest
    assert fast.summary["rows"] == ref.summary["rows"] == len(rows)


book_row = st.tuples(
    st.integers(0, 400),
    st.sampled_from(["book", "book", "book", "book", "trade", "quote", "book_reset"]),
    st.sampled_from(["BTC-PERP", "ETH-PERP"]),
    st.integers(990, 1010),  # few distinct levels: the same level is updated many times
    st.sampled_from([1, -1]),
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
)


def build_book(rows: list[tuple[int, str, str, int, int, float]]) -> list:
    evs: list = []
    for sec, kind, sym, ticks, side, size in sorted(rows, key=lambda r: r[0]):
        t, px = T0 + sec * S, ticks / 10
        if kind == "book":
            evs.append(BookLevel(ts=t, recv_ts=t, symbol=sym, price=px, size=size, side=side, flags=1))
        elif kind == "book_reset":
            evs.append(BookReset(ts=t, recv_ts=t, symbol=sym))
        elif kind == "trade":
            evs.append(Trade(ts=t, recv_ts=t, symbol=sym, price=px, size=0.5, side=side))
        else:
            evs.append(Quote(ts=t, recv_ts=t, symbol=sym, bid=px, bid_size=1.0, ask=round(px + 0.1, 1), ask_size=2.0))
    return evs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(book_row, min_size=1, max_size=150), interval=st.sampled_from([5.0, 30.0]))
def test_fast_equals_reference_on_generated_book_tapes(rows, interval: float) -> None:
    # Market orders walk the book the fast path synced in bulk; resting limits make it dispatch rows.
    tape = MemoryTape(build_book(rows), batch_rows=23)
    orders = [
        [1, "BTC-PERP", "buy", 0.7],
        [2, "BTC-PERP", "sell", 0.5, {"type": "limit", "price": 100.4}],
        [4, "ETH-PERP", "sell", 1.5],
        [6, "BTC-PERP", "sell", 0.2],
    ]
    ref, fast = both(tape, strategy=Scripted, params={"orders": orders}, interval_s=interval)
    assert fast.digest == ref.digest
    assert fast.summary["rows"] == ref.summary["rows"] == len(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(book_row, min_size=1, max_size=150),
    late=st.lists(st.integers(0, 3), min_size=160, max_size=160),
    interval=st.sampled_from([5.0, 30.0]),
    start=st.integers(0, 30),
)
def test_fast_equals_reference_on_book_tapes_read_from_parquet(
    rows, late: list[int], interval: float, start: int
) -> None:
    # From a file, a fast replay reads recv_ts, seq and flags only for the batches it
    # dispatches rows of (tapes/reader.py DEFERRABLE). Small row groups and a replay that
    # starts at ``start`` s: its batches start inside them. Receive times lag (a funding
    # payment records its row's), sequence numbers and flags vary.
    funding = [Funding(ts=T0 + k * 60 * S, recv_ts=T0 + k * 60 * S, symbol="BTC-PERP", rate=1e-4) for k in range(1, 7)]
    evs = [
        msgspec.structs.replace(ev, recv_ts=ev.ts + lag * S, seq=k if lag else None, flags=lag)
        for k, (ev, lag) in enumerate(zip(sorted(build_book(rows) + funding, key=lambda e: e.ts), late, strict=False))
    ]
    orders = [[1, "BTC-PERP", "buy", 0.7], [2, "BTC-PERP", "sell", 0.5, {"type": "limit", "price": 100.4}]]
    with tempfile.TemporaryDirectory() as d:
        path = write(
            pa.Table.from_batches([batch_arrow(batch_from_events(evs))]), Path(d) / "t.parquet", row_group_rows=19
        )
        assert ReplayDriver(open_tape(path), build_config(strategy=Scripted)).defer
        kw = {"start_ns": T0 + start * S, "interval_s": interval}
        ref, fast = both(path, strategy=Scripted, params={"orders": orders}, **kw)
    assert fast.digest == ref.digest
    assert fast.summary["rows"] == ref.summary["rows"] == sum(ev.ts >= T0 + start * S for ev in evs)


@pytest.mark.parametrize(("side", "size", "problem"), [(1, -0.5, "negative size"), (0, 1.0, "is not +1 or -1")])
def test_a_bad_book_row_on_an_unvalidated_tape_fails_both_engines_alike(side: int, size: float, problem: str) -> None:
    # MemoryTape skips validation: the fast path must apply the bad row, not stage it, and raise as the reference does.
    evs = [
        BookLevel(ts=T0 + i * S, recv_ts=T0 + i * S, symbol="BTC-PERP", price=100.0 + i, size=1.0, side=-1)
        for i in range(40)
    ]
    evs.insert(25, BookLevel(ts=T0 + 24 * S, recv_ts=T0 + 24 * S, symbol="BTC-PERP", price=99.0, size=size, side=side))
    errors = []
    for engine in ("reference", "fast"):
        with pytest.raises(perpsim.PerpsimError) as info:
            perpsim.replay(MemoryTape(evs, batch_rows=16), engine=engine, interval_s=5.0)
        errors.append(str(info.value))
    assert problem in errors[0]
    assert errors[0] == errors[1]


def test_a_cross_margin_liquidation_driven_by_another_symbol_is_not_skipped() -> None:
    # Longs of 9,000 in AA and BB bought at 100 (cash after 4 bps fees: 99,280), max leverage 20,
    # maintenance 0.5%. BB's fall to 99 lies inside its skip band, so the fast engine skips it;
    # at AA's 90.9 equity is 99,280 - 81,900 - 9,000 = 8,380 <= 0.005 * 9,000 * (90.9 + 99) =
    # 8,545.5: both are liquidated there, as the reference engine does, not at AA's 89.9.
    from perpsim.core.instruments import Instrument

    inst = {s: Instrument(symbol=s, tick=0.1, lot=0.1, max_leverage=20.0) for s in ("AA", "BB")}

    def q(t: int, sym: str) -> Quote:
        return Quote(ts=T0 + t * S, recv_ts=T0 + t * S, symbol=sym, bid=99.9, bid_size=1e9, ask=100.0, ask_size=1e9)

    def tr(t: int, sym: str, px: float) -> Trade:
        return Trade(ts=T0 + t * S, recv_ts=T0 + t * S, symbol=sym, price=px, size=1.0, side=1)

    tape = [q(0, "AA"), q(0, "BB"), tr(1, "AA", 100.0), tr(1, "BB", 100.0), tr(100, "BB", 99.0)]
    tape += [tr(110, "AA", 90.9), tr(120, "AA", 89.9), tr(300, "AA", 95.0), tr(300, "BB", 100.0)]

    class Both(perpsim.Strategy):
        def on_cycle(self, ctx: perpsim.Context) -> None:
            if ctx.now_ns == T0 + 60 * S:
                ctx.submit("AA", "buy", 9000)
                ctx.submit("BB", "buy", 9000)

    runs = {
        e: perpsim.replay(MemoryTape(tape, instruments=inst), strategy=Both, engine=e) for e in ("reference", "fast")
    }
    for r in runs.values():
        liq = [(x["symbol"], x["price"], x["ts"]) for x in r.events.to_dicts() if x["kind"] == "liquidation"]
        assert liq == [("AA", 90.9, T0 + 110 * S), ("BB", 99.0, T0 + 110 * S)]
        assert r.summary["units"]["cash_end"] == 0  # the BB fee is capped at what was left
    assert runs["fast"].digest == runs["reference"].digest


@settings(max_examples=60, deadline=None)
@given(bb=st.integers(970, 1000), aa=st.lists(st.integers(870, 1000), min_size=1, max_size=4))
def test_fast_equals_reference_when_one_symbols_fall_decides_the_others_liquidation(bb: int, aa: list[int]) -> None:
    # As the hand-computed test above, with BB's fall (inside its skip band) and AA's prices drawn:
    # near the threshold, BB's stale contribution would hide or delay the liquidation.
    from perpsim.core.instruments import Instrument

    inst = {s: Instrument(symbol=s, tick=0.1, lot=0.1, max_leverage=20.0) for s in ("AA", "BB")}

    def tr(t: int, sym: str, ticks: int) -> Trade:
        return Trade(ts=T0 + t * S, recv_ts=T0 + t * S, symbol=sym, price=ticks / 10, size=1.0, side=1)

    quotes = [Quote(ts=T0, recv_ts=T0, symbol=s, bid=99.9, bid_size=1e9, ask=100.0, ask_size=1e9) for s in ("AA", "BB")]
    tape = [*quotes, tr(1, "AA", 1000), tr(1, "BB", 1000), tr(100, "BB", bb)]
    tape += [tr(110 + 10 * k, "AA", px) for k, px in enumerate(aa)] + [tr(300, "AA", 950), tr(300, "BB", 1000)]
    orders = [[2, "AA", "buy", 9000.0], [2, "BB", "buy", 9000.0]]
    ref, fast = both(MemoryTape(tape, instruments=inst), strategy=Scripted, params={"orders": orders}, interval_s=60.0)
    assert fast.digest == ref.digest


# -- hooks, timers and venue timers (audit findings) ---------------------------------------------


def _tr(sec: int, px: float, side: int = -1) -> Trade:
    return Trade(ts=T0 + sec * S, recv_ts=T0 + sec * S, symbol="BTC-PERP", price=px, size=1.0, side=side)


def _end(sec: int) -> Status:
    return Status(ts=T0 + sec * S, recv_ts=T0 + sec * S, symbol="BTC-PERP", text="hb")


class _FillTimer(perpsim.Strategy):
    """A resting buy at 99; its fill sets a timer for the fill's own time."""

    def on_cycle(self, ctx: perpsim.Context) -> None:
        if ctx.now_ns == T0 + 60 * S:
            ctx.submit("BTC-PERP", "buy", 1.0, type="limit", price=99.0)

    def on_fill(self, ctx: perpsim.Context, fill: object) -> None:
        ctx.call_at(ctx.now_ns, lambda now: ctx.decide("BTC-PERP", "HOLD", "after_fill", ctx.mark("BTC-PERP")))


def test_a_timer_a_fill_hook_sets_for_now_fires_at_once_in_both_engines() -> None:
    # the buy fills on the trade at 98.9 (70 s); the timer is due at 70 s and must fire
    # before the next row (98.0 at 71 s). The fast engine, with no order left to watch,
    # dispatched row after row without firing it, and the cycles after it waited too.
    evs = [_tr(1, 100.0), _tr(70, 98.9), *[_tr(71 + k, 98.0 + 0.1 * k) for k in range(40)], _end(300)]
    ref, fast = both(MemoryTape(evs), strategy=_FillTimer)
    assert fast.digest == ref.digest
    (d,) = [e for e in fast.run_events if e.kind == "decision"]
    assert (d.ts, d.price) == (T0 + 70 * S, 98.9)
    assert fast.summary["cycles"] == 5


class _FundingTimer(perpsim.Strategy):
    def on_cycle(self, ctx: perpsim.Context) -> None:
        if ctx.position("BTC-PERP") == 0:
            ctx.submit("BTC-PERP", "buy", 1.0)

    def on_funding(self, ctx: perpsim.Context, pay: object) -> None:
        ctx.call_at(ctx.now_ns, lambda now: ctx.decide("BTC-PERP", "HOLD", "after_funding", ctx.mark("BTC-PERP")))


def test_a_timer_the_funding_hook_sets_for_now_fires_at_the_funding_row() -> None:
    evs = [_tr(1, 100.0), _tr(61, 100.0), Funding(ts=T0 + 90 * S, recv_ts=T0 + 90 * S, symbol="BTC-PERP", rate=1e-4)]
    evs += [_tr(100, 110.0), *[_tr(130 + k, 111.0) for k in range(20)], _end(200)]
    ref, fast = both(MemoryTape(evs), strategy=_FundingTimer)
    assert fast.digest == ref.digest
    (d,) = [e for e in fast.run_events if e.kind == "decision"]
    assert (d.ts, d.price) == (T0 + 90 * S, 100.0)  # before the 110 trade at 100 s
    assert fast.summary["cycles"] == 3


class _GtdWatcher(perpsim.Strategy):
    def on_cycle(self, ctx: perpsim.Context) -> None:
        if ctx.now_ns == T0 + 60 * S:
            ctx.submit("BTC-PERP", "buy", 1.0, type="limit", price=50.0, tif="GTD", expire_ns=T0 + 65 * S)

    def on_order(self, ctx: perpsim.Context, update: perpsim.OrderUpdate) -> None:
        ctx.decide("BTC-PERP", "HOLD", f"{update.status}@{(ctx.now_ns - T0) // S}")


def test_a_gtd_expiry_reaches_on_order_when_it_expires() -> None:
    # no position and no row between 61 s and 120 s: the expiry's notification waited for the
    # next flush (the next cycle in the fast engine, a row of the symbol in the reference)
    evs = [_tr(1, 100.0), _tr(61, 100.0), _tr(121, 100.0), _end(180)]
    ref, fast = both(MemoryTape(evs), strategy=_GtdWatcher)
    assert fast.digest == ref.digest
    seen = [(e.ts, e.reason) for e in fast.run_events if e.kind == "decision"]
    assert seen == [(T0 + 60 * S, "accepted@60"), (T0 + 65 * S, "expired@65")]


class _ShrinkUnderStop(perpsim.Strategy):
    """Long 1 with a reduce-only stop for 1; the long then shrinks to 0.5."""

    def on_start(self, ctx: perpsim.Context) -> None:
        self.k = 0

    def on_cycle(self, ctx: perpsim.Context) -> None:
        self.k += 1
        if self.k == 1:
            ctx.submit("BTC-PERP", "buy", 1.0)
            ctx.submit("BTC-PERP", "sell", 1.0, type="stop", stop_price=99.5, reduce_only=True)
        elif self.k == 2:
            ctx.submit("BTC-PERP", "sell", 0.5)


def test_a_reduce_only_order_walking_the_book_stops_where_the_position_closes() -> None:
    # the stop triggers into bids of 0.5 at 99.9 and 5 at 99.8: the first level closes the
    # 0.5 left, and the order is cancelled there (it walked on and was cancelled twice: a crash)
    def bl(side: int, px: float, size: float, eom: int) -> BookLevel:
        return BookLevel(ts=T0 + S, recv_ts=T0 + S, symbol="BTC-PERP", price=px, size=size, side=side, flags=eom)

    evs = [bl(1, 99.9, 0.5, 0), bl(1, 99.8, 5.0, 0), bl(-1, 100.0, 5.0, 0), bl(-1, 100.1, 5.0, 1)]
    evs += [_tr(1, 100.0, side=1), _tr(130, 99.4), _end(200)]
    ref, fast = both(MemoryTape(evs), strategy=_ShrinkUnderStop)
    assert fast.digest == ref.digest
    fills = [(e.qty, e.price, e.position_after) for e in fast.run_events if e.kind == "fill"]
    assert fills[-1] == (0.5, 99.9, 0.0)
    (cancel,) = [e for e in fast.run_events if e.kind == "cancel"]
    assert cancel.reason == "reduce_only_nothing_to_close"


class _ManyOrders(perpsim.Strategy):
    def on_cycle(self, ctx: perpsim.Context) -> None:
        if ctx.now_ns == T0 + 60 * S:
            for k in range(600):
                ctx.submit("BTC-PERP", "buy", 1.0, type="limit", price=round(20.0 + k / 10, 1))

    def on_order(self, ctx: perpsim.Context, update: perpsim.OrderUpdate) -> None:
        pass


def test_hundreds_of_updates_reach_a_hook_without_deepening_the_stack() -> None:
    # each queued update's hook flushed the next from inside itself: 500 of them overflowed
    # Python's stack (RecursionError)
    ref, fast = both(MemoryTape([_tr(1, 100.0), _tr(61, 100.0), _end(120)]), strategy=_ManyOrders)
    assert fast.digest == ref.digest
    assert sum(1 for e in fast.run_events if e.kind == "order") == 600


def _trades_table(n: int) -> pa.Table:
    evs = [Trade(ts=T0 + i * S, recv_ts=T0 + i * S + 5, symbol="BTC-PERP", price=100.0, size=1.0, side=1, seq=i)
           for i in range(n)]  # fmt: skip
    return pa.Table.from_batches([batch_arrow(batch_from_events(evs))])


RESTING = {"orders": [[1, "BTC-PERP", "buy", 1.0, {"type": "limit", "price": 90.0}]]}


def test_a_value_a_column_cannot_be_cast_to_fails_fast_and_reference_replays_alike(tmp_path: Path) -> None:
    # A foreign file stores flags as int64 with 300 on row 150: a column read with a cast
    # is not left for later, so the fast engine (which dispatches no row here) finds it too.
    table = _trades_table(200)
    flags = np.zeros(200, np.int64)
    flags[150] = 300
    table = table.set_column(table.schema.get_field_index("flags"), pa.field("flags", pa.int64()), pa.array(flags))
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=64)
    errors = []
    for engine in ("reference", "fast"):
        with pytest.raises(perpsim.TapeError, match=r"t.parquet row 128 column flags: cannot read int64 as uint8") as e:
            perpsim.replay(tmp_path / "t.parquet", engine=engine, strategy=Scripted, interval_s=5.0)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def _corrupt(path: Path, group: int, column: str) -> None:
    md = pq.read_metadata(path)
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    chunk = md.row_group(group).column(names.index(column))
    with path.open("r+b") as f:
        f.seek((chunk.dictionary_page_offset or chunk.data_page_offset) + 20)
        f.write(b"\xff" * 40)


def test_a_corrupt_column_left_for_later_stops_every_run_of_a_shared_read(tmp_path: Path) -> None:
    # Row group 1's flags chunk is corrupt. The run with a resting order dispatches rows of
    # that group, so its flags are read then: the tape's error stops both runs, as an
    # error found while decoding does (replay_many).
    path = write(_trades_table(300), tmp_path / "t.parquet", row_group_rows=100, codec="zstd")
    _corrupt(path, 1, "flags")
    runs = [RunSpec(strategy=Scripted, params=RESTING, interval_s=5.0), RunSpec(strategy=Scripted, interval_s=5.0)]
    results = perpsim.replay_many(path, runs)
    assert [type(r).__name__ for r in results] == ["TapeError", "TapeError"]
    assert re.match(rf"{re.escape(str(path))}: row group 1 cannot be read \(.*", str(results[0]))
    with pytest.raises(perpsim.TapeError, match="row group 1 cannot be read"):
        perpsim.replay(path, engine="reference", strategy=Scripted, interval_s=5.0)


def test_columns_are_left_for_later_only_while_runs_seldom_dispatch_rows(tmp_path: Path, monkeypatch) -> None:
    # 40 row groups of 50 trades, 1 s apart. A resting limit (placed at the first cycle,
    # never filled) makes the fast engine dispatch rows of every batch: after the row
    # groups already read ahead, the rest are read whole, not left for this thread.
    path = write(_trades_table(2000), tmp_path / "t.parquet", row_group_rows=50)
    deferred: list[bool] = []
    feed = ReplayDriver.feed

    def spy(self: ReplayDriver, batch) -> None:
        deferred.append(batch.pending is not None)
        feed(self, batch)

    monkeypatch.setattr(ReplayDriver, "feed", spy)
    perpsim.replay(path, strategy=Scripted, params=RESTING, interval_s=5.0)
    assert len(deferred) == 40 and 1 <= sum(deferred) <= 6
    deferred.clear()
    perpsim.replay(path, strategy=Scripted, interval_s=5.0)  # no order: no row dispatched
    assert len(deferred) == 40 and all(deferred)
    deferred.clear()
    perpsim.replay_many(
        path, [RunSpec(strategy=Scripted, interval_s=5.0), RunSpec(strategy=Scripted, params=RESTING, interval_s=5.0)]
    )
    assert len(deferred) == 80 and sum(deferred) <= 12
