"""tapes/formats/coinbase.py: the Coinbase Advanced Trade normalizer, encoder and converter.

Transcripts in tests/data/coinbase are copies of JKorf/Coinbase.Net's (see
tests/data/NOTICE): the acknowledgements and the Heartbeat and Trades pushes are real
captures, the other pushes Coinbase's documentation examples. No level2 capture exists
there, so the ``l2_data`` messages below are built from the documented format.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpsim.core.errors import InputError, TapeError
from perpsim.core.events import BookLevel, BookReset, Flags, MarketEvent, Quote, Status, Trade
from perpsim.tapes.convert import convert
from perpsim.tapes.formats.coinbase import (
    MalformedMessage,
    Normalizer,
    VenueError,
    convert_coinbase,
    format_time,
    message_bodies,
    parse_time,
    to_messages,
)
from perpsim.tapes.reader import open_tape

DATA = Path(__file__).parent.parent / "data" / "coinbase"
EOM = int(Flags.END_OF_MESSAGE)
SNAP = int(Flags.SNAPSHOT)


def server_messages(name: str) -> dict[str, list[bytes]]:
    """The server's messages in a transcript, per socket ('' for single-socket files).

    ``> …`` is what the client sent (skipped), ``< …`` the acknowledgement, and the JSON
    after ``=`` (possibly pretty-printed over several lines) a pushed message.
    """
    out: dict[str, list[bytes]] = {}
    cur: tuple[str, list[str]] | None = None

    def close() -> None:
        if cur is not None and "".join(cur[1]).strip():
            out.setdefault(cur[0], []).append("\n".join(cur[1]).strip().encode())

    for line in (DATA / name).read_text().splitlines():
        m = re.match(r"^([<>=])(\d*) ?(.*)$", line)
        if m:
            close()
            cur = None
            kind, sock, rest = m.groups()
            if kind == "<":
                out.setdefault(sock, []).append(rest.encode())
            elif kind == "=":
                cur = (sock, [rest])
        elif cur is not None:
            cur[1].append(line)
    close()
    return out


def _env(channel: str, seq: int, events: list[dict[str, Any]], ts: str = "2024-10-04T07:13:31.5Z") -> bytes:
    return json.dumps(
        {"channel": channel, "client_id": "", "timestamp": ts, "sequence_num": seq, "events": events}
    ).encode()


def _l2(seq: int, kind: str, updates: list[tuple[str, str, str, str]], product: str = "BTC-PERP-INTX") -> bytes:
    ups = [{"side": s, "event_time": t, "price_level": p, "new_quantity": q} for s, t, p, q in updates]
    return _env("l2_data", seq, [{"type": kind, "product_id": product, "updates": ups}])


# -- real captures ------------------------------------------------------------------------------


def test_heartbeat_with_go_monotonic_suffix() -> None:
    ack, push = server_messages("Heartbeat.txt")[""]
    n = Normalizer()
    assert n.feed(ack, 11) == []
    assert n.ignored == {"subscriptions": 1}
    (ev,) = n.feed(push, 12)
    assert ev == Status(
        ts=1_728_025_480_820_713_045,  # 2024-10-04 07:04:40.820713045 UTC, suffix "m=+66987.6…" dropped
        recv_ts=12,
        symbol="*",
        text="heartbeat",
        seq=66987,
        flags=EOM,
    )
    assert n.gaps == 0  # ack 0, heartbeat 1


def test_trades_side_is_the_opposite_of_the_maker_side() -> None:
    ack, push = server_messages("Trades.txt")[""]
    n = Normalizer()
    n.feed(ack, 1)
    evs = n.feed(push, 2)
    assert evs == [
        Trade(
            ts=parse_time("2024-10-04T07:13:31.088388Z"),
            recv_ts=2,
            symbol="ETH-USDT",  # not in the instrument table: keeps its product id
            seq=22381691,
            flags=0,
            price=2375.56,
            size=0.5,
            side=-1,  # maker BUY: the aggressor sold
        ),
        Trade(
            ts=parse_time("2024-10-04T07:13:31.084859Z"),
            recv_ts=2,
            symbol="ETH-USDT",
            seq=22381690,
            flags=EOM,
            price=2375.56,
            size=0.5,
            side=-1,
        ),
    ]
    assert evs[0].ts == 1_728_026_011_088_388_000
    sell = push.replace(b'"side":"BUY"', b'"side":"SELL"')
    n.reset()
    assert [e.side for e in n.feed(sell, 3) if isinstance(e, Trade)] == [1, 1]


def test_ticker_becomes_a_quote() -> None:
    _, push = server_messages("Ticker.txt")[""]
    (q,) = Normalizer().feed(push, 7)
    assert q == Quote(
        ts=parse_time("2023-02-09T20:30:37.167359596Z"),
        recv_ts=7,
        symbol="ETH-USDT",
        seq=0,
        flags=EOM,
        bid=21931.98,
        bid_size=8000.21,
        ask=21933.98,
        ask_size=8038.07770938,
    )


@pytest.mark.parametrize("name", ["BatchTicker.txt", "Concurrent.txt"])
def test_channels_without_rows_are_counted_not_errors(name: str) -> None:
    for sock, msgs in server_messages(name).items():
        n = Normalizer()
        for m in msgs:
            n.feed(m, 1)
            n.reset()  # documentation pushes restart at sequence 0
        assert n.ignored.get("subscriptions") == 1, sock
        assert sum(n.ignored.values()) == len(msgs)


# -- level2 (documented format) ------------------------------------------------------------------


def test_l2_snapshot_and_update_rows() -> None:
    n = Normalizer()
    snap = _l2(
        5,
        "snapshot",
        [
            ("bid", "2024-10-04T07:00:00Z", "61800.1", "1.5"),
            ("offer", "2024-10-04T07:00:01Z", "61800.2", "0.7"),
        ],
    )
    evs = n.feed(snap, 100)
    t0 = parse_time("2024-10-04T07:13:31.5Z")
    assert evs == [
        BookReset(ts=t0, recv_ts=100, symbol="BTC-PERP", seq=5, flags=SNAP),
        BookLevel(ts=t0, recv_ts=100, symbol="BTC-PERP", seq=5, flags=SNAP, price=61800.1, size=1.5, side=1),
        BookLevel(ts=t0, recv_ts=100, symbol="BTC-PERP", seq=5, flags=SNAP | EOM, price=61800.2, size=0.7, side=-1),
    ]
    upd = _l2(
        6,
        "update",
        [
            ("offer", "2024-10-04T07:13:31.400000001Z", "61800.2", "0"),
            ("bid", "2024-10-04T07:13:31.400000002Z", "61800.0", "2.25"),
        ],
    )
    evs = n.feed(upd, 101)
    assert [(e.ts, e.side, e.price, e.size, e.flags) for e in evs if isinstance(e, BookLevel)] == [
        (t0 - 99_999_999, -1, 61800.2, 0.0, 0),  # "0" removes the level
        (t0 - 99_999_998, 1, 61800.0, 2.25, EOM),
    ]
    assert n.gaps == 0


def test_l2_update_levels_each_keep_their_own_event_time() -> None:
    # The normalizer parses a run of equal event_times once; a change, or a level
    # without one, must still give each level its own time.
    n = Normalizer()
    raw = _env(
        "l2_data",
        1,
        [
            {
                "type": "update",
                "product_id": "BTC-PERP-INTX",
                "updates": [
                    {"side": "bid", "event_time": "2024-10-04T07:13:31.1Z", "price_level": "1", "new_quantity": "1"},
                    {"side": "bid", "event_time": "2024-10-04T07:13:31.1Z", "price_level": "2", "new_quantity": "1"},
                    {"side": "bid", "price_level": "3", "new_quantity": "1"},
                    {"side": "bid", "event_time": "2024-10-04T07:13:31.2Z", "price_level": "4", "new_quantity": "1"},
                    {"side": "offer", "event_time": "2024-10-04T07:13:31.1Z", "price_level": "5", "new_quantity": "1"},
                ],
            }
        ],
    )
    t1, t2 = parse_time("2024-10-04T07:13:31.1Z"), parse_time("2024-10-04T07:13:31.2Z")
    evs = n.feed(raw, 99)
    assert [(e.price, e.ts, e.flags) for e in evs] == [(1, t1, 0), (2, t1, 0), (3, 99, 0), (4, t2, 0), (5, t1, EOM)]
    # Without a receive stamp, a level without event_time takes the envelope time.
    n.reset()
    assert n.feed(raw)[2].ts == parse_time("2024-10-04T07:13:31.5Z")


def test_ticker_with_several_tickers_flags_the_last_complete_one() -> None:
    full = {
        "type": "ticker",
        "best_bid": "10",
        "best_bid_quantity": "1",
        "best_ask": "11",
        "best_ask_quantity": "2",
    }
    n = Normalizer()
    evs = n.feed(
        _env(
            "ticker",
            1,
            [{"type": "update", "tickers": [{**full, "product_id": "BTC-PERP-INTX"}, {**full, "product_id": "X"}]}],
        ),
        5,
    )
    assert [(e.symbol, e.flags) for e in evs] == [("BTC-PERP", 0), ("X", EOM)]
    incomplete = {"type": "ticker", "product_id": "Y", "best_bid": "10"}
    evs = n.feed(
        _env("ticker", 2, [{"type": "update", "tickers": [{**full, "product_id": "X"}, incomplete]}]),
        6,
    )
    assert [(e.symbol, e.flags) for e in evs] == [("X", EOM)]
    assert n.ignored == {"ticker_incomplete": 1}


def test_sequence_gap_writes_status_rows_before_the_message() -> None:
    n = Normalizer()
    n.feed(_l2(1, "update", [("bid", "2024-10-04T07:13:31Z", "100.5", "1")]), 10)
    n.feed(_l2(2, "update", [("bid", "2024-10-04T07:13:31Z", "100.5", "2")], product="ETH-PERP-INTX"), 11)
    evs = n.feed(_l2(5, "update", [("bid", "2024-10-04T07:13:32Z", "100.4", "1")]), 12)
    gaps = [e for e in evs if isinstance(e, Status)]
    assert [(g.symbol, g.text, g.seq, g.flags) for g in gaps] == [
        ("BTC-PERP", "gap", 5, 0),
        ("ETH-PERP", "gap", 5, EOM),
    ]
    assert evs[:2] == gaps and isinstance(evs[2], BookLevel) and evs[2].flags == EOM
    assert n.gaps == 1
    # An ignored channel still counts in the sequence: 6 follows 5, 8 does not follow 6.
    assert n.feed(_env("candles", 6, []), 13) == []
    assert [e.text for e in n.feed(_env("candles", 8, []), 14)] == ["gap", "gap"]


def test_a_malformed_message_keeps_the_gap_it_reveals_and_a_dropped_book_update_opens_one() -> None:
    n = Normalizer()
    n.feed(_l2(1, "snapshot", [("bid", "2024-10-04T07:13:30Z", "100", "1")]), 10)
    bad_trade = _env(
        "market_trades",
        3,  # sequence 2 was lost
        [{"trades": [{"product_id": "BTC-PERP-INTX", "price": "-5", "size": "1", "side": "BUY", "time": "noon"}]}],
    )
    with pytest.raises(MalformedMessage) as got:
        n.feed(bad_trade, 11)
    assert [(e.text, e.seq, e.flags) for e in got.value.rows] == [("gap", 3, EOM)] and n.gaps == 1
    # A level2 update dropped as malformed: the book missed it, so it is a gap too.
    with pytest.raises(MalformedMessage) as got:
        n.feed(_l2(4, "update", [("bid", "2024-10-04T07:13:31Z", "-5", "2")]), 12)
    assert [(e.text, e.seq, e.ts) for e in got.value.rows] == [("gap", 4, 1_728_026_011_500_000_000)] and n.gaps == 2
    assert not any(
        isinstance(e, Status) for e in n.feed(_l2(5, "update", [("bid", "2024-10-04T07:13:32Z", "99", "1")]), 13)
    )
    # A malformed message of another channel, in sequence, drops with nothing left.
    with pytest.raises(MalformedMessage) as got:
        n.feed(_env("heartbeats", 6, [{"current_time": "noon"}]), 14)
    assert got.value.rows == [] and n.gaps == 2


def test_convert_coinbase_writes_the_gap_a_malformed_book_update_opens(tmp_path: Path) -> None:
    src = tmp_path / "cap.jsonl"
    src.write_bytes(
        b"\n".join(
            [
                _l2(
                    1,
                    "snapshot",
                    [("bid", "2024-10-04T07:13:30Z", "100", "1"), ("offer", "2024-10-04T07:13:30Z", "101", "1")],
                ),
                _l2(3, "update", [("bid", "2024-10-04T07:13:31Z", "-5", "2")]),  # 2 lost, 3 malformed
                _l2(4, "update", [("bid", "2024-10-04T07:13:31Z", "100", "3")]),
            ]
        )
        + b"\n"
    )
    _rows, rep = convert_coinbase(src)
    assert rep.skipped == 1 and rep.gaps == 1 and rep.gap_lines[0].line == 2
    assert rep.rows == {"book": 3, "book_reset": 1, "status": 1}


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"channel": "l2_data", ', r"coinbase message: Input data was truncated"),
        (b"[1, 2]", r"coinbase message: Expected `object`, got `array`"),
        (
            _l2(1, "update", [("bid", "2024-10-04T07:13:31Z", "abc", "1")]),
            r"coinbase l2_data message: .*\$\.events\[0\]\.updates\[0\]\.price_level",
        ),
        (
            _l2(1, "update", [("middle", "2024-10-04T07:13:31Z", "1", "1")]),
            r"coinbase l2_data message: .*\$\.events\[0\]\.updates\[0\]\.side",
        ),
        (
            _l2(1, "update", [("bid", "yesterday", "1", "1")]),
            r"bad time 'yesterday' - at `\$\.events\[0\]\.updates\[0\]\.event_time`",
        ),
        (
            _l2(1, "update", [("bid", "2024-10-04T07:13:31Z", "-5", "1")]),
            r"level -5\.0 x 1\.0 is not a valid price and size - at `\$\.events\[0\]\.updates\[0\]`",
        ),
        (
            _env("market_trades", 1, [{"trades": [{"product_id": "X", "price": "1", "size": "1", "side": "BUY"}]}]),
            r"coinbase market_trades message: Object missing required field `time` - at `\$\.events\[0\]\.trades\[0\]`",
        ),
        (_env("heartbeats", 1, [{"current_time": "noon"}]), r"bad time 'noon'"),
        # a tape's integers are int64: values beyond it are malformed, not a crash when recorded
        (_env("heartbeats", 2**63, [{"current_time": "2024-10-04T07:13:31Z"}]), r"\$\.sequence_num"),
        (
            _env("heartbeats", 1, [{"current_time": "2024-10-04T07:13:31Z", "heartbeat_counter": 2**63}]),
            r"heartbeat_counter",
        ),
        (
            _env(
                "market_trades",
                1,
                [
                    {
                        "trades": [
                            {
                                "product_id": "X",
                                "price": "1",
                                "size": "1",
                                "side": "BUY",
                                "time": "9999-01-01T00:00:00Z",
                            }
                        ]
                    }
                ],
            ),
            r"bad time '9999-01-01T00:00:00Z'",
        ),
        (b'{"channel": "ticker", "events": []}', r"coinbase ticker message: .*`timestamp`"),
    ],
)
def test_malformed_messages_raise_with_the_json_path(raw: bytes, match: str) -> None:
    n = Normalizer()
    with pytest.raises(MalformedMessage, match=match) as info:
        n.feed(raw, 1)
    assert isinstance(info.value, InputError)


def test_a_trade_id_beyond_int64_leaves_the_trade_without_a_seq() -> None:
    trade = {"product_id": "BTC-PERP-INTX", "price": "1", "size": "1", "side": "BUY", "time": "2024-10-04T07:13:31Z"}
    ids = ["9223372036854775807", "9223372036854775808", "123456789012345678901", "12a"]
    raw = _env("market_trades", 1, [{"trades": [{**trade, "trade_id": t} for t in ids]}])
    assert [e.seq for e in Normalizer().feed(raw, 1)] == [2**63 - 1, None, None, None]


def test_venue_error_message_raises_venue_error() -> None:
    with pytest.raises(VenueError, match="coinbase error: failure to subscribe"):
        Normalizer().feed(b'{"type": "error", "message": "failure to subscribe"}', 1)


# -- time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-10-04T07:13:31.158696693Z", 1_728_026_011_158_696_693),
        ("2024-10-04T07:13:31.088388Z", 1_728_026_011_088_388_000),
        ("2024-10-04T07:13:31Z", 1_728_026_011_000_000_000),
        ("2024-10-04T10:13:31.5+03:00", 1_728_026_011_500_000_000),
        ("2024-10-04 07:04:40.820713045 +0000 UTC m=+66987.628148662", 1_728_025_480_820_713_045),
        ("2024-10-04 07:04:40.820713045 +0000 UTC", 1_728_025_480_820_713_045),
        ("2024-10-04T07:13:31.1234567891Z", 1_728_026_011_123_456_789),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_time_accepts_coinbase_forms(text: str, ns: int) -> None:
    assert parse_time(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-10-04",
        "2024-13-04T07:13:31Z",
        "2024-10-04T07:13:31.Z",
        "2024-10-0４T07:13:31Z",
        "9999-12-31T23:59:59Z",  # beyond int64 ns (2262-04-11)
        "2262-04-10T00:00:00-99:99",  # no such offset (and past int64 ns with it)
        "1600-01-01T00:00:00Z",
    ],
)
def test_parse_time_rejects_non_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@given(st.integers(min_value=-(10**18), max_value=4 * 10**18))
def test_format_time_round_trips(ns: int) -> None:
    assert parse_time(format_time(ns)) == ns
    assert parse_time(format_time(ns, go=True) + " m=+1.5") == ns


# -- the encoder (feed server) ---------------------------------------------------------------------


def _normalized_stream() -> list[tuple[int, list[MarketEvent]]]:
    """(recv_ts, rows) per message of a small mixed session, sequence starting at 40."""
    hb = server_messages("Heartbeat.txt")[""][1].replace(b'"sequence_num":1', b'"sequence_num":43')
    trades = server_messages("Trades.txt")[""][1].replace(b'"sequence_num":2', b'"sequence_num":44')
    ticker = _env(
        "ticker",
        45,
        [
            {
                "type": "update",
                "tickers": [
                    {
                        "type": "ticker",
                        "product_id": "BTC-PERP-INTX",
                        "price": "61800.2",
                        "best_bid": "61800.1",
                        "best_bid_quantity": "1.5",
                        "best_ask": "61800.2",
                        "best_ask_quantity": "0.0001",
                    }
                ],
            }
        ],
    )
    msgs = [
        _l2(
            40,
            "snapshot",
            [
                ("bid", "2024-10-04T07:13:31.5Z", "61800.1", "1.5"),
                ("offer", "2024-10-04T07:13:31.5Z", "61800.2", "0.7"),
            ],
        ),
        _l2(41, "update", [("offer", "2024-10-04T07:13:31.6Z", "61800.2", "0")]),
        _l2(42, "update", [("offer", "2024-10-04T07:13:31.7Z", "61800.3", "0.00002")]),
        hb,
        trades,
        ticker,
        # 46 is lost: a gap
        _l2(47, "update", [("bid", "2024-10-04T07:13:32.000000001Z", "61800.0", "3")]),
        _l2(48, "snapshot", []),
    ]
    n = Normalizer()
    return [(1000 + i, n.feed(m, 1000 + i)) for i, m in enumerate(msgs)]


def test_to_messages_round_trips_through_the_normalizer() -> None:
    stream = _normalized_stream()
    rows = [e for _, evs in stream for e in evs]
    assert any(isinstance(e, Status) and e.text == "gap" for e in rows)
    out = to_messages(rows, sequence_start=40)
    # One message per source message; the gap's rows are not a message (they skip a number).
    assert len(out) == len(stream)
    n = Normalizer()
    back: list[MarketEvent] = []
    for msg, (recv, _) in zip(out, stream):
        back.extend(n.feed(msg, recv))
    assert back == rows
    env = json.loads(out[0])
    assert env["channel"] == "l2_data" and env["sequence_num"] == 40
    assert env["events"][0]["product_id"] == "BTC-PERP-INTX"
    assert json.loads(out[2])["events"][0]["updates"][0]["new_quantity"] == "0.00002"  # never 2e-05


def test_message_bodies_are_the_events_of_what_to_messages_sends() -> None:
    # The feed server sends message_bodies in its own envelope: same channels, same events.
    rows = [e for _, evs in _normalized_stream() for e in evs]
    pmap = {"BTC-PERP": "BTC-PERP-INTX"}
    sent = [json.loads(m) for m in to_messages(rows, pmap)]
    bodies = message_bodies(rows, pmap)
    assert [ch for ch, _ in bodies] == [m["channel"] for m in sent]
    assert [json.loads(body) for _, body in bodies] == [m["events"] for m in sent]


def test_to_messages_skips_rows_coinbase_has_no_message_for() -> None:
    from perpsim.core.events import Funding

    rows: list[MarketEvent] = [
        Funding(ts=1, recv_ts=1, symbol="BTC-PERP", rate=0.0001, flags=EOM),
        Trade(ts=2, recv_ts=2, symbol="BTC-PERP", price=1.5, size=2.0, side=1, flags=EOM),
    ]
    (msg,) = to_messages(rows, sequence_start=7)
    doc = json.loads(msg)
    assert doc["sequence_num"] == 7
    assert doc["events"][0]["trades"][0]["side"] == "SELL"  # maker side of a buy aggressor
    assert doc["events"][0]["trades"][0]["trade_id"] == "perpsim-1"


# -- the converter -------------------------------------------------------------------------------


def _capture(tmp_path: Path, stamped: bool) -> Path:
    lines: list[bytes] = []
    msgs = server_messages("Heartbeat.txt")[""] + server_messages("Trades.txt")[""]
    # Heartbeat ack 0 and push 1, then the trades capture (ack 1, push 2): one reconnect-free
    # connection would number them 0..3, so renumber.
    for i, m in enumerate(msgs):
        doc = msgspec.json.decode(m)
        doc["sequence_num"] = i
        raw = msgspec.json.encode(doc)
        lines.append((b"%d " % (1_728_026_100_000_000_000 + i) + raw) if stamped else raw)
    path = tmp_path / ("stamped.jsonl" if stamped else "bare.jsonl")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_convert_coinbase_capture_with_and_without_receive_stamps(tmp_path: Path) -> None:
    out = tmp_path / "cb.parquet"
    rep = convert("coinbase", _capture(tmp_path, stamped=True), out)
    assert rep.rows == {"trade": 2, "status": 1}
    assert rep.ignored == {"subscriptions": 2} and rep.skipped == 0 and rep.gaps == 0
    tape = open_tape(out)
    assert tape.meta.clock == "recv_ts"
    (b,) = list(tape.batches())
    assert b.recv_ts.tolist() == [1_728_026_100_000_000_001, 1_728_026_100_000_000_003, 1_728_026_100_000_000_003]

    rows, rep = convert_coinbase(_capture(tmp_path, stamped=False))
    d = rows.table()[0].to_pydict()
    # No receive stamp: every row of a message gets the envelope timestamp.
    assert (
        d["recv_ts"]
        == [parse_time("2024-10-04T07:04:40.825062088Z")] + [parse_time("2024-10-04T07:13:31.158696693Z")] * 2
    )
    assert d["ts"][1] == parse_time("2024-10-04T07:13:31.088388Z")


def test_convert_coinbase_malformed_lines(tmp_path: Path) -> None:
    src = _capture(tmp_path, stamped=True)
    lines = src.read_bytes().splitlines()
    lines[1] = lines[1][:50]
    lines.insert(2, b"notanumber {}")
    src.write_bytes(b"\n".join(lines) + b"\n")
    _rows, rep = convert_coinbase(src)
    assert rep.skipped == 2
    assert [s.line for s in rep.skipped_lines] == [2, 3]
    # The lost heartbeat (sequence 1) shows as a gap when the next message has sequence 2.
    assert rep.gaps == 1 and rep.gap_lines[0].line == 4
    assert rep.rows == {"trade": 2, "status": 1}
    with pytest.raises(TapeError, match=r"stamped\.jsonl line 2: coinbase message: "):
        convert_coinbase(src, strict=True)


def test_convert_coinbase_symbol_override(tmp_path: Path) -> None:
    rows, _ = convert_coinbase(_capture(tmp_path, stamped=True), symbol="ETH-PERP")
    assert sorted(set(rows.symbol)) == ["*", "ETH-PERP"]


def test_convert_coinbase_corrupt_gzip_is_one_error_naming_the_line(tmp_path: Path) -> None:
    lines = [_l2(i, "update", [("bid", "2024-10-04T07:13:31Z", f"{100 + i % 97}.5", f"{i}")]) for i in range(3000)]
    data = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    assert len(data) > 1000
    data[100:200] = b"x" * 100  # damaged near the start: everything after it is lost
    src = tmp_path / "cap.jsonl.gz"
    src.write_bytes(bytes(data))
    with pytest.raises(TapeError, match=r"cap\.jsonl\.gz line \d+: corrupt gzip data \(Error -3 while decompressing"):
        convert_coinbase(src)
