"""tapes/formats/binance.py and the shipped sample tape converted from real Binance data.

Facts are from /work/shared/data/README.md (hand-checked against the recording); the
tests use only copies inside the repository: the shipped tape
``tapes/samples/btcusdt_20240808.parquet`` and the first 200 lines of the recording in
``tests/data/binance`` (see tests/data/NOTICE).
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from perpsim.core.book import Book
from perpsim.core.errors import InputError, TapeError
from perpsim.core.events import Flags, Kind
from perpsim.tapes.convert import convert
from perpsim.tapes.formats.binance import BinanceConverter, convert_binance
from perpsim.tapes.reader import open_tape

SAMPLE = Path(str(resources.files("perpsim.tapes") / "samples" / "btcusdt_20240808.parquet"))
HEAD = Path(__file__).parent.parent / "data" / "binance" / "btcusdt_20240808_head200.gz"
ORIGINAL = Path("/work/shared/data/binance-usdm/btcusdt_20240808.gz")  # optional, not shipped

EOM = int(Flags.END_OF_MESSAGE)
SNAP = int(Flags.SNAPSHOT)
LAST_UPDATE_ID = 5123107852948  # the REST snapshot on line 55
FIRST_DIFF_U = 5123107853551  # line 42: U 5123107850310 <= lastUpdateId <= u
SNAPSHOT_RECV = 1723161255319702566
LINE42_RECV = 1723161255240214766


def _columns(path: Path) -> dict[str, Any]:
    """The whole tape as numpy columns (through the project's reader)."""
    parts: dict[str, list[Any]] = {}
    for b in open_tape(path).batches():
        for name in ("ts", "recv_ts", "kind", "price", "size", "side", "bid", "ask", "seq", "flags"):
            parts.setdefault(name, []).append(getattr(b, name))
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    return _columns(SAMPLE)


def _head_lines() -> list[bytes]:
    with gzip.open(HEAD, "rb") as f:
        return f.read().splitlines()


# -- the shipped sample tape -----------------------------------------------------------------


def test_sample_tape_is_small_zstd_and_clocked_on_recv_ts() -> None:
    assert SAMPLE.stat().st_size < 5_000_000
    md = pq.ParquetFile(SAMPLE).metadata
    assert md.row_group(0).column(0).compression == "ZSTD"
    tape = open_tape(SAMPLE)
    assert tape.meta.clock == "recv_ts"
    ins = tape.meta.instruments["BTCUSDT"]
    assert (ins.tick, ins.lot) == (0.1, 0.001)
    assert (SAMPLE.parent / "NOTICE").read_text().count("MIT License") == 1


def test_sample_tape_counts_match_the_recording(sample: dict[str, Any]) -> None:
    kind, flags = sample["kind"], sample["flags"]
    assert int(np.sum(kind == Kind.TRADE)) == 21_313  # every btcusdt@trade message
    assert int(np.sum(kind == Kind.QUOTE)) == 66_089  # every btcusdt@bookTicker message
    assert int(np.sum(kind == Kind.BOOK_RESET)) == 1  # the one REST snapshot
    book = kind == Kind.BOOK
    assert int(np.sum(book & ((flags & SNAP) != 0))) == 2_000  # 1000 bids + 1000 asks
    diff_msgs = book & ((flags & SNAP) == 0) & ((flags & EOM) != 0)
    # 6,551 depth diffs: 4 end before the snapshot's lastUpdateId and are dropped.
    assert int(np.sum(diff_msgs)) == 6_551 - 4
    assert int(np.sum(kind == Kind.STATUS)) == 0  # no gaps


def test_sample_tape_trade_prices_and_grid(sample: dict[str, Any]) -> None:
    trades = sample["kind"] == Kind.TRADE
    price = sample["price"][trades]
    assert float(price.min()) == 61_590.3
    assert float(price.max()) == 61_839.9
    assert np.all(np.abs(price * 10 - np.round(price * 10)) < 1e-6)  # tick 0.1
    size = sample["size"][trades]
    assert np.all(np.abs(size * 1000 - np.round(size * 1000)) < 1e-6)  # lot 0.001
    assert set(np.unique(sample["side"][trades]).tolist()) == {-1, 1}


def test_sample_tape_is_sorted_by_recv_ts_and_message_rows_share_it(sample: dict[str, Any]) -> None:
    recv = sample["recv_ts"]
    assert np.all(recv[1:] >= recv[:-1])
    # Every message ends with END_OF_MESSAGE; rows of one message share recv_ts and seq.
    ends = np.flatnonzero(sample["flags"] & EOM)
    assert ends[-1] == recv.size - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    for s, e in zip(starts[:2000], ends[:2000]):
        assert recv[s] == recv[e]
        assert sample["seq"][s] == sample["seq"][e]


def test_sample_tape_book_rebuild_matches_book_ticker_at_629_points() -> None:
    """The L2 oracle: snapshot + diffs reproduce Binance's own top of book exactly.

    Compared only at message ends (a diff is applied whole), at every bookTicker whose
    update id ``u`` equals a diff's ``u``. A bookTicker may arrive before or after its
    diff, so the tops are recorded per diff first and matched afterwards.
    """
    book = Book("BTCUSDT")
    tops: dict[int, tuple[Any, Any]] = {}
    quotes: list[tuple[int, float, float, float, float]] = []
    for b in open_tape(SAMPLE).batches():
        kind, side, price, size = b.kind.tolist(), b.side.tolist(), b.price.tolist(), b.size.tolist()
        flags, seq = b.flags.tolist(), b.seq.tolist()
        bid, bid_size, ask, ask_size = b.bid.tolist(), b.bid_size.tolist(), b.ask.tolist(), b.ask_size.tolist()
        for i, k in enumerate(kind):
            if k == Kind.BOOK:
                book.apply(side[i], price[i], size[i])
                if flags[i] & EOM and not flags[i] & SNAP:
                    tops[seq[i]] = (book.best_bid(), book.best_ask())
            elif k == Kind.BOOK_RESET:
                book.reset()
            elif k == Kind.QUOTE:
                quotes.append((seq[i], bid[i], bid_size[i], ask[i], ask_size[i]))
    points = [(q, tops[q[0]]) for q in quotes if q[0] in tops]
    mismatches = [(q, top) for q, top in points if top != ((q[1], q[2]), (q[3], q[4]))]
    assert len(points) == 629
    assert mismatches == []


# -- conversion rules, on the first 200 lines of the recording --------------------------------


def test_binance_buffers_diffs_that_arrive_before_the_snapshot() -> None:
    rows, rep = convert_binance(HEAD)
    table, moved = rows.table()
    assert moved == 0
    assert rep.counters["depth_diffs"] == 12
    assert rep.counters["diffs_stale"] == 4  # lines 1, 12, 20, 38: u < lastUpdateId
    assert rep.counters["diffs_buffered"] == 2  # lines 42 and 50, applied after the snapshot
    assert rep.counters["diffs_applied"] == 8
    assert rep.gaps == 0
    d = table.to_pydict()
    reset = d["kind"].index("book_reset")
    assert d["seq"][reset] == LAST_UPDATE_ID
    assert d["recv_ts"][reset] == SNAPSHOT_RECV
    first_diff = next(i for i in range(reset, len(d["kind"])) if d["kind"][i] == "book" and not d["flags"][i] & SNAP)
    # The first applicable diff (line 42) was received before the snapshot (line 55); it is
    # written after the snapshot rows, stamped with the moment it became usable.
    assert d["seq"][first_diff] == FIRST_DIFF_U
    assert LINE42_RECV < SNAPSHOT_RECV
    assert d["recv_ts"][first_diff] == SNAPSHOT_RECV
    assert d["ts"][first_diff] == 1723161256509 * 1_000_000  # its own event time E


def test_binance_without_buffering_the_book_would_gap() -> None:
    """Drop the diffs that arrived before the snapshot: the first later diff cannot bridge."""
    conv = BinanceConverter("head200")
    for n, line in enumerate(_head_lines(), 1):
        if b"depthUpdate" in line and n < 55:
            continue
        conv.feed_line(line, n)
    rep = conv.finish()
    assert rep.gaps == 1
    assert rep.gap_lines[0].line == 57
    assert "first diff after snapshot starts at U 5123107856267 > lastUpdateId 5123107852948" in (
        rep.gap_lines[0].reason
    )
    assert rep.rows["status"] == 1


def test_binance_trade_side_is_the_aggressor() -> None:
    rows, _ = convert_binance(HEAD)
    d = rows.table()[0].to_pydict()
    by_id = {d["seq"][i]: d["side"][i] for i in range(len(d["kind"])) if d["kind"][i] == "trade"}
    assert by_id[5266583935] == 1  # "m": false: the buyer took liquidity
    assert by_id[5266583939] == -1  # "m": true: the buyer was the maker, the aggressor sold


def _diff(u_from: int, u_to: int, pu: int, e_ms: int, bid: tuple[str, str]) -> str:
    data = {
        "e": "depthUpdate",
        "E": e_ms,
        "T": e_ms,
        "s": "BTCUSDT",
        "U": u_from,
        "u": u_to,
        "pu": pu,
        "b": [list(bid)],
        "a": [],
    }
    return json.dumps({"stream": "btcusdt@depth@0ms", "data": data})


def _snapshot(last_id: int, bid: tuple[str, str], ask: tuple[str, str]) -> str:
    return json.dumps({"lastUpdateId": last_id, "E": 1, "T": 1, "bids": [list(bid)], "asks": [list(ask)]})


def test_binance_gap_writes_status_and_a_later_snapshot_resyncs() -> None:
    lines = [
        _snapshot(100, ("10.0", "1.000"), ("10.1", "1.000")),
        _diff(95, 105, 90, 2, ("10.0", "2.000")),  # bridges lastUpdateId 100
        _diff(106, 110, 105, 3, ("9.9", "1.000")),  # pu == previous u
        _diff(120, 125, 115, 4, ("9.8", "1.000")),  # pu 115 != 110: gap
        _diff(126, 130, 125, 5, ("9.7", "1.000")),  # buffered, waiting for a snapshot
        _snapshot(128, ("10.0", "3.000"), ("10.1", "3.000")),  # resync: line 6 bridges
        _snapshot(129, ("10.0", "3.000"), ("10.1", "3.000")),  # in sync: redundant, ignored
        _diff(131, 140, 130, 6, ("9.6", "1.000")),
    ]
    conv = BinanceConverter("synthetic")
    for n, text in enumerate(lines, 1):
        conv.feed_line(f"{1000 + n} {text}".encode(), n)
    rep = conv.finish()
    assert rep.gaps == 1 and rep.gap_lines[0].line == 4
    assert "pu 115 != previous u 110" in rep.gap_lines[0].reason
    assert rep.counters["snapshots"] == 2 and rep.counters["snapshots_ignored"] == 1
    d = conv.rows.table()[0].to_pydict()
    seen = [(k, s) for k, s in zip(d["kind"], d["seq"])]
    assert seen == [
        ("book_reset", 100),
        ("book", 100),
        ("book", 100),
        ("book", 105),
        ("book", 110),
        ("status", 125),
        ("book_reset", 128),
        ("book", 128),
        ("book", 128),
        ("book", 130),  # the buffered diff, applied after the new snapshot
        ("book", 140),
    ]
    assert d["text"][5] == "gap"


def test_binance_malformed_lines_are_counted_with_line_numbers(tmp_path: Path) -> None:
    lines = _head_lines()
    bad = list(lines)
    bad[9] = lines[9][:60]  # line 10: torn JSON
    bad[19] = b"x" + lines[19]  # line 20: receive stamp not an integer
    bad[29] = lines[29].replace(b" ", b"", 1)  # line 30: no separator
    assert b'"e":"trade"' in lines[59]
    bad[59] = lines[59].replace(b'"p":"', b'"p":"abc', 1)  # line 60: price not a number
    src = tmp_path / "corrupt.txt"
    src.write_bytes(b"\n".join(bad) + b"\n")
    _rows, rep = convert_binance(src)
    assert rep.skipped == 4
    assert [s.line for s in rep.skipped_lines] == [10, 20, 30, 60]
    assert "receive stamp" in rep.skipped_lines[1].reason
    assert "$.data.p" in rep.skipped_lines[3].reason
    assert rep.lines_read == 200
    _, good = convert_binance(HEAD)
    assert sum(rep.rows.values()) < sum(good.rows.values())
    assert rep.rows["book_reset"] == 1  # the conversion went on past the bad lines
    with pytest.raises(TapeError, match=r"corrupt\.txt line 10: "):
        convert_binance(src, strict=True)


def test_binance_unknown_streams_are_ignored_not_malformed() -> None:
    conv = BinanceConverter("x")
    mark = {"stream": "btcusdt@markPrice", "data": {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1"}}
    conv.feed_line(f"5 {json.dumps(mark)}".encode(), 1)
    conv.feed_line(b"6 {not json", 2)
    rep = conv.finish()
    assert rep.ignored == {"markPriceUpdate": 1}
    assert rep.skipped == 1 and rep.skipped_lines[0].line == 2


def test_convert_writes_a_valid_tape_and_cli_reports_json(tmp_path: Path) -> None:
    out = tmp_path / "head.parquet"
    rep = convert("binance", HEAD, out)
    assert rep.out == str(out) and rep.size_bytes == out.stat().st_size
    assert open_tape(out).num_rows == rep.rows_total == 33 + 154 + 2381 + 1
    assert rep.start_ns == 1723161255088169167  # the first bookTicker (line 2)

    from perpsim.cli_convert import convert as convert_cmd

    out2 = tmp_path / "cli.parquet"
    res = CliRunner().invoke(convert_cmd, ["--from", "binance", str(HEAD), "--out", str(out2), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["rows"] == {"trade": 33, "quote": 154, "book": 2381, "book_reset": 1}
    assert doc["skipped"] == 0 and doc["gaps"] == 0 and doc["clock"] == "recv_ts"
    out3 = tmp_path / "cli-text.parquet"  # --out must not exist
    res = CliRunner().invoke(convert_cmd, ["--from", "binance", str(HEAD), "--out", str(out3)])
    assert res.exit_code == 0 and "book_reset" in res.output and "skipped" in res.output
    res = CliRunner().invoke(convert_cmd, ["--help"])
    assert res.exit_code == 0 and "--utc-offset" in res.output


@pytest.mark.slow
@pytest.mark.skipif(not ORIGINAL.exists(), reason="the full recording is not shipped")
def test_sample_tape_reconverts_identically(tmp_path: Path) -> None:
    out = tmp_path / "full.parquet"
    rep = convert("binance", ORIGINAL, out)
    assert rep.counters["depth_diffs"] == 6_551
    assert rep.lines_read == 93_954 and rep.skipped == 0 and rep.gaps == 0
    assert pq.read_table(out).equals(pq.read_table(SAMPLE))


def test_cli_strict_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perpsim.cli import main

    lines = _head_lines()
    lines[2] = lines[2][:40]
    src = tmp_path / "torn.txt"
    src.write_bytes(b"\n".join(lines))
    out = tmp_path / "torn.parquet"
    with pytest.raises(SystemExit) as exit_info:
        main(["tapes", "convert", "--from", "binance", str(src), "--out", str(out), "--strict"])
    assert exit_info.value.code == 2
    assert "torn.txt line 3: " in capsys.readouterr().err
    assert not out.exists()
    main(["tapes", "convert", "--from", "binance", str(src), "--out", str(out)])  # exit status 0
    assert "skipped (malformed)" in capsys.readouterr().out and out.exists()


def test_corrupt_gzip_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from tests.helpers import cli

    data = bytearray(HEAD.read_bytes())
    data[2000:2100] = b"x" * 100  # mid-stream: the deflate data no longer decodes
    src = tmp_path / "corrupt.gz"
    src.write_bytes(bytes(data))
    with pytest.raises(TapeError, match=r"corrupt\.gz line \d+: corrupt gzip data \(.*invalid"):
        convert_binance(src)
    out = tmp_path / "c.parquet"
    code, _, err = cli("tapes", "convert", "--from", "binance", str(src), "--out", str(out))
    assert code == 2 and err.startswith("perpsim: ") and "corrupt.gz line" in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_cli_convert_refuses_out_that_is_the_source(tmp_path: Path) -> None:
    from tests.helpers import cli

    src = tmp_path / "same.gz"
    src.write_bytes(HEAD.read_bytes())
    (tmp_path / "link.gz").symlink_to(src)
    for out in (src, tmp_path / "." / "same.gz", tmp_path / "link.gz"):
        code, _, err = cli("tapes", "convert", "--from", "binance", str(src), "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and "is SRC itself" in err, err
        assert src.read_bytes() == HEAD.read_bytes()  # the recording is untouched
    with pytest.raises(InputError, match="is SRC itself"):  # from Python too
        convert("binance", src, tmp_path / "link.gz")
