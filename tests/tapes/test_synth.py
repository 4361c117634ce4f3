"""Synthetic tapes: deterministic bytes, and market data that looks and behaves right."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from msgspec.structs import replace

from perpsim.cli_tapes import tapes
from perpsim.core.batch import Batch, batch_events
from perpsim.core.errors import InputError
from perpsim.core.events import BookLevel, BookReset, Flags, Kind, Quote
from perpsim.tapes import open_tape, synth, validate_tape
from perpsim.tapes.schema import WarmStart
from perpsim.tapes.synth import DEFAULT_START_NS, Shock, parse_shock
from perpsim.tapes.writer import write_table
from tests.helpers import cli

HOUR = 3600 * 10**9


def rows_of(path: Path, symbol: str | None = None) -> dict[str, Any]:
    """Every column of a (small) tape as numpy arrays, optionally one symbol's rows."""
    parts = list(open_tape(path).batches())
    cols: dict[str, Any] = {}
    for name in Batch.__struct_fields__:
        if name in ("symbols", "text", "pending"):
            continue
        cols[name] = np.concatenate([getattr(b, name) for b in parts])
    cols["sym"] = np.concatenate([np.array(b.symbols, dtype=object)[b.symbol] for b in parts])
    if symbol is not None:
        keep = cols["sym"] == symbol
        cols = {k: v[keep] for k, v in cols.items()}
    return cols


def on_grid(values: Any, step: float) -> bool:
    """Every value is an exact multiple of the decimal ``step`` (as the ledger reads them)."""
    s = Fraction(repr(step))
    return all((Fraction(repr(float(v))) / s).denominator == 1 for v in np.unique(values))


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(hours=1, symbols=["BTC-PERP", "ETH-PERP"], seed=11, shock=Shock(at_hours=0.5, pct=-5))
    a = synth(out=tmp_path / "a.parquet", l2=True, **kw).read_bytes()
    b = synth(out=tmp_path / "b.parquet", l2=True, **kw).read_bytes()
    assert a == b
    c = synth(out=tmp_path / "c.parquet", l2=True, **{**kw, "seed": 12}).read_bytes()
    assert c != a


def test_a_symbol_is_the_same_whatever_else_is_on_the_tape(tmp_path: Path) -> None:
    one = synth(hours=1, symbols=["SOL-PERP"], seed=3, out=tmp_path / "one.parquet")
    two = synth(hours=1, symbols=["BTC-PERP", "SOL-PERP"], seed=3, out=tmp_path / "two.parquet")
    a, b = rows_of(one), rows_of(two, "SOL-PERP")
    for col in ("ts", "kind", "price", "size", "bid", "ask", "rate"):
        np.testing.assert_array_equal(a[col], b[col])


def test_synth_tape_is_valid_and_realistic(tmp_path: Path) -> None:
    symbols = ["BTC-PERP", "ETH-PERP", "FOO-PERP"]
    path = synth(hours=3, symbols=symbols, seed=5, out=tmp_path / "t.parquet", mark_interval_s=60)
    report = validate_tape(path)
    tape = open_tape(path)
    assert tape.meta.source == "synth:seed=5,hours=3,symbols=BTC-PERP+ETH-PERP+FOO-PERP"
    assert sorted(tape.instruments) == sorted(symbols)
    assert report.start_ns == DEFAULT_START_NS
    for sym in symbols:
        ins = tape.instruments[sym]
        assert ins.tick is not None
        r = rows_of(path, sym)
        k = r["kind"]
        q, t = k == Kind.QUOTE, k == Kind.TRADE
        # Poisson rates near the asked 60 quotes and 30 trades per minute.
        assert 0.9 * 60 * 180 < q.sum() < 1.1 * 60 * 180
        assert 0.9 * 30 * 180 < t.sum() < 1.1 * 30 * 180
        assert (r["bid"][q] < r["ask"][q]).all()  # never crossed, never locked
        assert set(np.unique(r["side"][t])) == {-1, 1}
        assert (r["bid_size"][q] > 0).all() and (r["size"][t] > 0).all()
        assert on_grid(r["price"][t], ins.tick)
        assert on_grid(np.concatenate([r["bid"][q], r["ask"][q]]), ins.tick)
        assert on_grid(np.concatenate([r["size"][t], r["bid_size"][q], r["ask_size"][q]]), ins.lot)
        assert (np.diff(r["ts"][k == Kind.MARK]) == 60 * 10**9).all()
        # Seq ids increase per symbol for venue updates.
        assert (np.diff(r["seq"][q | t]) > 0).all()
    btc = rows_of(path, "BTC-PERP")
    assert 40_000 < np.median(btc["price"][btc["kind"] == Kind.TRADE]) < 80_000
    foo = rows_of(path, "FOO-PERP")
    assert 50 < np.median(foo["price"][foo["kind"] == Kind.TRADE]) < 200


