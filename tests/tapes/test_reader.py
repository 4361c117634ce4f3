"""Reader: files, folders and lists of them, streamed one row group at a time."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpsim.core.batch import batch_events, concat_batches
from perpsim.core.errors import TapeError
from perpsim.core.events import Kind
from perpsim.core.instruments import Instrument
from perpsim.tapes import SCHEMA, TapeMeta, TapeWriter, open_tape
from perpsim.tapes.memory import MemoryTape
from perpsim.tapes.reader import complete, to_batch

T0 = 1_704_067_200 * 10**9


def trades(start: int, n: int, symbols: tuple[str, ...] = ("X",)) -> pa.Table:
    """n trade rows at T0 + start.., cycling through ``symbols``."""
    i = np.arange(start, start + n)
    return pa.Table.from_pydict(
        {
            "ts": T0 + i,
            "recv_ts": T0 + i,
            "kind": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["trade"])),
            "symbol": pa.DictionaryArray.from_arrays(
                pa.array((i % len(symbols)).astype(np.int32)), pa.array(list(symbols))
            ),
            "price": 100.0 + i,
            "size": np.ones(n),
            "side": np.ones(n, np.int8),
            **{c: pa.nulls(n, SCHEMA.field(c).type) for c in ("bid", "bid_size", "ask", "ask_size", "rate")},
            "next_ts": pa.nulls(n, pa.int64()),
            "text": pa.nulls(n, pa.string()),
            "seq": i,
            "flags": np.ones(n, np.uint8),
        },
        schema=SCHEMA,
    )


def make_tape(path: Path, start: int, n: int, *, row_group_rows: int = 65536, **meta: object) -> Path:
    with TapeWriter(path, TapeMeta(**meta), row_group_rows=row_group_rows) as w:  # type: ignore[arg-type]
        w.write(trades(start, n))
    return path


def test_open_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match=re.escape(str(tmp_path / "nope.parquet")) + ": no such file or folder$"):
        open_tape(tmp_path / "nope.parquet")


def test_open_non_parquet_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.parquet"
    bad.write_text("hello, this is not parquet\n" * 10)
    with pytest.raises(TapeError, match=re.escape(str(bad)) + r": not a Parquet file \(") as info:
        open_tape(bad)
    assert "\n" not in str(info.value)


def test_open_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / ".hidden.parquet").write_text("partial")
    with pytest.raises(TapeError, match=re.escape(str(tmp_path)) + ": folder has no .parquet files"):
        open_tape(tmp_path)


def test_open_reads_footers_only(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 2500, row_group_rows=1000, source="x")
    tape = open_tape(str(path))
    assert tape.num_rows == 2500
    assert tape.num_row_groups == 3
    assert tape.files == (path,)
    assert tape.meta.rows == 2500
    assert (tape.meta.start_ns, tape.meta.end_ns) == (T0, T0 + 2499)
    assert "2500 rows" in repr(tape)


def test_batches_stream_one_row_group_at_a_time(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 10_000, row_group_rows=1000)
    tape = open_tape(path)
    sizes = [len(b) for b in tape.batches()]
    assert sizes == [1000] * 10  # one batch per row group, never the whole tape
    sizes = [len(b) for b in tape.batches(batch_rows=300)]
    assert sizes == [300, 300, 300, 100] * 10  # never spans a row group
    ts = np.concatenate([b.ts for b in tape.batches(batch_rows=300)])
    assert ts.tolist() == [T0 + i for i in range(10_000)]


def test_folder_reads_files_in_name_order_and_merges_meta(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    # Written out of order; zero-padded names decide the read order.
    make_tape(folder / "000002.parquet", 100, 50, instruments={"X": Instrument(symbol="X", tick=1.0)})
    make_tape(folder / "000001.parquet", 0, 100, instruments={"Y": Instrument(symbol="Y", tick=0.5)}, source="live")
    (folder / ".000003.parquet.123.tmp").write_text("a recorder's partial file")
    tape = open_tape(folder)
    assert [p.name for p in tape.files] == ["000001.parquet", "000002.parquet"]
    assert tape.num_rows == 150
    assert tape.meta.rows == 150
    assert (tape.meta.start_ns, tape.meta.end_ns) == (T0, T0 + 149)
    assert sorted(tape.instruments) == ["X", "Y"]
    assert tape.meta.source == "live"
    ts = np.concatenate([b.ts for b in tape.batches()])
    assert ts.tolist() == [T0 + i for i in range(150)]


def test_list_of_paths_is_one_tape(tmp_path: Path) -> None:
    a = make_tape(tmp_path / "a.parquet", 0, 10)
    b = make_tape(tmp_path / "b.parquet", 10, 10)
    tape = open_tape([a, b])
    assert sum(len(x) for x in tape.batches()) == 20
    with pytest.raises(TapeError, match="no tape given"):
        open_tape([])


def test_unsorted_across_files_names_the_later_file(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    make_tape(folder / "001.parquet", 0, 100)
    second = make_tape(folder / "002.parquet", 50, 10)
    tape = open_tape(folder)
    pattern = re.escape(str(second)) + r" row 0 column ts: \d+ is before \d+ in the last row of .*001.parquet"
    with pytest.raises(TapeError, match=pattern):
        list(tape.batches())


def test_unsorted_across_row_groups_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.concat_tables([trades(0, 100), trades(90, 100)])
    pq.write_table(table, path, row_group_size=100)
    with pytest.raises(TapeError, match=re.escape(str(path)) + r" row 100 column ts: .* before .* previous row"):
        list(open_tape(path).batches())


def test_clock_columns_must_agree_across_files(tmp_path: Path) -> None:
    make_tape(tmp_path / "1.parquet", 0, 5)
    make_tape(tmp_path / "2.parquet", 5, 5, clock="recv_ts")
    with pytest.raises(TapeError, match=r"2.parquet: clock column 'recv_ts' differs from 'ts'"):
        open_tape(tmp_path)


def test_window_keeps_clock_in_start_end(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 5000, row_group_rows=500)
    tape = open_tape(path)
    got = np.concatenate([b.ts for b in tape.batches(start_ns=T0 + 1234, end_ns=T0 + 3210)])
    assert got.tolist() == list(range(T0 + 1234, T0 + 3210))
    got = np.concatenate([b.ts for b in tape.batches(validate=False, start_ns=T0 + 4990)])
    assert got.tolist() == list(range(T0 + 4990, T0 + 5000))
    assert list(tape.batches(start_ns=T0 + 6000)) == []
    rbs = list(tape.record_batches(start_ns=T0 + 10, end_ns=T0 + 20))
    assert sum(rb.num_rows for rb in rbs) == 10 and rbs[0].schema == SCHEMA


def test_symbols_are_per_batch_dictionaries(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with TapeWriter(path, TapeMeta()) as w:
        w.write(trades(0, 6, symbols=("A", "B", "C")))
    (b,) = open_tape(path).batches()
    assert [b.symbols[i] for i in b.symbol] == ["A", "B", "C", "A", "B", "C"]
    assert b.symbol.dtype == np.int32
    assert b.kind.dtype == np.int8


def test_a_tapes_symbols_are_the_ones_its_rows_name(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    with TapeWriter(a, TapeMeta()) as w:
        w.write(trades(0, 4, symbols=("ETH", "BTC")))
    t = trades(4, 3).to_pydict()
    # a dictionary entry no row uses, and a timer row (symbol "*"), are not symbols of the tape
    t["symbol"] = pa.DictionaryArray.from_arrays(pa.array([0, 2, 2], pa.int32()), pa.array(["SOL", "ZZZ", "*"]))
    with TapeWriter(b, TapeMeta()) as w:
        w.write(pa.Table.from_pydict(t, schema=SCHEMA))
    foreign = trades(7, 2, symbols=("ADA",)).to_pydict()
    foreign["symbol"] = ["ADA", "ADA"]  # plain strings, read as a dictionary
    pq.write_table(pa.table(foreign), c)
    assert open_tape([a, b, c]).symbols == ("ADA", "BTC", "ETH", "SOL")
    assert open_tape(b).symbols == ("SOL",)
    assert MemoryTape([]).symbols == ()


def test_a_file_given_twice_is_refused_whatever_the_spelling(tmp_path: Path) -> None:
    folder = tmp_path / "day"
    folder.mkdir()
    with TapeWriter(folder / "a.parquet", TapeMeta()) as w:
        w.write(trades(0, 3))
    with pytest.raises(TapeError, match=r"a.parquet: given twice; each file is read once"):
        open_tape([folder / "a.parquet", folder / "a.parquet"])
    with pytest.raises(TapeError, match=r"given twice \(also as .*day/a.parquet\)"):
        open_tape([folder, tmp_path / "day" / ".." / "day" / "a.parquet"])
    assert open_tape([folder]).num_rows == 3


def test_recv_ts_clock_drives_batches(tmp_path: Path) -> None:
    t = trades(0, 3).to_pydict()
    t["ts"] = [T0 + 5, T0 + 1, T0 + 2]  # venue time may go back; recv_ts may not
    path = tmp_path / "r.parquet"
    with TapeWriter(path, TapeMeta(clock="recv_ts")) as w:
        w.write(pa.Table.from_pydict(t, schema=SCHEMA))
    (b,) = open_tape(path).batches()
    assert b.clock is b.recv_ts
    assert b.clock.tolist() == [T0, T0 + 1, T0 + 2]


def test_foreign_parquet_without_metadata_is_read_and_cast(tmp_path: Path) -> None:
    # Plain strings instead of dictionaries, timestamps instead of int64 ns, float32 prices.
    path = tmp_path / "foreign.parquet"
    n = 4
    table = pa.table(
        {
            "ts": pa.array(T0 + np.arange(n), pa.timestamp("ns")),
            "recv_ts": pa.array([None] * n, pa.int64()),
            "kind": ["trade", "quote", "mark", "trade"],
            "symbol": ["A", "A", "B", "B"],
            "price": pa.array([1.5, None, 2.5, 3.0], pa.float32()),
            "size": [1.0, None, None, 2.0],
            "side": pa.array([1, None, None, -1], pa.int64()),
            "bid": [None, 1.0, None, None],
            "bid_size": [None, 1.0, None, None],
            "ask": [None, 2.0, None, None],
            "ask_size": [None, 1.0, None, None],
            "rate": pa.nulls(n, pa.float64()),
            "next_ts": pa.nulls(n, pa.int64()),
            "text": pa.nulls(n, pa.string()),
            "seq": pa.nulls(n, pa.int64()),
            "flags": pa.nulls(n, pa.uint8()),
            "extra": [1, 2, 3, 4],  # ignored
        }
    )
    pq.write_table(table, path)
    tape = open_tape(path)
    assert tape.meta.clock == "ts" and tape.meta.source == "unknown"
    assert (tape.meta.start_ns, tape.meta.end_ns) == (T0, T0 + 3)  # from row-group statistics
    (b,) = tape.batches()
    assert b.kind.tolist() == [Kind.TRADE, Kind.QUOTE, Kind.MARK, Kind.TRADE]
    assert b.recv_ts.tolist() == b.ts.tolist()
    assert b.price.dtype == np.float64 and b.price[0] == 1.5
    assert b.side.tolist() == [1, 0, 0, -1]
    assert b.flags.tolist() == [0] * 4
    (rb,) = tape.record_batches()
    assert rb.schema == SCHEMA


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(trades(0, 3).drop_columns(["price", "flags"]), path)
    with pytest.raises(TapeError, match=re.escape(str(path)) + ": missing columns price, flags$"):
        open_tape(path)


def test_unknown_kind_raises_even_without_validation(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    t = trades(0, 3).to_pydict()
    t["kind"] = ["trade", "trade", "liquidation"]
    pq.write_table(pa.Table.from_pydict(t), path)
    with pytest.raises(TapeError, match=re.escape(str(path)) + r" row 2 column kind: unknown kind 'liquidation'"):
        list(open_tape(path).batches(validate=False))


def test_instrument_falls_back_to_builtin_then_defaults(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 1, instruments={"X": Instrument(symbol="X", tick=2.0)})
    tape = open_tape(path)
    assert tape.instrument("X") == (Instrument(symbol="X", tick=2.0), False)
    assert tape.instrument("BTC-PERP")[0].tick == 0.1
    ins, fell_back = tape.instrument("ZZZ")
    assert fell_back and ins.symbol == "ZZZ"


def test_to_batch_reports_null_ts_with_row_offset() -> None:
    t = trades(0, 3).to_pydict()
    t["ts"][1] = None
    rb = pa.Table.from_pydict(t, schema=SCHEMA).to_batches()[0]
    with pytest.raises(TapeError, match=r"^f.parquet row 11 column ts: null$"):
        to_batch(rb, file="f.parquet", row0=10)


def test_tapes_package_exports_are_explicit() -> None:
    import importlib

    import perpsim.tapes as pkg

    assert len(pkg.__all__) == len(set(pkg.__all__))
    assert all(hasattr(pkg, name) for name in pkg.__all__)
    for mod in ("reader", "writer", "validate", "synth", "schema"):
        m = importlib.import_module(f"perpsim.tapes.{mod}")
        assert all(hasattr(m, name) for name in m.__all__), mod


def test_prefetch_gives_the_same_batches_and_the_error_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.concat_tables([trades(0, 300), trades(250, 100)]), path, row_group_size=100)
    tape = open_tape(path)
    seen: list[np.ndarray] = []
    with pytest.raises(TapeError, match=r" row 300 column ts: "):
        for b in tape.batches(prefetch=2):
            seen.append(b.clock)
    assert len(seen) == 3  # the three good row groups arrive before the error
    assert np.array_equal(np.concatenate(seen), T0 + np.arange(300))


def test_prefetch_threads_end_when_the_consumer_stops(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "t.parquet"
    pq.write_table(trades(0, 2000), path, row_group_size=100)
    got = open_tape(path).batches(prefetch=4)
    first = [next(got) for _ in range(3)]
    assert [int(b.clock[0]) for b in first] == [T0, T0 + 100, T0 + 200]
    got.close()
    assert not any(t.name.startswith("perpsim-tape-reader") for t in threading.enumerate())


@pytest.mark.parametrize("values", [[1.0, None, 3.0, None, 5.5], [None] * 3 + [2.0] * 20 + [None], [None, None]])
def test_float_columns_read_nulls_as_nan_at_any_offset(values: list[float | None]) -> None:
    from perpsim.tapes.reader import _floats, _Validity

    a = pa.array(values, pa.float64())
    for off in range(len(a)):
        for n in range(len(a) - off + 1):
            part = a.slice(off, n)
            want = [np.nan if v is None else v for v in values[off : off + n]]
            assert np.array_equal(_floats(part, n, _Validity(n)), np.array(want, np.float64), equal_nan=True), (off, n)


@pytest.mark.parametrize("off", [0, 1, 5, 9])
def test_nulls_are_filled_whatever_lies_under_them_and_signed_zeros_survive(off: int) -> None:
    """Arrow leaves the values under a null unspecified: a reader must not trust them.

    The columns share one bitmap, as a quote's four columns do, and a value of -0.0
    must come out as -0.0 (not +0.0) after the nulls are filled.
    """
    from perpsim.core.batch import NULL_SEQ
    from perpsim.tapes.reader import _floats, _ints, _Validity

    n = 20
    i = np.arange(n + off)
    valid = i % 3 != 1
    bits = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    under = np.where(valid, 0, 1)  # garbage below the nulls, nothing below the values
    values = np.where(i % 3 == 0, -0.0, i.astype(np.float64))
    floats = np.where(valid, values, np.inf)
    px = pa.Array.from_buffers(pa.float64(), n + off, [bits, pa.py_buffer(floats.tobytes())]).slice(off, n)
    size = pa.Array.from_buffers(pa.float64(), n + off, [bits, pa.py_buffer((floats * 2).tobytes())]).slice(off, n)
    side = pa.Array.from_buffers(pa.int8(), n + off, [bits, pa.py_buffer((under * 7).astype(np.int8).tobytes())])
    seq = pa.Array.from_buffers(pa.int64(), n + off, [bits, pa.py_buffer((under * 9).astype(np.int64).tobytes())])
    nulls = _Validity(n)
    v = valid[off:]
    got_px, got_size = _floats(px, n, nulls), _floats(size, n, nulls)
    want = np.where(v, values[off:], np.nan)
    assert np.array_equal(got_px, want, equal_nan=True)
    assert np.array_equal(got_size, want * 2, equal_nan=True)
    assert np.signbit(got_px[(i[off:] % 3 == 0)]).all()  # each -0.0 stayed negative
    assert _ints(side.slice(off, n), "side", n, nulls).tolist() == [0] * n
    assert _ints(seq.slice(off, n), "seq", n, nulls).tolist() == np.where(v, 0, NULL_SEQ).tolist()
    flags = pa.Array.from_buffers(pa.uint8(), n + off, [bits, pa.py_buffer((under * 3).astype(np.uint8).tobytes())])
    assert _ints(flags.slice(off, n), "flags", n, nulls).tolist() == [0] * n


@pytest.mark.parametrize("prefetch", [0, 3])
def test_row_groups_too_large_to_read_whole_stream_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefetch: int
) -> None:
    from perpsim.tapes import reader

    path = tmp_path / "t.parquet"
    pq.write_table(trades(0, 5000), path, row_group_size=2000)
    monkeypatch.setattr(reader, "_WHOLE_GROUP_ROWS", 1000)  # every group is "huge": streamed
    batches = list(open_tape(path).batches(batch_rows=700, prefetch=prefetch))
    assert max(len(b) for b in batches) <= 700
    assert np.array_equal(np.concatenate([b.clock for b in batches]), T0 + np.arange(5000))


def test_float_nulls_become_nan_in_place_in_arrows_own_buffer_and_copied_from_a_foreign_one() -> None:
    from perpsim.tapes.reader import _floats, _Validity

    values = [1.0, None, 3.0, None]
    owned = pa.array(values, pa.float64())
    validity = owned.buffers()[0]
    foreign = pa.Array.from_buffers(pa.float64(), 4, [validity, pa.py_buffer(np.array([1.0, 7.0, 3.0, 7.0]).tobytes())])
    want = np.array([1.0, np.nan, 3.0, np.nan])
    for a in (owned, foreign):
        got = _floats(a, 4, _Validity(4))
        assert np.array_equal(got, want, equal_nan=True)
        assert np.shares_memory(got, np.frombuffer(a.buffers()[1], np.float64)) == (a is owned)
    assert owned.to_pylist() == values  # nulls are still nulls to Arrow


def test_all_null_columns_are_one_shared_read_only_array_per_length() -> None:
    from perpsim.tapes.reader import _floats, _Validity

    a, b = (_floats(pa.nulls(5, pa.float64()), 5, _Validity(5)) for _ in range(2))
    assert a is b and np.isnan(a).all() and len(a) == 5
    with pytest.raises(ValueError):
        a[0] = 1.0  # a write would reach every batch of that length


# -- columns left for later (Tape.batches(defer=True)) ----------------------------------------


def _varied(n: int, clock: str = "ts") -> pa.Table:
    """Trades whose deferrable columns have values and nulls: recv_ts late or unknown,
    seq missing on some rows, flags of every kind."""
    t = trades(0, n, ("X", "Y"))
    i = np.arange(n)
    recv = pa.array(T0 + i + 5 * (i % 3), mask=(i % 4 == 1))
    seq = pa.array(1000 + i, mask=(i % 5 == 2))
    flags = pa.array((i % 4).astype(np.uint8))
    t = t.set_column(SCHEMA.get_field_index("recv_ts"), "recv_ts", recv)
    t = t.set_column(SCHEMA.get_field_index("seq"), "seq", seq)
    t = t.set_column(SCHEMA.get_field_index("flags"), "flags", flags)
    if clock == "recv_ts":  # sorted by recv_ts: every row known, rising
        t = t.set_column(SCHEMA.get_field_index("recv_ts"), "recv_ts", pa.array(T0 + 2 * i))
    return t


def _same(a: object, b: object) -> None:
    for name in ("clock", "ts", "recv_ts", "kind", "symbol", "price", "size", "side", "seq", "flags", "next_ts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.symbols == b.symbols and a.text == b.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("clock", ["ts", "recv_ts"])
def test_deferred_columns_read_later_equal_a_whole_read(tmp_path: Path, clock: str) -> None:
    path = tmp_path / "t.parquet"
    with TapeWriter(path, TapeMeta(clock=clock), row_group_rows=11) as w:  # type: ignore[arg-type]
        w.write(_varied(40, clock))
    tape = open_tape(path)
    window = {"start_ns": int(T0 + 3 * (clock == "recv_ts") + 3), "end_ns": int(T0 + 70)}
    full = list(tape.batches(batch_rows=4, **window))
    later = list(tape.batches(batch_rows=4, defer=True, prefetch=2, **window))
    assert [len(b) for b in later] == [len(b) for b in full] and len(full) > 5
    deferred = {"seq", "flags"} | ({"recv_ts"} if clock == "ts" else set())
    for b in later:
        assert b.pending is not None
        assert {name for name in ("recv_ts", "seq", "flags") if getattr(b, name) is None} == deferred
    # rows picked from a batch before its columns are read (a symbol filter) follow it
    mask = np.array([True, False, True, True])[: len(later[2])]
    picked = later[2].rows(mask)
    sliced = later[5].rows(slice(1, 3))  # a slice of a batch that starts inside its row group
    for a, b in zip(later, full, strict=True):
        assert complete(a) is a and a.pending is None
        _same(a, b)
    _same(complete(picked), full[2].rows(mask))
    _same(complete(sliced), full[5].rows(slice(1, 3)))
    tail = later[3].rows(slice(1, None))  # completed already: nothing left to read
    assert tail.pending is None
    _same(tail, full[3].rows(slice(1, None)))


def test_a_deferred_column_that_is_all_null_is_not_read(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 10)  # recv_ts = ts, seq and flags set
    table = pq.read_table(path).set_column(SCHEMA.get_field_index("seq"), "seq", pa.nulls(10, pa.int64()))
    pq.write_table(table, path)
    (b,) = open_tape(path).batches(defer=True)
    assert b.seq.tolist() == [-1] * 10  # NULL_SEQ, as a whole read makes it
    assert b.recv_ts is None and b.flags is None
    complete(b)
    assert b.recv_ts.tolist() == b.ts.tolist() and b.flags.tolist() == [1] * 10


def test_a_batch_with_columns_left_unread_is_refused_until_they_are_read(tmp_path: Path) -> None:
    (b,) = open_tape(make_tape(tmp_path / "t.parquet", 0, 10)).batches(defer=True)
    for use in (batch_events, lambda b: concat_batches([b, b])):
        with pytest.raises(ValueError, match=r"columns left unread: perpsim.tapes.reader.complete\(batch\)"):
            use(b)
    assert len(batch_events(complete(b))) == 10


def test_a_tape_gone_before_its_columns_are_read_says_so(tmp_path: Path) -> None:
    path = make_tape(tmp_path / "t.parquet", 0, 10)
    (b,) = open_tape(path).batches(defer=True)
    path.unlink()
    with pytest.raises(TapeError, match=re.escape(str(path)) + ": row group 0 cannot be read \\(.*No such file"):
        complete(b)
