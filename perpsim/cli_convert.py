"""``perpsim tapes convert``: a venue recording or funding history → a tape (DESIGN.md §4, §9).

Prints a human summary (rows per kind, skipped lines with the first line numbers, gaps),
or the report as JSON with ``--json``. Exit status 0 when a tape was written, even if
malformed lines were skipped (the summary says how many); 2 for bad input or options,
including the first malformed line under ``--strict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click
import msgspec
from rich.console import Console
from rich.table import Table

from perpsim.cli_tapes import NewTape, codec_option
from perpsim.core.timefmt import fmt_ns
from perpsim.tapes import convert as tapes_convert
from perpsim.tapes.convert import FORMATS, ConvertKind, ConvertReport

__all__ = ["convert", "report_json"]

_SHOW_SKIPPED = 5


def report_json(rep: ConvertReport) -> dict[str, Any]:
    """The report as plain JSON types, with the total and the time range as UTC text."""
    d: dict[str, Any] = msgspec.to_builtins(rep)
    d["rows_total"] = rep.rows_total
    d["start"] = fmt_ns(rep.start_ns) if rep.start_ns is not None else None
    d["end"] = fmt_ns(rep.end_ns) if rep.end_ns is not None else None
    return d


def _print(rep: ConvertReport, console: Console) -> None:
    t = Table(title=f"convert {rep.kind} {rep.source}", show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    size = f" ({rep.size_bytes / 1e6:.2f} MB)" if rep.size_bytes is not None else ""
    t.add_row("tape", f"{rep.out}{size}")
    t.add_row("clock", rep.clock)
    t.add_row("time range", f"{fmt_ns(rep.start_ns)} → {fmt_ns(rep.end_ns)}")
    t.add_row("lines read", f"{rep.lines_read:,}")
    t.add_row("rows", f"{rep.rows_total:,}")
    for kind, n in rep.rows.items():
        t.add_row(f"  {kind}", f"{n:,}")
    if rep.skipped:
        first = ", ".join(str(s.line) for s in rep.skipped_lines[:_SHOW_SKIPPED])
        more = " …" if rep.skipped > _SHOW_SKIPPED else ""
        t.add_row("skipped (malformed)", f"[red]{rep.skipped:,}[/] lines: {first}{more}")
        for s in rep.skipped_lines[:_SHOW_SKIPPED]:
            t.add_row("", f"line {s.line}: {s.reason}")
    else:
        t.add_row("skipped (malformed)", "0")
    t.add_row("gaps", f"{rep.gaps:,}" + (f" (first at line {rep.gap_lines[0].line})" if rep.gaps else ""))
    if rep.ignored:
        t.add_row("ignored", ", ".join(f"{k} {v:,}" for k, v in rep.ignored.items()))
    for k, v in rep.counters.items():
        t.add_row(k.replace("_", " "), f"{v:,}")
    console.print(t)


@click.command("convert")
# eager: converted before --out, which must not be SRC (NewTape)
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True)
@click.option(
    "--from",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="Input format: a Binance USD-M websocket recording, Coinbase Advanced Trade "
    "messages (one per line, optionally '<recv_ns> <json>'), or a funding-rate CSV.",
)
@click.option(
    "--out", "-o", type=NewTape(source="src"), required=True, help="Tape to write (.parquet); must not exist yet."
)
@click.option("--strict", is_flag=True, help="Stop at the first malformed line (exit 2) instead of skipping it.")
@click.option("--symbol", help="Tape symbol for every row (single-symbol inputs). Default: the venue's name.")
@click.option(
    "--utc-offset",
    type=float,
    metavar="HOURS",
    help="funding-csv: hours east of UTC of the CSV dates. Default by venue in the file "
    "name: binance +3, bybit +3, dydx 0.",
)
@codec_option()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert(
    src: Path,
    fmt: str,
    out: Path,
    strict: bool,
    symbol: str | None,
    utc_offset: float | None,
    codec: str,
    as_json: bool,
) -> None:
    """Convert a venue recording SRC into a tape.

    \b
    Examples:
      perpsim tapes convert --from binance btcusdt_20240808.gz --out btcusdt.parquet
      perpsim tapes convert --from coinbase capture.jsonl --out cb.parquet
      perpsim tapes convert --from funding-csv BTC-USDT_binance.csv --out f.parquet --symbol BTCUSDT
    """
    rep = tapes_convert.convert(
        cast(ConvertKind, fmt),  # click.Choice guarantees one of FORMATS
        src,
        out,
        strict=strict,
        symbol=symbol,
        utc_offset_h=utc_offset,
        codec=codec,
    )
    if as_json:
        click.echo(json.dumps(report_json(rep), indent=2))
    else:
        _print(rep, Console())