def test_funding_settles_hourly_with_both_signs(tmp_path: Path) -> None:
    path = synth(hours=48, symbols=["BTC-PERP"], seed=2, out=tmp_path / "f.parquet", trades_per_min=1, quotes_per_min=1)
    r = rows_of(path)
    f = r["kind"] == Kind.FUNDING
    ts, rate = r["ts"][f], r["rate"][f]
    assert ts.tolist() == [DEFAULT_START_NS + h * HOUR for h in range(1, 49)]
    assert (r["next_ts"][f] == ts + HOUR).all()
    assert (rate > 0).sum() >= 5 and (rate < 0).sum() >= 5
    assert np.abs(rate).max() < 5e-4
    assert len(set(rate.tolist())) > 40


def test_funding_interval_is_epoch_aligned(tmp_path: Path) -> None:
    start = DEFAULT_START_NS + 10 * 60 * 10**9  # 00:10
    path = synth(
        hours=9, symbols=["X"], seed=1, out=tmp_path / "f.parquet", start_ns=start, funding_interval_s=8 * 3600
    )
    r = rows_of(path)
    f = r["kind"] == Kind.FUNDING
    assert r["ts"][f].tolist() == [DEFAULT_START_NS + 8 * HOUR]
    assert open_tape(path).instruments["X"].funding_interval_s == 8 * 3600


def test_volatility_switches_regimes(tmp_path: Path) -> None:
    path = synth(hours=48, symbols=["ETH-PERP"], seed=4, out=tmp_path / "v.parquet", trades_per_min=0)
    r = rows_of(path)
    q = r["kind"] == Kind.QUOTE
    mid = (r["bid"][q] + r["ask"][q]) / 2
    hour = (r["ts"][q] - DEFAULT_START_NS) // HOUR
    ret = np.diff(np.log(mid))
    vols = [ret[hour[1:] == h].std() for h in range(48)]
    assert max(vols) > 2 * min(vols)


