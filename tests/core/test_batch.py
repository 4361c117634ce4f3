"""batch_from_events: the columns of a feed message, checked against hand-written values."""

from __future__ import annotations

import math

import numpy as np

from perpsim.core.batch import NULL_SEQ, Batch, batch_events, batch_from_events, concat_batches, event_rows, rows_batch
from perpsim.core.events import (
    BookLevel,
    BookReset,
    Flags,
    Funding,
    Kind,
    Mark,
    MarketEvent,
    Quote,
    Status,
    TimerFired,
    Trade,
)

EOM, SNAP = int(Flags.END_OF_MESSAGE), int(Flags.SNAPSHOT)
NAN = math.nan

MIXED: list[MarketEvent] = [
    BookReset(ts=5, recv_ts=9, symbol="BTC-PERP", seq=7, flags=SNAP),
    BookLevel(ts=5, recv_ts=9, symbol="BTC-PERP", seq=7, flags=SNAP, price=10.0, size=1.0, side=1),
    Mark(ts=6, recv_ts=10, symbol="ETH-PERP", price=3.5),
    Trade(ts=6, recv_ts=10, symbol="ETH-PERP", price=3.0, size=0.1, side=-1),
    Quote(ts=7, recv_ts=11, symbol="BTC-PERP", seq=8, bid=9.5, bid_size=2.0, ask=10.5, ask_size=0.5),
    Funding(ts=8, recv_ts=12, symbol="BTC-PERP", rate=0.0001, next_ts=99),
    Status(ts=9, recv_ts=13, symbol="*", text="gap"),
    TimerFired(ts=10, recv_ts=14, symbol="*", text="cycle", next_ts=15, flags=EOM),
]


def _eq(a: np.ndarray, expected: list, dtype: type) -> None:
    assert a.dtype == np.dtype(dtype)
    assert np.array_equal(a, np.array(expected, dtype), equal_nan=True), (a, expected)


def test_every_kind_lands_in_its_columns() -> None:
    b = batch_from_events(MIXED, clock="recv_ts")
    k = Kind
    _eq(b.kind, [k.BOOK_RESET, k.BOOK, k.MARK, k.TRADE, k.QUOTE, k.FUNDING, k.STATUS, k.TIMER], np.int8)
    assert b.symbols == ("BTC-PERP", "ETH-PERP", "*")
    _eq(b.symbol, [0, 0, 1, 1, 0, 0, 2, 2], np.int32)
    _eq(b.ts, [5, 5, 6, 6, 7, 8, 9, 10], np.int64)
    _eq(b.recv_ts, [9, 9, 10, 10, 11, 12, 13, 14], np.int64)
    _eq(b.clock, [9, 9, 10, 10, 11, 12, 13, 14], np.int64)
    _eq(b.price, [NAN, 10.0, 3.5, 3.0, NAN, NAN, NAN, NAN], np.float64)
    _eq(b.size, [NAN, 1.0, NAN, 0.1, NAN, NAN, NAN, NAN], np.float64)
    _eq(b.side, [0, 1, 0, -1, 0, 0, 0, 0], np.int8)
    _eq(b.bid, [NAN, NAN, NAN, NAN, 9.5, NAN, NAN, NAN], np.float64)
    _eq(b.bid_size, [NAN, NAN, NAN, NAN, 2.0, NAN, NAN, NAN], np.float64)
    _eq(b.ask, [NAN, NAN, NAN, NAN, 10.5, NAN, NAN, NAN], np.float64)
    _eq(b.ask_size, [NAN, NAN, NAN, NAN, 0.5, NAN, NAN, NAN], np.float64)
    _eq(b.rate, [NAN, NAN, NAN, NAN, NAN, 0.0001, NAN, NAN], np.float64)
    _eq(b.next_ts, [0, 0, 0, 0, 0, 99, 0, 15], np.int64)
    _eq(b.seq, [7, 7, NULL_SEQ, NULL_SEQ, 8, NULL_SEQ, NULL_SEQ, NULL_SEQ], np.int64)
    _eq(b.flags, [SNAP, SNAP, 0, 0, 0, 0, 0, EOM], np.uint8)
    assert b.text == [None, None, None, None, None, None, "gap", "cycle"]
    _eq(batch_from_events(MIXED).clock, [5, 5, 6, 6, 7, 8, 9, 10], np.int64)


def test_events_round_trip() -> None:
    assert batch_events(batch_from_events(MIXED)) == MIXED


def test_rows_keep_every_column_aligned() -> None:
    rows = event_rows(MIXED)
    assert len(rows) == 8
    assert rows.symbol == ["BTC-PERP", "BTC-PERP", "ETH-PERP", "ETH-PERP", "BTC-PERP", "BTC-PERP", "*", "*"]
    assert rows.kind[5:7] == [Kind.FUNDING, Kind.STATUS] and rows.text[5:7] == [None, "gap"]
    assert rows.next_ts == [0, 0, 0, 0, 0, 99, 0, 15] and rows.seq[:3] == [7, 7, NULL_SEQ]


def test_messages_group_rows_by_end_of_message() -> None:
    from perpsim.core.events import split_messages

    a = Trade(ts=1, recv_ts=1, symbol="X", price=1.0, size=1.0)
    end = Trade(ts=1, recv_ts=1, symbol="X", price=1.0, size=1.0, flags=EOM)
    assert list(split_messages([a, a, end, end, a])) == [[a, a, end], [end], [a]]
    assert list(split_messages([])) == []


def test_rows_by_slice_and_mask_keep_columns_and_text_aligned() -> None:
    from perpsim.core.batch import symbol_mask

    b = batch_from_events(MIXED)
    part = b.rows(slice(5, 7))
    assert part.text == [None, "gap"] and part.kind.tolist() == [Kind.FUNDING, Kind.STATUS]
    assert b.rows(slice(0, None)) is b
    every_other = b.rows(slice(None, None, 2))
    assert len(every_other) == (len(b) + 1) // 2 and every_other.ts.tolist() == b.ts.tolist()[::2]
    eth = b.rows(symbol_mask(b, {"ETH-PERP"}))
    assert eth.kind.tolist() == [Kind.MARK, Kind.TRADE] and eth.text == [None, None]
    assert eth.price.tolist() == [3.5, 3.0] and eth.symbols == b.symbols
    star = b.rows(symbol_mask(b, {"*"}))
    assert star.text == ["gap", "cycle"]


def test_concat_batches_joins_rows_in_order_and_keeps_the_clock_one_of_the_time_columns() -> None:
    names: dict[str, int] = {}  # one symbol numbering, as the recorder keeps

    def part(events: list[MarketEvent], clock: str) -> Batch:
        return rows_batch(event_rows(events), clock, names)

    by_recv = concat_batches([part(MIXED[:3], "recv_ts"), part(MIXED[3:], "recv_ts")])
    assert batch_events(by_recv) == MIXED
    _eq(by_recv.clock, [9, 9, 10, 10, 11, 12, 13, 14], np.int64)
    assert by_recv.clock is by_recv.recv_ts  # shared, as in every batch it was joined from
    by_ts = concat_batches([part(MIXED[:3], "ts"), part(MIXED[3:], "ts")])
    _eq(by_ts.clock, [5, 5, 6, 6, 7, 8, 9, 10], np.int64)
    assert by_ts.clock is by_ts.ts
    mixed = concat_batches([part(MIXED[:3], "recv_ts"), part(MIXED[3:], "ts")])  # joined as they are
    _eq(mixed.clock, [9, 9, 10, 6, 7, 8, 9, 10], np.int64)
