"""tapes/formats/funding_csv.py: funding histories → ``funding`` settlement rows and schedules.

Fixtures are the first 25 lines of supervik/historical-funding-rates-fetcher's BTC-USDT
histories (tests/data/funding, see tests/data/NOTICE). Binance and Bybit dates are UTC+3,
dYdX dates UTC; the expected values below were worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from perpsim.core.errors import ConfigError, TapeError
from perpsim.tapes.convert import convert
from perpsim.tapes.formats.funding_csv import (
    convert_funding_csv,
    default_utc_offset,
    funding_schedule,
    read_funding_csv,
)
from perpsim.tapes.reader import open_tape

DATA = Path(__file__).parent.parent / "data" / "funding"
BINANCE = DATA / "BTC-USDT_binance_2020-01-01_2024-01-01_funding_history_head25.csv"
BYBIT = DATA / "BTC-USDT_bybit_2021-01-01_2024-01-01_funding_history_head25.csv"
DYDX = DATA / "BTC-USDT_dydx_2022-01-01_2024-01-01_funding_history_head25.csv"

S = 1_000_000_000
UTC_2020_01_01 = 1_577_836_800 * S  # 2020-01-01 00:00:00 UTC
UTC_2021_01_01 = 1_609_459_200 * S
UTC_2022_01_01 = 1_640_995_200 * S


def test_default_offsets_by_venue_in_the_file_name() -> None:
    assert default_utc_offset(BINANCE) == 3.0
    assert default_utc_offset(BYBIT) == 3.0
    assert default_utc_offset(DYDX) == 0.0
    assert default_utc_offset("rates.csv") is None


def test_binance_dates_are_utc_plus_3() -> None:
    # First data line: "BTC-USDT,2020-01-01 03:00:00.000,-0.00012359" is the 00:00 UTC settlement.
    rows, rep = convert_funding_csv(BINANCE, symbol="BTCUSDT")
    d = rows.table(clock="ts")[0].to_pydict()
    assert d["kind"][0] == "funding" and d["symbol"][0] == "BTCUSDT"
    assert d["ts"][0] == UTC_2020_01_01
    assert d["recv_ts"][0] == d["ts"][0]
    assert d["rate"][0] == -0.00012359
    # next_ts is the next row's time: "2020-01-01 11:00:00.000" (UTC+3) = 08:00 UTC.
    assert d["next_ts"][0] == UTC_2020_01_01 + 8 * 3600 * S
    assert d["next_ts"][-1] is None
    assert rep.lines_read == 24 and rep.rows == {"funding": 24} and rep.skipped == 0
    assert rep.counters["utc_offset_min"] == 180


def test_bybit_is_utc_plus_3_and_dydx_is_utc() -> None:
    ts, rate = funding_schedule(BYBIT)
    assert ts[0] == UTC_2021_01_01  # "2021-01-01 03:00:00" UTC+3
    assert rate[0] == 0.00034729
    assert np.all(np.diff(ts) == 8 * 3600 * S)
    ts, rate = funding_schedule(DYDX)
    assert ts[0] == UTC_2022_01_01  # "2022-01-01 00:00:00" UTC
    assert rate[0] == 0.0000058615
    assert np.all(np.diff(ts) == 3600 * S)  # hourly


def test_explicit_offset_overrides_the_default() -> None:
    ts, _ = funding_schedule(BINANCE, utc_offset_h=0)
    assert ts[0] == UTC_2020_01_01 + 3 * 3600 * S


def test_schedule_is_numpy_int64_and_float64() -> None:
    ts, rate = funding_schedule(BINANCE)
    assert ts.dtype == np.int64 and rate.dtype == np.float64
    assert ts.shape == rate.shape == (24,)
    assert np.all(np.diff(ts) > 0)


def test_unknown_venue_needs_an_offset(tmp_path: Path) -> None:
    src = tmp_path / "rates.csv"
    src.write_bytes(BINANCE.read_bytes())
    with pytest.raises(ConfigError, match=r"rates\.csv: cannot tell the UTC offset .* pass --utc-offset"):
        read_funding_csv(src)
    series, _ = read_funding_csv(src, utc_offset_h=3)
    assert series[0].ts[0] == UTC_2020_01_01


def test_malformed_rows_are_counted_with_line_numbers(tmp_path: Path) -> None:
    lines = BINANCE.read_text().splitlines()
    lines[3] = "BTC-USDT,not a date,0.0001"  # line 4
    lines[7] = "BTC-USDT,2020-01-03 03:00:00.000,abc"  # line 8
    lines[9] = "BTC-USDT,2020-01-04 03:00:00.000"  # line 10: a column short
    src = tmp_path / "BTC-USDT_binance_bad.csv"
    src.write_text("\n".join(lines) + "\n")
    series, rep = read_funding_csv(src)
    assert rep.skipped == 3
    assert [(s.line, s.reason) for s in rep.skipped_lines] == [
        (4, "column Date: 'not a date' is not a date"),
        (8, "column Funding Rate: 'abc' is not a number"),
        (10, "expected 3 columns, found 2"),
    ]
    assert len(series[0]) == 21
    with pytest.raises(TapeError, match=r"BTC-USDT_binance_bad\.csv line 4: column Date: 'not a date'"):
        read_funding_csv(src, strict=True)


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "x_dydx.csv"
    src.write_text("Symbol,Date\nBTC-USDT,2022-01-01 00:00:00\n")
    with pytest.raises(TapeError, match=r"x_dydx\.csv line 1: missing column 'funding rate'"):
        read_funding_csv(src)


def test_convert_writes_a_funding_tape_and_the_cli_takes_utc_offset(tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    rep = convert("funding-csv", DYDX, out, symbol="BTC-PERP")
    assert rep.clock == "ts" and rep.rows == {"funding": 24}
    tape = open_tape(out)
    assert tape.meta.clock == "ts"
    assert tape.meta.instruments["BTC-PERP"].tick == 0.1
    (b,) = list(tape.batches())
    assert int(b.ts[0]) == UTC_2022_01_01 and float(b.rate[0]) == 0.0000058615

    from perpsim.cli_convert import convert as convert_cmd

    out2 = tmp_path / "g.parquet"
    args = ["--from", "funding-csv", str(BINANCE), "--out", str(out2), "--utc-offset", "0", "--json"]
    res = CliRunner().invoke(convert_cmd, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["start_ns"] == UTC_2020_01_01 + 3 * 3600 * S
    assert doc["rows"] == {"funding": 24}
    assert open_tape(out2).codecs == ("lz4",)
    res = CliRunner().invoke(convert_cmd, [*args, "--codec", "zstd", "--out", str(tmp_path / "z.parquet")])
    assert res.exit_code == 0, res.output
    assert open_tape(tmp_path / "z.parquet").codecs == ("zstd",)

    with pytest.raises(ConfigError, match="--utc-offset applies to funding-csv only"):
        convert("binance", BINANCE, tmp_path / "h.parquet", utc_offset_h=3)
