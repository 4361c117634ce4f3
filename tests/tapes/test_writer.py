"""Writer: DataFrames and Arrow tables in, validated tapes out; streaming row groups."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpsim.core.batch import NULL_SEQ, Batch
from perpsim.core.errors import TapeError
from perpsim.core.events import Kind
from perpsim.core.instruments import Instrument
from perpsim.tapes import SCHEMA, TapeMeta, TapeWriter, open_tape, write, write_table
from perpsim.tapes.schema import META_KEY, TimerSpec, decode_meta

T0 = 1_704_067_200 * 10**9


def read_all(path: Path | str) -> Batch:
    """One batch with every row of a tape (small tapes only)."""
    batches = list(open_tape(path).batches())
    assert len(batches) == 1
    return batches[0]


def sample_df() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 3],
            "kind": ["quote", "trade", "funding", "status", "trade"],
            "symbol": ["BTC-PERP", "BTC-PERP", "BTC-PERP", "ETH-PERP", "ETH-PERP"],
            "price": [None, 60000.5, None, None, 3000.25],
            "size": [None, 0.01, None, None, 1.5],
            "side": [None, 1, None, None, -1],
            "bid": [60000.0, None, None, None, None],
            "bid_size": [1.0, None, None, None, None],
            "ask": [60000.1, None, None, None, None],
            "ask_size": [2.0, None, None, None, None],
            "rate": [None, None, 1.5e-5, None, None],
            "next_ts": [None, None, T0 + 3600 * 10**9, None, None],
            "text": [None, None, None, "heartbeat", None],
            "seq": [10, 11, None, None, 12],
        }
    )


def test_write_polars_round_trips_values_nulls_and_metadata(tmp_path: Path) -> None:
    path = write(
        sample_df(),
        tmp_path / "t.parquet",
        instruments={"BTC-PERP": {"tick": 0.1, "lot": 0.0001}},
        source="test",
    )
    tape = open_tape(path)
    assert tape.num_rows == 5
    assert tape.meta.rows == 5
    assert (tape.meta.start_ns, tape.meta.end_ns) == (T0, T0 + 3)
    assert tape.meta.clock == "ts"
    assert tape.meta.source == "test"
    assert tape.instruments == {"BTC-PERP": Instrument(symbol="BTC-PERP", tick=0.1, lot=0.0001)}
    b = read_all(path)
    assert b.kind.tolist() == [Kind.QUOTE, Kind.TRADE, Kind.FUNDING, Kind.STATUS, Kind.TRADE]
    assert [b.symbols[i] for i in b.symbol] == ["BTC-PERP"] * 3 + ["ETH-PERP"] * 2
    assert b.recv_ts.tolist() == b.ts.tolist()  # recv_ts defaults to ts
    assert b.clock.tolist() == b.ts.tolist()
    assert b.price[1] == 60000.5 and np.isnan(b.price[0])  # null float → NaN
    assert b.side.tolist() == [0, 1, 0, 0, -1]  # null side → 0
    assert b.seq.tolist() == [10, 11, NULL_SEQ, NULL_SEQ, 12]  # null seq → -1
    assert b.next_ts.tolist() == [0, 0, T0 + 3600 * 10**9, 0, 0]  # null next_ts → 0
    assert b.flags.tolist() == [0] * 5
    assert b.text == [None, None, None, "heartbeat", None]
    assert b.rate[2] == 1.5e-5


def test_write_accepts_arrow_tables_record_batches_and_kind_codes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": pa.array([T0, T0 + 5], pa.timestamp("ns", "UTC")),
            "kind": [int(Kind.TRADE), int(Kind.MARK)],
            "symbol": pa.array(["X", "X"]).dictionary_encode(),
            "price": [1, 2],  # integers are cast to float64
            "size": [3.0, None],
            "side": [-1, None],
        }
    )
    write(table, tmp_path / "a.parquet")
    write(table.to_batches()[0], tmp_path / "b.parquet")
    for name in ("a.parquet", "b.parquet"):
        b = read_all(tmp_path / name)
        assert b.ts.tolist() == [T0, T0 + 5]
        assert b.kind.tolist() == [Kind.TRADE, Kind.MARK]
        assert b.price.tolist() == [1.0, 2.0]


def test_write_rejects_unknown_kind_codes(tmp_path: Path) -> None:
    table = pa.table({"ts": [T0, T0 + 1, T0 + 2], "kind": [5, None, 9], "symbol": ["X"] * 3, "price": [1.0] * 3})
    with pytest.raises(TapeError, match=r"k.parquet row 2 column kind: unknown kind code 9 \(known: 0-7\)"):
        write(table, tmp_path / "k.parquet")
    with pytest.raises(TapeError, match=r"k.parquet row 1 column kind: null"):
        write(table.slice(0, 2), tmp_path / "k.parquet")


def test_write_stores_the_clock_and_timer_set(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "ts": [T0 + 5, T0 + 1],  # venue time out of order: fine, the clock is recv_ts
            "recv_ts": [T0 + 10, T0 + 11],
            "kind": ["trade", "timer"],
            "symbol": ["X", "X"],
            "price": [1.0, None],
            "size": [1.0, None],
            "text": [None, "cycle"],
            "next_ts": [None, T0 + 11],
        }
    )
    path = write(df, tmp_path / "t.parquet", clock="recv_ts", timers=[{"name": "cycle", "interval_ns": 60 * 10**9}])
    tape = open_tape(path)
    assert tape.meta.clock == "recv_ts"
    assert tape.meta.timers == [TimerSpec(name="cycle", interval_ns=60 * 10**9)]
    assert (tape.meta.start_ns, tape.meta.end_ns) == (T0 + 10, T0 + 11)
    b = read_all(path)
    assert b.clock.tolist() == [T0 + 10, T0 + 11]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"price": [None, 0.0, None, None, 3000.25]}, r"row 1 column price: zero in a trade row"),
        ({"ts": [T0, T0 + 2, T0 + 1, T0 + 3, T0 + 3]}, r"row 2 column ts: .* is before .* \(not sorted\)"),
        ({"kind": ["quote", "trade", "funding", "status", "fill"]}, r"row 4 column kind: unknown kind 'fill'"),
        ({"ts": [T0, None, T0 + 2, T0 + 3, T0 + 3]}, r"row 1 column ts: null"),
        ({"symbol": ["A", "A", None, "B", "B"]}, r"row 2 column symbol: null"),
        ({"size": [None, -0.01, None, None, 1.5]}, r"row 1 column size: negative \(-0.01\) in a trade row"),
    ],
)
def test_write_rejects_bad_rows_and_leaves_no_file(
    tmp_path: Path, change: dict[str, list[object]], pattern: str
) -> None:
    path = tmp_path / "bad.parquet"
    df = sample_df().with_columns(**{k: pl.Series(k, v) for k, v in change.items()})
    with pytest.raises(TapeError, match=re.escape(str(path)) + " " + pattern):
        write(df, path)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_keeps_an_existing_tape(tmp_path: Path) -> None:
    path = write(sample_df(), tmp_path / "t.parquet")
    before = path.read_bytes()
    bad = sample_df().with_columns(pl.Series("price", [None, float("nan"), None, None, 1.0]))
    with pytest.raises(TapeError, match=r"row 1 column price: NaN in a trade row"):
        write(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_write_rejects_missing_and_unknown_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(TapeError, match=re.escape(str(path)) + r": missing required column symbol"):
        write(pl.DataFrame({"ts": [T0], "kind": ["trade"]}), path)
    with pytest.raises(TapeError, match=re.escape(str(path)) + r" column qty: not a tape column"):
        write(sample_df().with_columns(pl.lit(1.0).alias("qty")), path)
    with pytest.raises(TapeError, match=r"cannot write a list"):
        write([1, 2], path)


def test_tape_writer_buffers_into_full_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "w.parquet"
    meta = TapeMeta(source="stream")
    with TapeWriter(path, meta, row_group_rows=100) as w:
        for start in range(0, 1050, 7):  # chunks that do not line up with row groups
            n = min(7, 1050 - start)
            w.write(_trades(start, n))
        assert w.rows == 1050
    footer = pq.read_metadata(path)
    assert [footer.row_group(i).num_rows for i in range(footer.num_row_groups)] == [100] * 10 + [50]
    assert w.bytes_written == path.stat().st_size
    meta_out = decode_meta(footer.metadata[META_KEY])
    assert meta_out.rows == 1050
    assert (meta_out.start_ns, meta_out.end_ns) == (T0, T0 + 1049)
    assert meta_out.source == "stream"


def test_tape_writer_rejected_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.parquet"
    with TapeWriter(path, TapeMeta(), row_group_rows=10) as w:
        w.write(_trades(0, 5))
        with pytest.raises(TapeError, match=re.escape(str(path)) + r" row 5 column ts: .* before .*4 in the previous"):
            w.write(_trades(2, 3))  # goes back in time: rows 5.. of the file
        w.write(_trades(5, 5))
    b = read_all(path)
    assert b.ts.tolist() == [T0 + i for i in range(10)]


def test_tape_writer_flush_writes_a_short_row_group(tmp_path: Path) -> None:
    path = tmp_path / "w.parquet"
    w = TapeWriter(path, TapeMeta(), row_group_rows=1000)
    w.write(_trades(0, 10))
    assert w.bytes_written < 100  # still buffered
    w.flush()
    w.write(_trades(10, 10))
    w.close()
    footer = pq.read_metadata(path)
    assert [footer.row_group(i).num_rows for i in range(footer.num_row_groups)] == [10, 10]
    with pytest.raises(TapeError, match="write after close"):
        w.write(_trades(20, 1))


def test_codec_changes_the_compression_and_nothing_read_back(tmp_path: Path) -> None:
    lz4 = write(sample_df(), tmp_path / "l.parquet")
    zstd = write(sample_df(), tmp_path / "z.parquet", codec="zstd")
    for path, stored in ((zstd, "ZSTD"), (lz4, "LZ4")):  # pyarrow's name for LZ4_RAW
        md = pq.ParquetFile(path).metadata
        assert {md.row_group(0).column(c).compression for c in range(md.num_columns)} == {stored}
    assert (open_tape(zstd).codecs, open_tape(lz4).codecs) == (("zstd",), ("lz4",))
    assert open_tape([zstd, lz4]).codecs == ("lz4", "zstd")
    a, b = read_all(zstd), read_all(lz4)
    for name in Batch.__struct_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_columns_are_encoded_as_the_schema_says(tmp_path: Path) -> None:
    # tapes/schema.py: clocks and sequence numbers delta-encoded; strings, sides, flags,
    # prices and sizes as dictionaries (few distinct values per row group).
    md = pq.ParquetFile(write(sample_df(), tmp_path / "t.parquet")).metadata
    rg = md.row_group(0)
    enc = {rg.column(c).path_in_schema: set(rg.column(c).encodings) for c in range(md.num_columns)}
    for name in ("ts", "recv_ts", "seq"):
        assert "DELTA_BINARY_PACKED" in enc[name], name
    for name in ("kind", "symbol", "price", "size", "side", "bid", "bid_size", "ask", "ask_size", "flags"):
        assert "RLE_DICTIONARY" in enc[name], name


def test_an_unknown_codec_is_refused_before_any_file_is_made(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match=r"t.parquet: codec must be one of lz4, zstd, not 'snappy'"):
        write(sample_df(), tmp_path / "t.parquet", codec="snappy")
    with pytest.raises(TapeError, match=r"w.parquet: codec must be one of lz4, zstd, not 'gzip'"):
        TapeWriter(tmp_path / "w.parquet", TapeMeta(), codec="gzip")
    assert list(tmp_path.iterdir()) == []


def test_write_table_is_atomic_on_failure(tmp_path: Path) -> None:
    bad = _trades(0, 3).to_pydict()
    bad["price"][2] = -1.0
    with pytest.raises(TapeError, match=r"t.parquet row 2 column price: negative \(-1.0\) in a trade row"):
        write_table(pa.Table.from_pydict(bad, schema=SCHEMA), tmp_path / "t.parquet", TapeMeta())
    assert list(tmp_path.iterdir()) == []


def _trades(start: int, n: int) -> pa.Table:
    i = np.arange(start, start + n)
    return pa.Table.from_pydict(
        {
            "ts": T0 + i,
            "recv_ts": T0 + i,
            "kind": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["trade"])),
            "symbol": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["X"])),
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


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(["A-PERP", "B-PERP", "C"]),
            st.floats(0.01, 1e6, allow_nan=False),
            st.one_of(st.none(), st.floats(0, 1e3, allow_nan=False)),
            st.sampled_from([-1, 0, 1]),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_write_then_read_gives_back_the_rows(
    tmp_path: Path, rows: list[tuple[int, str, float, float | None, int]]
) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    df = pl.DataFrame(
        {
            "ts": [T0 + r[0] for r in rows],
            "kind": ["trade"] * len(rows),
            "symbol": [r[1] for r in rows],
            "price": [r[2] for r in rows],
            "size": [0.0 if r[3] is None else r[3] for r in rows],
            "side": [r[4] for r in rows],
            "rate": [r[3] for r in rows],  # a nullable float column, unused by trades
        },
        schema_overrides={"side": pl.Int8},
    )
    b = read_all(write(df, tmp_path / "h.parquet"))
    assert b.ts.tolist() == df["ts"].to_list()
    assert [b.symbols[i] for i in b.symbol] == df["symbol"].to_list()
    assert b.price.tolist() == df["price"].to_list()
    assert b.side.tolist() == df["side"].to_list()
    assert [None if np.isnan(x) else x for x in b.rate.tolist()] == df["rate"].to_list()


def test_metadata_is_msgspec_json(tmp_path: Path) -> None:
    path = write(sample_df(), tmp_path / "t.parquet", instruments={"X": Instrument(symbol="X", tick=0.5)})
    raw = pq.read_metadata(path).metadata[META_KEY]
    assert msgspec.json.decode(raw)["instruments"]["X"]["tick"] == 0.5


def test_write_table_to_a_folder_is_a_tape_error_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "od"
    folder.mkdir()
    with pytest.raises(TapeError, match=r"od: cannot write \(Is a directory\)"):
        write_table(_trades(0, 3), folder, TapeMeta())
    assert [p.name for p in tmp_path.iterdir()] == ["od"] and list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"tik": 0.1}, r"unknown key 'tik' \(allowed: tick, lot, "),
        ({"tick": 0.1, "lot": 0.001, "max_levrage": 5.0}, r"unknown key 'max_levrage'"),
        ({"tick": "0.1"}, r"Expected `float \| null`, got `str` - at `\$\.tick`"),
        ({"kind": "linr"}, r"Invalid enum value 'linr' - at `\$\.kind`"),
        ({"symbol": "ETH-PERP", "tick": 0.1}, r"key 'symbol' is 'ETH-PERP', not 'BTC-PERP'"),
        (0.1, r"give an Instrument or a dict of its fields, not a float"),
        (Instrument(symbol="ETH-PERP", tick=0.1), r"its symbol is 'ETH-PERP', not 'BTC-PERP'"),
    ],
)
def test_write_refuses_an_instrument_mapping_with_a_bad_key_naming_symbol_and_key(
    tmp_path: Path, fields: object, problem: str
) -> None:
    # a misspelled key used to vanish: the tape's BTC-PERP had no tick, and nothing said so
    out = tmp_path / "t.parquet"
    with pytest.raises(TapeError, match=rf"^{re.escape(str(out))}: instrument BTC-PERP: {problem}"):
        write(sample_df(), out, instruments={"BTC-PERP": fields})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []  # refused before any file


def test_write_takes_every_instrument_field_by_name(tmp_path: Path) -> None:
    full = Instrument(symbol="BTC-PERP", tick=0.5, lot=1.0, contract_size=100.0, kind="inverse", base="BTC")
    fields = msgspec.structs.asdict(full)
    path = write(sample_df(), tmp_path / "t.parquet", instruments={"BTC-PERP": fields})
    assert open_tape(path).instruments == {"BTC-PERP": full}