def test_shock_moves_the_price_by_pct_over_its_span(tmp_path: Path) -> None:
    def mids(shock: Shock | None) -> tuple[float, float]:
        path = synth(hours=4, symbols=["BTC-PERP"], seed=9, out=tmp_path / "s.parquet", shock=shock)
        r = rows_of(path)
        q = r["kind"] == Kind.QUOTE
        ts, mid = r["ts"][q], (r["bid"][q] + r["ask"][q]) / 2
        t0 = DEFAULT_START_NS
        before = mid[(ts >= t0 + 2 * HOUR - HOUR // 6) & (ts < t0 + 2 * HOUR)].mean()
        after = mid[(ts >= t0 + 3 * HOUR) & (ts < t0 + 3 * HOUR + HOUR // 6)].mean()
        return float(before), float(after)

    before, after = mids(Shock(at_hours=2, pct=-30, over_hours=1))
    assert 0.62 < after / before < 0.78
    before, after = mids(None)
    assert 0.92 < after / before < 1.08


def test_l2_book_tops_always_equal_the_quotes(tmp_path: Path) -> None:
    path = synth(hours=0.5, symbols=["BTC-PERP", "SOL-PERP"], seed=8, out=tmp_path / "l2.parquet", l2=True)
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    quotes = levels = 0
    in_message = False
    for b in open_tape(path).batches():
        for ev in batch_events(b):
            if isinstance(ev, BookReset):
                assert ev.flags & Flags.SNAPSHOT
                books[ev.symbol] = ({}, {})
            elif isinstance(ev, BookLevel):
                levels += 1
                side = books[ev.symbol][0 if ev.side > 0 else 1]
                if ev.size == 0:
                    assert ev.price in side  # deletes only levels that exist
                    del side[ev.price]
                else:
                    side[ev.price] = ev.size
                in_message = not ev.flags & Flags.END_OF_MESSAGE
            elif isinstance(ev, Quote):
                assert not in_message  # a quote never splits a book message
                quotes += 1
                bids, asks = books[ev.symbol]
                assert (max(bids), min(asks)) == (ev.bid, ev.ask)
                assert (bids[ev.bid], asks[ev.ask]) == (ev.bid_size, ev.ask_size)
                assert len(bids) == len(asks) == 10
    assert quotes > 3000 and levels > quotes


def test_bad_arguments_are_input_errors(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"hours": 0}, "hours must be > 0"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"symbols": []}, "at least one symbol"),
        ({"symbols": ["A", "A"]}, "symbols repeat"),
        ({"shock": Shock(at_hours=0, pct=-100)}, "shock pct must be > -100"),
        ({"shock": Shock(at_hours=5, pct=-10)}, "outside the 1h tape"),
        ({"trades_per_min": -1}, "trades_per_min must be finite and >= 0, not -1"),
        ({"hours": float("inf")}, "hours must be > 0 and finite, not inf"),
        ({"hours": float("nan")}, "hours must be > 0 and finite, not nan"),
        ({"hours": 1e-15}, "hours 1e-15 is shorter than 1 ns"),
        ({"hours": 1e6, "start_ns": 9 * 10**18}, "ends after 2262"),
        ({"trades_per_min": float("inf")}, "trades_per_min must be finite and >= 0, not inf"),
        ({"quotes_per_min": float("nan")}, "quotes_per_min must be finite and >= 0, not nan"),
        ({"trades_per_min": 1e12}, "trades_per_min 1e+12 gives about 6e+13 rows per symbol in 1h (at most 1e+08)"),
        ({"mark_interval_s": 1e-10}, "mark_interval_s must be finite, at least 1 ns and at most the tape's"),
        ({"mark_interval_s": float("nan")}, "mark_interval_s must be finite"),
        ({"mark_interval_s": float("inf")}, "mark_interval_s must be finite"),
        ({"mark_interval_s": -1}, "not -1"),
        ({"mark_interval_s": 3601}, "at most the tape's length (3600 s), not 3601"),
        ({"mark_interval_s": 1e-5}, "mark_interval_s 1e-05 gives about 3.6e+08 rows per symbol"),
        ({"shock": Shock(at_hours=0, pct=float("inf"))}, "shock pct must be > -100 and <= 10000, not inf"),
        ({"shock": Shock(at_hours=0, pct=1e300)}, "shock pct must be > -100 and <= 10000, not 1e+300"),
        ({"shock": Shock(at_hours=float("nan"), pct=-10)}, "outside the 1h tape"),
        ({"shock": Shock(at_hours=0, pct=-10, over_hours=float("nan"))}, "shock over_hours must be"),
        ({"shock": Shock(at_hours=0, pct=-10, over_hours=float("inf"))}, "shock over_hours must be"),
    ]
    for change, message in cases:
        kw: dict[str, Any] = {"hours": 1, "symbols": ["A"], "seed": 1, "out": out, **change}
        with pytest.raises(InputError, match=re.escape(message)):
            synth(**kw)
    assert not out.exists()


def test_parse_shock() -> None:
    assert parse_shock("2:-30:1") == Shock(at_hours=2, pct=-30, over_hours=1)
    with pytest.raises(InputError, match=r"--shock '2:-30': expected AT_HOURS:PCT:OVER_HOURS"):
        parse_shock("2:-30")
    for text in ("0.5:-30:nan", "0:inf:1", "nan:-30:1", "0:-30:-inf"):
        with pytest.raises(InputError, match=re.escape(f"--shock {text!r}: AT_HOURS, PCT and OVER_HOURS must be")):
            parse_shock(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hours", "1e-15"], "hours 1e-15 is shorter than 1 ns"),
        (["--hours", "inf"], "hours must be > 0 and finite, not inf"),
        (["--marks", "1e-10"], "mark_interval_s must be finite"),
        (["--marks", "nan"], "mark_interval_s must be finite"),
        (["--marks", "-1"], "mark_interval_s must be finite"),
        (["--shock", "0.5:-30:nan"], "--shock '0.5:-30:nan': AT_HOURS, PCT and OVER_HOURS must be finite"),
        (["--shock", "0:inf:1"], "--shock '0:inf:1': AT_HOURS, PCT and OVER_HOURS must be finite"),
        (["--trades-per-min", "inf"], "trades_per_min must be finite and >= 0, not inf"),
        (["--quotes-per-min", "nan"], "quotes_per_min must be finite and >= 0, not nan"),
    ],
)
def test_cli_synth_odd_values_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "sy.parquet"
    base = ["tapes", "synth", "--symbols", "BTC-PERP", "--seed", "1", "--out", str(out)]
    hours = [] if "--hours" in args else ["--hours", "1"]
    code, stdout, err = cli(*base, *hours, *args)
    assert code == 2 and err.startswith("perpsim: ") and err.count("\n") == 1, err
    assert message in err and stdout == "" and not out.exists()


