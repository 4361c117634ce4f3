"""Validation: the first bad value of a tape, named by file, row and column."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from perpsim.cli_tapes import tapes
from perpsim.core.errors import TapeError
from perpsim.tapes import SCHEMA, open_tape, validate_tape, write
from perpsim.tapes.validate import inspect_tape

T0 = 1_704_067_200 * 10**9

GOOD: list[dict[str, Any]] = [
    {"kind": "book_reset", "symbol": "A", "flags": 2},
    {"kind": "book", "symbol": "A", "price": 99.0, "size": 1.0, "side": 1, "flags": 2},
    {"kind": "book", "symbol": "A", "price": 101.0, "size": 1.0, "side": -1, "flags": 3},
    {"kind": "quote", "symbol": "A", "bid": 99.0, "bid_size": 1.0, "ask": 101.0, "ask_size": 2.0},
    {"kind": "trade", "symbol": "A", "price": 100.0, "size": 0.5, "side": 1},
    {"kind": "mark", "symbol": "A", "price": 100.0},
    {"kind": "funding", "symbol": "A", "rate": -1e-5, "next_ts": T0 + 3600 * 10**9},
    {"kind": "status", "symbol": "A", "text": "heartbeat"},
    {"kind": "trade", "symbol": "B", "price": 5.0, "size": 0.0, "side": 0},
    {"kind": "book", "symbol": "A", "price": 99.0, "size": 0.0, "side": 1},  # 0 deletes a level
    {"kind": "quote", "symbol": "A", "bid": 100.0, "bid_size": None, "ask": 100.0, "ask_size": None},
]


def raw_tape(path: Path, rows: list[dict[str, Any]], **overrides: Any) -> Path:
    """Write rows straight to Parquet, bypassing the writer's validation."""
    full = []
    for i, r in enumerate(rows):
        r = {"ts": T0 + i, "recv_ts": T0 + i, **r}
        full.append(r)
    pq.write_table(pa.Table.from_pylist(full, schema=SCHEMA), path)
    return path


def bad(row: int, **change: Any) -> list[dict[str, Any]]:
    rows = [dict(r) for r in GOOD]
    rows[row].update(change)
    return rows


def test_good_tape_validates_with_a_report(tmp_path: Path) -> None:
    path = raw_tape(tmp_path / "good.parquet", GOOD)
    r = validate_tape(path)
    assert r.rows == len(GOOD)
    assert r.files == [str(path)]
    assert (r.start_ns, r.end_ns) == (T0, T0 + len(GOOD) - 1)
    assert r.symbols == ["A", "B"]
    assert r.counts == {
        "A": {"trade": 1, "quote": 2, "book": 3, "book_reset": 1, "funding": 1, "mark": 1, "status": 1},
        "B": {"trade": 1},
    }
    assert r.validated


@pytest.mark.parametrize(
    ("rows", "row", "col", "problem"),
    [
        (bad(4, price=float("nan")), 4, "price", "NaN in a trade row"),
        (bad(4, price=None), 4, "price", "null in a trade row"),
        (bad(4, price=0.0), 4, "price", "zero in a trade row"),
        (bad(4, price=-3.5), 4, "price", r"negative \(-3.5\) in a trade row"),
        (bad(4, price=float("inf")), 4, "price", "inf in a trade row"),
        (bad(1, price=0.0), 1, "price", "zero in a book row"),
        (bad(5, price=None), 5, "price", "null in a mark row"),
        (bad(3, bid=float("nan")), 3, "bid", "NaN in a quote row"),
        (bad(3, ask=0.0), 3, "ask", "zero in a quote row"),
        (bad(3, bid=102.0), 3, "bid", r"crossed quote: bid 102.0 > ask 101.0"),
        (bad(6, rate=None), 6, "rate", "null in a funding row"),
        (bad(6, rate=float("nan")), 6, "rate", "NaN in a funding row"),
        (bad(4, size=-0.5), 4, "size", r"negative \(-0.5\) in a trade row"),
        (bad(9, size=-1.0), 9, "size", r"negative \(-1.0\) in a book row"),
        (bad(4, size=None), 4, "size", "null in a trade row"),
        (bad(3, bid_size=-1.0), 3, "bid_size", r"negative \(-1.0\) in a quote row"),
        (bad(3, ask_size=-2.0), 3, "ask_size", r"negative \(-2.0\) in a quote row"),
        (bad(2, side=0), 2, "side", r"0 in a book row \(must be \+1 bid or -1 ask\)"),
        (bad(4, side=2), 4, "side", r"2 \(must be \+1, -1 or 0\)"),
        (bad(7, kind="fill"), 7, "kind", r"unknown kind 'fill' \(known: trade, quote, book"),
        (bad(5, ts=T0 + 1), 5, "ts", rf"{T0 + 1} is before {T0 + 4} in the previous row \(not sorted\)"),
        (bad(8, ts=None), 8, "ts", "null"),
        (bad(0, symbol=None), 0, "symbol", "null"),
    ],
)
def test_bad_value_is_named_by_file_row_and_column(
    tmp_path: Path, rows: list[dict[str, Any]], row: int, col: str, problem: str
) -> None:
    path = raw_tape(tmp_path / "bad.parquet", rows)
    with pytest.raises(TapeError, match=f"^{re.escape(str(path))} row {row} column {col}: {problem}"):
        validate_tape(path)


