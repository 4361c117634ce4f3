"""Convert venue recordings to tapes: one entry point for every input format (DESIGN.md §4).

:func:`convert` picks the format module, collects its rows, sorts them by the tape's
clock column (stably, so rows of one message stay together), and writes a validated
Parquet tape with :func:`perpsim.tapes.writer.write_table` (atomically: a failed
conversion leaves no file). The returned :class:`ConvertReport` says what was read,
written, skipped (with line numbers) and ignored; ``perpsim tapes convert`` prints it.

Formats:

- ``binance``: a Binance USD-M websocket recording (:mod:`.formats.binance`), clock
  ``recv_ts``.
- ``coinbase``: Coinbase Advanced Trade messages, one per line, optionally
  ``<recv_ns> <json>`` (:mod:`.formats.coinbase`), clock ``recv_ts``.
- ``funding-csv``: a funding-rate history (:mod:`.formats.funding_csv`), clock ``ts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np

from perpsim.core.errors import ConfigError, InputError, TapeError
from perpsim.core.instruments import Instrument, resolve
from perpsim.tapes.formats import ConvertReport, RowBuffer, Skipped
from perpsim.tapes.formats.binance import convert_binance
from perpsim.tapes.formats.coinbase import ALL_SYMBOLS, convert_coinbase
from perpsim.tapes.formats.funding_csv import convert_funding_csv
from perpsim.tapes.schema import DEFAULT_CODEC, ROW_GROUP_ROWS, TapeMeta
from perpsim.tapes.writer import write_table

__all__ = ["FORMATS", "ConvertKind", "ConvertReport", "Skipped", "convert", "read_rows"]

ConvertKind = Literal["binance", "coinbase", "funding-csv"]
FORMATS: Final[tuple[str, ...]] = get_args(ConvertKind)


def read_rows(
    kind: ConvertKind,
    src: str | Path,
    *,
    strict: bool = False,
    symbol: str | None = None,
    utc_offset_h: float | None = None,
) -> tuple[RowBuffer, ConvertReport]:
    """Parse ``src`` into unsorted tape rows without writing anything (tests, previews).

    Raises:
        ConfigError: an unknown format, or an option the format does not take.
        TapeError: as :func:`convert`.
    """
    if kind not in FORMATS:
        raise ConfigError(f"--from {kind!r}: unknown format (known: {', '.join(FORMATS)})")
    if utc_offset_h is not None and kind != "funding-csv":
        raise ConfigError(f"--utc-offset applies to funding-csv only, not {kind}")
    path = Path(src)
    if not path.is_file():
        raise TapeError(f"{path}: no such file")
    if kind == "binance":
        return convert_binance(path, symbol=symbol, strict=strict)
    if kind == "coinbase":
        return convert_coinbase(path, symbol=symbol, strict=strict)
    return convert_funding_csv(path, utc_offset_h=utc_offset_h, symbol=symbol, strict=strict)


def convert(
    kind: ConvertKind,
    src: str | Path,
    out: str | Path,
    *,
    strict: bool = False,
    symbol: str | None = None,
    utc_offset_h: float | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    codec: str = DEFAULT_CODEC,
) -> ConvertReport:
    """Convert a recording to a tape file.

    Args:
        kind: the input format: ``binance``, ``coinbase`` or ``funding-csv``.
        src: the input file (gzip is detected for the websocket recordings).
        out: the tape to write (replaced atomically; parent folders are created).
        strict: raise at the first malformed line instead of skipping and counting it.
        symbol: the tape symbol for every row (single-symbol inputs); default: the
            venue's own name mapped through the instrument table.
        utc_offset_h: ``funding-csv`` only: hours east of UTC of the CSV's dates
            (default by venue in the file name: Binance/Bybit +3, dYdX 0).
        row_group_rows: rows per Parquet row group.
        codec: ``lz4`` or ``zstd`` (:class:`~perpsim.tapes.writer.TapeWriter`).

    Returns:
        The report, with ``out``, ``size_bytes``, ``start_ns``/``end_ns`` and
        ``counters["rows_reordered"]`` (rows the clock sort moved) filled in.

    Raises:
        ConfigError: an unknown format or an inapplicable option.
        TapeError: the input cannot be read, (``strict``) a malformed line, nothing
            convertible in the input, or the rows fail tape validation; the message
            names the file and line (or row and column).
        InputError: ``out`` is ``src`` itself (by any spelling or link), which it would replace.
    """
    if Path(out).exists() and Path(out).samefile(src):
        raise InputError(f"--out {out}: is SRC itself; writing the tape would replace the recording")
    rows, rep = read_rows(kind, src, strict=strict, symbol=symbol, utc_offset_h=utc_offset_h)
    if len(rows) == 0:
        raise TapeError(
            f"{src}: nothing to convert ({rep.lines_read} lines read, {rep.skipped} malformed"
            f"{', first at line ' + str(rep.skipped_lines[0].line) if rep.skipped_lines else ''})"
        )
    table, moved = rows.table(clock=rep.clock)
    rep.counters["rows_reordered"] = moved
    symbols = sorted(set(table.column("symbol").combine_chunks().dictionary.to_pylist()))
    instruments: dict[str, Instrument] = {}
    for sym in symbols:
        if sym == ALL_SYMBOLS:
            continue
        ins, fallback = resolve(sym)
        if not fallback:
            instruments[sym] = ins
    clock_col = table.column(rep.clock).to_numpy()
    meta = TapeMeta(
        clock="recv_ts" if rep.clock == "recv_ts" else "ts",
        source=f"{kind}:{Path(src).name}",
        instruments=instruments,
    )
    out_path = Path(out)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_path}: cannot create its folder: {exc}") from exc
    write_table(table, out_path, meta, row_group_rows=row_group_rows, codec=codec)
    rep.out = str(out_path)
    rep.size_bytes = out_path.stat().st_size
    rep.start_ns = int(np.min(clock_col))
    rep.end_ns = int(np.max(clock_col))
    return rep
