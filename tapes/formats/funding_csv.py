"""Funding-rate history CSVs → ``funding`` settlement rows and schedules (DESIGN.md §4).

Input: CSV with a header ``Symbol, Date, Funding Rate`` (the layout of
supervik/historical-funding-rates-fetcher), one settled rate per row. Each row becomes a
``funding`` row: a settlement at its time, ``rate`` the settled rate, ``next_ts`` the next
row's time for the same symbol (null on the last one: the history does not say).

Dates carry no zone. Their offset from UTC depends on who wrote the file, so it is an
option; the defaults, chosen by the venue named in the file name, are those of the
fetcher's published histories:

==========  ===========  =========================================
venue       UTC offset   why
==========  ===========  =========================================
binance     +3 h         written in the fetcher's local time (UTC+3)
bybit       +3 h         same
dydx        0            dYdX reports UTC
==========  ===========  =========================================

So ``2020-01-01 03:00:00.000`` in a Binance file is the 00:00 UTC settlement. A file whose
name names none of these needs ``utc_offset_h`` (``--utc-offset``). A date that carries its
own zone (``…+00:00``, ``…Z``) is taken as written.

:func:`funding_schedule` returns the same settlements as numpy arrays, for a venue model
that charges funding from a history rather than from tape rows.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from perpsim.core.errors import ConfigError, TapeError
from perpsim.core.events import Flags, Kind
from perpsim.tapes.formats import ConvertReport, RowBuffer

__all__ = [
    "VENUE_UTC_OFFSETS",
    "FundingSeries",
    "convert_funding_csv",
    "default_utc_offset",
    "funding_schedule",
    "read_funding_csv",
]

VENUE_UTC_OFFSETS: Final[dict[str, float]] = {"binance": 3.0, "bybit": 3.0, "dydx": 0.0}
"""Default UTC offset (hours) of the dates in a history file, by the venue in its name."""

_COLUMNS: Final = ("symbol", "date", "funding rate")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EOM: Final = int(Flags.END_OF_MESSAGE)


class FundingSeries(msgspec.Struct, kw_only=True):
    """Settlements of one symbol, sorted by time.

    Attributes:
        symbol: the tape symbol.
        ts: settlement times, int64 ns UTC.
        rate: settled rates, float64 (a long pays a positive rate).
    """

    symbol: str
    ts: Any
    rate: Any

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def default_utc_offset(path: str | Path) -> float | None:
    """The default UTC offset of a history file's dates, from the venue in its name.

    Returns:
        Hours east of UTC, or None when the name names no known venue.
    """
    name = Path(path).name.lower()
    for venue, off in VENUE_UTC_OFFSETS.items():
        if venue in name:
            return off
    return None


def _to_ns(text: str, tz: timezone) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def read_funding_csv(
    src: str | Path,
    *,
    utc_offset_h: float | None = None,
    symbol: str | None = None,
    strict: bool = False,
) -> tuple[list[FundingSeries], ConvertReport]:
    """Read a funding history CSV into per-symbol series.

    Args:
        src: the CSV file.
        utc_offset_h: hours east of UTC of the dates; None picks the venue default
            (:data:`VENUE_UTC_OFFSETS`) from the file name.
        symbol: the tape symbol for every row (default: the ``Symbol`` column).
        strict: raise at the first malformed row instead of skipping it.

    Returns:
        One series per symbol (in first-seen order) and the report (no rows yet).

    Raises:
        ConfigError: no offset given and none can be inferred from the file name.
        TapeError: the file cannot be read, lacks a column, or (``strict``) a row is bad;
            the message names the file, line and column.
    """
    path = Path(src)
    if utc_offset_h is None:
        utc_offset_h = default_utc_offset(path)
        if utc_offset_h is None:
            raise ConfigError(
                f"{path}: cannot tell the UTC offset of its dates from the file name "
                f"(known venues: {', '.join(VENUE_UTC_OFFSETS)}); pass --utc-offset HOURS"
            )
    if not (-14.0 <= utc_offset_h <= 14.0) or math.isnan(utc_offset_h):
        raise ConfigError(f"--utc-offset {utc_offset_h!r} is not an offset in hours (-14..14)")
    tz = timezone(timedelta(hours=utc_offset_h))
    rep = ConvertReport(kind="funding-csv", source=str(path), clock="ts")
    rep.counters["utc_offset_min"] = round(utc_offset_h * 60)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TapeError(f"{path}: cannot read funding CSV: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise TapeError(f"{path}: empty file, expected a header Symbol,Date,Funding Rate")
    names = [h.strip().lower() for h in header]
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise TapeError(
            f"{path} line 1: missing column {', '.join(repr(m) for m in missing)} (header: {','.join(header)})"
        )
    i_sym, i_date, i_rate = (names.index(c) for c in _COLUMNS)
    width = max(i_sym, i_date, i_rate) + 1
    per: dict[str, tuple[list[int], list[float]]] = {}

    def bad(line: int, reason: str) -> None:
        if strict:
            raise TapeError(f"{path} line {line}: {reason}")
        rep.skip(line, reason)

    for rec in reader:
        line = reader.line_num
        if not rec or all(not c.strip() for c in rec):
            continue
        rep.lines_read += 1
        if len(rec) < width:
            bad(line, f"expected {width} columns, found {len(rec)}")
            continue
        date_s, rate_s = rec[i_date].strip(), rec[i_rate].strip()
        try:
            ts = _to_ns(date_s, tz)
        except ValueError:
            bad(line, f"column Date: {date_s!r} is not a date")
            continue
        try:
            rate = float(rate_s)
        except ValueError:
            bad(line, f"column Funding Rate: {rate_s!r} is not a number")
            continue
        if not math.isfinite(rate):
            bad(line, f"column Funding Rate: {rate_s!r} is not a finite number")
            continue
        sym = symbol or rec[i_sym].strip()
        if not sym:
            bad(line, "column Symbol: empty")
            continue
        ts_list, rate_list = per.setdefault(sym, ([], []))
        ts_list.append(ts)
        rate_list.append(rate)

    series: list[FundingSeries] = []
    unsorted = 0
    for sym, (ts_list, rate_list) in per.items():
        ts_arr = np.asarray(ts_list, dtype=np.int64)
        rate_arr = np.asarray(rate_list, dtype=np.float64)
        if ts_arr.size > 1 and bool(np.any(ts_arr[1:] < ts_arr[:-1])):
            order = np.argsort(ts_arr, kind="stable")
            unsorted += int(np.count_nonzero(order != np.arange(order.size)))
            ts_arr, rate_arr = ts_arr[order], rate_arr[order]
        series.append(FundingSeries(symbol=sym, ts=ts_arr, rate=rate_arr))
    rep.counters["rows_reordered"] = unsorted
    return series, rep


def funding_schedule(
    src: str | Path, *, utc_offset_h: float | None = None, symbol: str | None = None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Settlement times (int64 ns UTC) and rates (float64) of a single-symbol history.

    For a venue model that charges funding from a history (DESIGN.md §4 ``funding``
    semantics: at each time, a long pays ``qty * contract_size * mark * rate``).
    Malformed rows are skipped, as in a conversion.

    Raises:
        ConfigError: as :func:`read_funding_csv`, or the file holds several symbols and
            ``symbol`` does not pick one.
        TapeError: as :func:`read_funding_csv`.
    """
    series, _ = read_funding_csv(src, utc_offset_h=utc_offset_h)
    if symbol is not None:
        picked = [s for s in series if s.symbol == symbol]
        if not picked and len(series) == 1:
            picked = series  # a single-symbol file under another name (BTC-USDT vs BTCUSDT)
    else:
        picked = series
    if len(picked) != 1:
        have = ", ".join(s.symbol for s in series) or "none"
        raise ConfigError(f"{src}: expected one symbol's history, found {have}; pick one")
    return picked[0].ts, picked[0].rate


def convert_funding_csv(
    src: str | Path,
    *,
    utc_offset_h: float | None = None,
    symbol: str | None = None,
    strict: bool = False,
) -> tuple[RowBuffer, ConvertReport]:
    """Convert a funding history CSV to ``funding`` tape rows (clock ``ts``; ``recv_ts == ts``).

    Args: as :func:`read_funding_csv`.

    Returns:
        The rows and the report.
    """
    series, rep = read_funding_csv(src, utc_offset_h=utc_offset_h, symbol=symbol, strict=strict)
    rows = RowBuffer()
    for s in series:
        ts = s.ts.tolist()
        rate = s.rate.tolist()
        n = len(ts)
        for i in range(n):
            rows.add(
                Kind.FUNDING,
                ts[i],
                ts[i],
                s.symbol,
                rate=rate[i],
                next_ts=ts[i + 1] if i + 1 < n else None,
                flags=_EOM,
            )
    rep.rows = rows.counts()
    return rows, rep