def test_null_in_a_column_left_undecoded_is_named_null(tmp_path: Path) -> None:
    # Every rate in the file is null, so the reader does not decode the column (its
    # statistics say so); the funding row's missing rate is still "null", not "NaN".
    rows = [GOOD[4], {"kind": "funding", "symbol": "A", "rate": None, "next_ts": T0 + 10**9}]
    path = raw_tape(tmp_path / "t.parquet", rows)
    with pytest.raises(TapeError, match=r"row 1 column rate: null in a funding row$"):
        validate_tape(path)


def test_first_bad_row_wins_across_checks(tmp_path: Path) -> None:
    rows = bad(4, size=-1.0)
    rows[8]["price"] = float("nan")
    rows[3]["bid"] = 200.0  # crossed: the earliest problem
    path = raw_tape(tmp_path / "t.parquet", rows)
    with pytest.raises(TapeError, match=r"row 3 column bid: crossed quote"):
        validate_tape(path)


def test_unsorted_across_batches_reports_the_file_row(tmp_path: Path) -> None:
    rows = [{"kind": "trade", "symbol": "A", "price": 1.0, "size": 1.0, "ts": T0 + i} for i in range(100)]
    rows[70]["ts"] = T0 + 3
    path = raw_tape(tmp_path / "t.parquet", rows)
    with pytest.raises(TapeError, match=rf"t.parquet row 70 column ts: {T0 + 3} is before {T0 + 69}"):
        list(open_tape(path).batches(batch_rows=10))
    rows[70]["ts"] = T0 + 70
    rows[60]["ts"] = T0 + 1  # first row of a batch: compared with the batch before
    path = raw_tape(tmp_path / "t.parquet", rows)
    with pytest.raises(TapeError, match=rf"t.parquet row 60 column ts: {T0 + 1} is before {T0 + 59}"):
        list(open_tape(path).batches(batch_rows=10))


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.Table.from_pylist([{"ts": T0, **GOOD[4]}], schema=SCHEMA).drop_columns(["bid", "ask", "seq"])
    pq.write_table(table, path)
    with pytest.raises(TapeError, match=f"^{re.escape(str(path))}: missing columns bid, ask, seq$"):
        validate_tape(path)


def test_unvalidated_inspect_counts_a_tape_with_bad_values(tmp_path: Path) -> None:
    path = raw_tape(tmp_path / "t.parquet", bad(4, price=-1.0))
    r = inspect_tape(path)
    assert r.rows == len(GOOD) and not r.validated
    with pytest.raises(TapeError, match="row 4 column price"):
        inspect_tape(path, validate=True)


# -- CLI ---------------------------------------------------------------------------


def run_cli(group: click.Group, args: list[str]) -> str:
    """Run a CLI command; re-raise a PerpsimError as ``perpsim.cli.main`` would see it."""
    result = CliRunner().invoke(group, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_validate_prints_ok_with_rows(tmp_path: Path) -> None:
    path = raw_tape(tmp_path / "good.parquet", GOOD)
    out = run_cli(tapes, ["validate", str(path)])
    assert out.startswith(f"OK {path}: 11 rows, 1 file, 2024-01-01 00:00:00.000Z")


def test_cli_validate_raises_the_first_bad_value(tmp_path: Path) -> None:
    path = raw_tape(tmp_path / "bad.parquet", bad(3, bid=102.0))
    with pytest.raises(TapeError, match=r"bad.parquet row 3 column bid: crossed quote"):
        run_cli(tapes, ["validate", str(path)])
    with pytest.raises(TapeError, match=r"nope.parquet: no such file or folder"):
        run_cli(tapes, ["validate", str(tmp_path / "nope.parquet")])


def test_cli_inspect_shows_counts_and_metadata(tmp_path: Path) -> None:
    df = pl.from_dicts([{"ts": T0 + i, **r} for i, r in enumerate(GOOD)], infer_schema_length=None)
    path = write(df, tmp_path / "t.parquet", instruments={"A": {"tick": 0.5}}, source="unit")
    out = run_cli(tapes, ["inspect", str(path)])
    for text in ("rows per kind", "book_reset", "unit", "instruments", "2024-01-01 00:00:00.000Z"):
        assert text in out
    data = json.loads(run_cli(tapes, ["inspect", str(path), "--json"]))
    assert data["rows"] == 11
    assert data["counts"]["B"] == {"trade": 1}
    assert data["meta"]["clock"] == "ts"
    assert data["meta"]["instruments"]["A"]["tick"] == 0.5
    assert data["start"] == "2024-01-01 00:00:00.000Z"


def test_cli_commands_have_help() -> None:
    for cmd in ("inspect", "validate", "synth", "slice", "merge"):
        assert "Usage:" in run_cli(tapes, [cmd, "--help"])