def test_marks_never_fall_below_one_tick(tmp_path: Path) -> None:
    out = synth(
        hours=1,
        symbols=["BTC-PERP"],
        seed=1,
        out=tmp_path / "x.parquet",
        mark_interval_s=60,
        shock=Shock(at_hours=0, pct=-99.9999999),
    )
    r = rows_of(out)
    assert r["price"][r["kind"] == Kind.MARK].min() == 0.1  # the floor: one tick, like the quotes


def test_cli_out_that_is_a_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    src = synth(hours=1, symbols=["BTC-PERP"], seed=1, out=tmp_path / "a.parquet")
    folder = tmp_path / "od"
    folder.mkdir()
    for args in (
        ["slice", str(src)],
        ["merge", str(src), str(synth(hours=1, symbols=["ETH-PERP"], seed=1, out=tmp_path / "b.parquet"))],
        ["synth", "--hours", "1", "--symbols", "BTC-PERP", "--seed", "1"],
    ):
        code, stdout, err = cli("tapes", *args, "--out", str(folder))
        assert code == 2 and err.count("\n") == 1 and "--out" in err and "is a directory" in err, err
        assert stdout == "" and list(folder.iterdir()) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "od"]  # no temp file


def test_cli_synth_matches_the_function(tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    args = ["synth", "--hours", "1", "--symbols", "BTC-PERP,ETH-PERP", "--seed", "3", "--out", str(out)]
    result = CliRunner().invoke(tapes, [*args, "--shock", "0.5:-30:0.25", "--l2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out}: ")
    ref = synth(
        hours=1,
        symbols=["BTC-PERP", "ETH-PERP"],
        seed=3,
        out=tmp_path / "ref.parquet",
        shock=Shock(at_hours=0.5, pct=-30, over_hours=0.25),
        l2=True,
    )
    assert out.read_bytes() == ref.read_bytes()
    result = CliRunner().invoke(tapes, [*args, "--shock", "nonsense"])
    assert isinstance(result.exception, InputError)


def test_cli_slice_and_merge(tmp_path: Path) -> None:
    a = synth(hours=2, symbols=["BTC-PERP"], seed=1, out=tmp_path / "a.parquet")
    b = synth(hours=2, symbols=["ETH-PERP"], seed=1, out=tmp_path / "b.parquet")
    runner = CliRunner()
    cut = tmp_path / "cut.parquet"
    res = runner.invoke(
        tapes, ["slice", str(a), "--start", "2024-01-01T00:30:00Z", "--end", "2024-01-01T01:00", "--out", str(cut)]
    )
    assert res.exit_code == 0, res.output
    ra = rows_of(a)
    keep = (ra["ts"] >= DEFAULT_START_NS + HOUR // 2) & (ra["ts"] < DEFAULT_START_NS + HOUR)
    rc = rows_of(cut)
    np.testing.assert_array_equal(rc["ts"], ra["ts"][keep])
    np.testing.assert_array_equal(rc["price"], ra["price"][keep])
    assert open_tape(cut).instruments == open_tape(a).instruments

    merged = tmp_path / "m.parquet"
    res = runner.invoke(tapes, ["merge", str(a), str(b), "--out", str(merged)])
    assert res.exit_code == 0, res.output
    report = validate_tape(merged)
    assert report.symbols == ["BTC-PERP", "ETH-PERP"]
    assert report.rows == open_tape(a).num_rows + open_tape(b).num_rows
    assert sorted(open_tape(merged).instruments) == ["BTC-PERP", "ETH-PERP"]
    twice = tmp_path / "twice.parquet"
    code, _, err = cli("tapes", "merge", str(a), str(b), str(tmp_path / "." / "a.parquet"), "--out", str(twice))
    assert code == 2 and "a.parquet: given twice" in err and not twice.exists(), err


def test_cli_slice_recompresses_a_whole_tape_and_the_replay_is_unchanged(tmp_path: Path) -> None:
    import perpsim

    src = synth(hours=3, symbols=["BTC-PERP", "ETH-PERP"], seed=5, out=tmp_path / "l.parquet", l2=True)
    small = tmp_path / "z.parquet"
    res = CliRunner().invoke(tapes, ["slice", str(src), "--codec", "zstd", "--out", str(small)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(tapes, ["inspect", str(small), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["codecs"] == ["zstd"]
    assert open_tape(src).codecs == ("lz4",)
    assert small.stat().st_size < src.stat().st_size
    a, b = rows_of(src), rows_of(small)
    for col in a:
        np.testing.assert_array_equal(a[col], b[col])
    for engine in ("fast", "reference"):
        assert perpsim.replay(small, engine=engine).digest == perpsim.replay(src, engine=engine).digest
    res = CliRunner().invoke(tapes, ["slice", str(src), "--codec", "brotli", "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2
    assert "'brotli' is not one of 'lz4', 'zstd'" in res.output


def test_cli_slice_and_merge_keep_the_source_codec_unless_told(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(hours=1, seed=2)
    a = synth(symbols=["BTC-PERP"], out=tmp_path / "a.parquet", codec="zstd", **kw)
    b = synth(symbols=["ETH-PERP"], out=tmp_path / "b.parquet", codec="zstd", **kw)
    z = synth(symbols=["SOL-PERP"], out=tmp_path / "z.parquet", **kw)

    def run(*args: str) -> tuple[str, ...]:
        out = tmp_path / "out.parquet"
        out.unlink(missing_ok=True)  # --out must not exist
        res = CliRunner().invoke(tapes, [*args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        return open_tape(out).codecs

    assert run("slice", str(a)) == ("zstd",)
    assert run("slice", str(a), "--codec", "lz4") == ("lz4",)
    assert run("merge", str(a), str(b)) == ("zstd",)
    assert run("merge", str(a), str(z)) == ("lz4",)  # mixed sources: the default
    assert run("merge", str(a), str(z), "--codec", "zstd") == ("zstd",)


def test_cli_slice_keeps_a_warm_start_only_with_all_its_warm_up_rows(tmp_path: Path) -> None:
    src = synth(hours=1, symbols=["BTC-PERP"], seed=4, out=tmp_path / "s.parquet")
    tape = open_tape(src)
    warm = WarmStart(rows=100, realign_ns=DEFAULT_START_NS + HOUR // 2)
    rec = write_table(
        pa.Table.from_batches(list(tape.record_batches())), tmp_path / "rec.parquet", replace(tape.meta, warm=warm)
    )
    assert open_tape(rec).meta.warm == warm

    def sliced(*args: str) -> WarmStart | None:
        out = tmp_path / "out.parquet"
        out.unlink(missing_ok=True)  # --out must not exist
        res = CliRunner().invoke(tapes, ["slice", str(rec), *args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        return open_tape(out).meta.warm

    assert sliced() == warm  # the whole recording: the replay redoes the warm start
    assert sliced("--end", str(DEFAULT_START_NS + HOUR // 4)) == warm
    assert sliced("--start", str(DEFAULT_START_NS + 60 * 10**9)) is None  # the warm-up rows are cut
    assert sliced("--end", str(DEFAULT_START_NS + 10**9)) is None  # fewer rows than the warm-up
