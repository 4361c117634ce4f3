"""``perpsim tapes ...``: inspect, validate, synthesize, slice and merge tapes (DESIGN.md §9).

Errors are raised as :class:`~perpsim.core.errors.TapeError` / ``InputError``;
``perpsim.cli.main`` prints them as one line and exits 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from perpsim.core.errors import InputError
from perpsim.core.events import KIND_NAMES
from perpsim.core.timefmt import fmt_ns, parse_time_ns
from perpsim.tapes.reader import Tape, open_tape
from perpsim.tapes.schema import CODECS, DEFAULT_CODEC, SCHEMA, TapeMeta
from perpsim.tapes.synth import parse_shock, synth
from perpsim.tapes.validate import TapeReport, inspect_tape, validate_tape
from perpsim.tapes.writer import TapeWriter, write_table

__all__ = ["OUT_TAPE", "NewTape", "codec_option", "report_dict", "tapes"]

_TAPE = click.Path(path_type=Path)


class NewTape(click.Path):
    """The file a command writes, refused when it already exists (exit 2, one line) before
    any work: a tape is replaced by a rename, so a typo in --out would silently lose one.

    Args:
        source: the name of the command's input argument, declared ``is_eager`` so it is
            converted first: an --out that is that file is reported as such, not as one
            to remove.
    """

    def __init__(self, *, source: str | None = None) -> None:
        super().__init__(dir_okay=False, path_type=Path)
        self.source = source

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        """The path, checked.

        Raises:
            InputError: the path exists (also a dangling link, which a rename replaces).
        """
        path = super().convert(value, param, ctx)  # a folder: click's one-line usage error
        assert isinstance(path, Path)
        if not (path.exists() or path.is_symlink()):
            return path
        opt = param.opts[0] if param is not None else "--out"
        name = self.source
        src = ctx.params.get(name) if ctx is not None and name else None
        if name and src is not None and path.exists() and path.samefile(src):
            raise InputError(f"{opt} {path}: is {name.upper()} itself; writing the tape would replace the recording")
        raise InputError(f"{opt} {path}: already exists; choose another name or remove it")


OUT_TAPE = NewTape()

_CODEC_HELP = (
    "Compression: lz4 reads fastest; zstd makes files 2-15% smaller and reads in 1.3-1.4 times as long, for archives."
)


def codec_option(*, copies: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--codec`` option; a command that copies tapes keeps theirs by default."""
    if copies:
        return click.option(
            "--codec", type=click.Choice(CODECS), help=f"{_CODEC_HELP} Default: the source's (else {DEFAULT_CODEC})."
        )
    choice = click.Choice(CODECS)
    return click.option("--codec", type=choice, default=DEFAULT_CODEC, show_default=True, help=_CODEC_HELP)


def _source_codec(*opened: Tape) -> str:
    """The codec of the tapes being copied when they share one perpsim writes, else lz4."""
    found = {c for t in opened for c in t.codecs}
    return found.pop() if len(found) == 1 and found <= set(CODECS) else DEFAULT_CODEC


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def tapes() -> None:
    """Inspect, validate, generate, slice and merge tapes (Parquet market data)."""


def report_dict(r: TapeReport) -> dict[str, Any]:
    """A tape report as plain JSON types, times also as UTC ISO text."""
    d: dict[str, Any] = msgspec.to_builtins(r)
    d["start"] = fmt_ns(r.start_ns) if r.start_ns is not None else None
    d["end"] = fmt_ns(r.end_ns) if r.end_ns is not None else None
    return d


def _print_report(r: TapeReport, console: Console) -> None:
    meta = r.meta
    head = Table(title=f"tape {r.path}", show_header=False, title_justify="left")
    head.add_column("what", style="bold")
    head.add_column("value")
    head.add_row("rows", f"{r.rows:,}")
    head.add_row("files", str(len(r.files)) if len(r.files) > 1 else r.files[0])
    head.add_row("clock", meta.clock)
    head.add_row("time range", f"{fmt_ns(r.start_ns)} → {fmt_ns(r.end_ns)}")
    head.add_row("symbols", ", ".join(r.symbols) or "-")
    head.add_row("source", meta.source)
    head.add_row("schema version", str(meta.schema_version))
    head.add_row("compression", ", ".join(r.codecs) or "-")
    if meta.timers:
        head.add_row("timers", ", ".join(f"{t.name}/{t.interval_ns / 1e9:g}s" for t in meta.timers))
    head.add_row("validated", "yes" if r.validated else "no")
    console.print(head)

    kinds = [k for k in KIND_NAMES if any(k in c for c in r.counts.values())]
    counts = Table(title="rows per kind", title_justify="left")
    counts.add_column("symbol", style="bold")
    for k in kinds:
        counts.add_column(k, justify="right")
    counts.add_column("total", justify="right")
    for sym in r.symbols:
        c = r.counts[sym]
        counts.add_row(sym, *(f"{c.get(k, 0):,}" for k in kinds), f"{sum(c.values()):,}")
    console.print(counts)

    if meta.instruments:
        ins = Table(title="instruments (tape metadata)", title_justify="left")
        for col in ("symbol", "tick", "lot", "contract", "kind", "maint.", "funding"):
            ins.add_column(col, justify="left" if col in ("symbol", "kind") else "right")
        for sym, i in sorted(meta.instruments.items()):
            ins.add_row(
                sym,
                "-" if i.tick is None else f"{i.tick:g}",
                f"{i.lot:g}",
                f"{i.contract_size:g}",
                i.kind,
                f"{i.maintenance_rate:g}",
                f"{i.funding_interval_s}s",
            )
        console.print(ins)


@tapes.command()
@click.argument("tape", type=_TAPE, nargs=-1, required=True)
@click.option("--validate/--no-validate", default=False, help="Also validate every row.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(tape: tuple[Path, ...], validate: bool, as_json: bool) -> None:
    """Show what TAPE holds: rows, files, time range, symbols, rows per kind, metadata.

    TAPE is a Parquet file or a folder of them (several are read in order).
    """
    r = inspect_tape(_one(tape), validate=validate)
    if as_json:
        click.echo(json.dumps(report_dict(r), indent=2))
    else:
        _print_report(r, Console())


@tapes.command()
@click.argument("tape", type=_TAPE, nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(tape: tuple[Path, ...], as_json: bool) -> None:
    """Check every row of TAPE; print OK with the row count, or the first bad value.

    A bad value is reported as "<file> row <n> column <col>: <problem>" (exit 2).
    """
    r = validate_tape(_one(tape))
    if as_json:
        click.echo(json.dumps(report_dict(r), indent=2))
    else:
        click.echo(
            f"OK {r.path}: {r.rows:,} rows, {len(r.files)} file{'s' * (len(r.files) != 1)}, "
            f"{fmt_ns(r.start_ns)} → {fmt_ns(r.end_ns)}"
        )


@tapes.command(name="synth")
@click.option("--hours", type=float, required=True, help="Tape length in hours (> 0, at least 1 ns).")
@click.option("--symbols", required=True, help="Comma-separated, e.g. BTC-PERP,ETH-PERP.")
@click.option("--seed", type=int, required=True, help="Seed; the same arguments give the same bytes.")
@click.option("--out", type=OUT_TAPE, required=True, help="The Parquet file to write (must not exist yet).")
@click.option(
    "--trades-per-min", type=float, default=30, show_default=True, help="Per symbol; >= 0, at most 1e8 over the tape."
)
@click.option(
    "--quotes-per-min", type=float, default=60, show_default=True, help="Per symbol; >= 0, at most 1e8 over the tape."
)
@click.option("--start", help="First row time (ISO 8601 UTC or ns; default 2024-01-01T00:00Z).")
@click.option("--funding-interval", type=int, default=3600, show_default=True, help="Seconds.")
@click.option(
    "--shock",
    help="AT_H:PCT:OVER_H, e.g. 2:-30:1 = -30% during hour 2-3. AT_H inside the tape, "
    "PCT in (-100, 10000], OVER_H in [0, 1e6].",
)
@click.option("--l2", is_flag=True, help="Also write a level-2 book (snapshot and updates).")
@click.option(
    "--marks",
    type=float,
    help="Also write mark rows every this many seconds: at least 1e-9, at most the tape's length, "
    "at most 1e8 marks per symbol.",
)
@codec_option()
def synth_cmd(
    hours: float,
    symbols: str,
    seed: int,
    out: Path,
    trades_per_min: float,
    quotes_per_min: float,
    start: str | None,
    funding_interval: int,
    shock: str | None,
    l2: bool,
    marks: float | None,
    codec: str,
) -> None:
    """Generate a seeded synthetic tape: random-walk prices with volatility regimes,
    Poisson trades and quotes, hourly funding, optional shock and L2 book."""
    kwargs: dict[str, Any] = {}
    if start is not None:
        kwargs["start_ns"] = parse_time_ns(start, what="--start")
    path = synth(
        hours=hours,
        symbols=[s.strip() for s in symbols.split(",") if s.strip()],
        seed=seed,
        out=out,
        trades_per_min=trades_per_min,
        quotes_per_min=quotes_per_min,
        funding_interval_s=funding_interval,
        shock=parse_shock(shock) if shock else None,
        l2=l2,
        mark_interval_s=marks,
        codec=codec,
        **kwargs,
    )
    t = open_tape(path)
    click.echo(f"wrote {path}: {t.num_rows:,} rows, {path.stat().st_size / 1e6:.1f} MB")


def clock_window(tape: Tape, start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """``--start`` and ``--end`` as clock values, checked against each other and the tape.

    Raises:
        InputError: a time that cannot be read, an end not after the start, or a window
            that holds none of the tape's rows (its span known from metadata or footers).
    """
    lo = parse_time_ns(start, what="--start") if start else None
    hi = parse_time_ns(end, what="--end") if end else None
    if lo is not None and hi is not None and hi <= lo:
        raise InputError(f"--end {end} is not after --start {start}")
    first, last = tape.meta.start_ns, tape.meta.end_ns
    if first is not None and last is not None and ((lo is not None and lo > last) or (hi is not None and hi <= first)):
        asked = f"--start {start}" if lo is not None and lo > last else f"--end {end}"
        span = f"{fmt_ns(first)} → {fmt_ns(last)}"
        raise InputError(f"{asked}: no row of the tape is in the window (its rows run {span})")
    return lo, hi


@tapes.command(name="slice")
@click.argument("tape", type=_TAPE, nargs=-1, required=True)
@click.option("--start", help="Keep rows at or after this clock time (ISO 8601 UTC or ns).")
@click.option("--end", help="Keep rows before this clock time.")
@click.option("--out", type=OUT_TAPE, required=True, help="The Parquet file to write (must not exist yet).")
@codec_option(copies=True)
def slice_cmd(tape: tuple[Path, ...], start: str | None, end: str | None, out: Path, codec: str | None) -> None:
    """Copy the rows of TAPE whose clock value is in [--start, --end) to --out (streaming).

    Without --start and --end it copies the whole tape: to change its --codec, or to
    compact a live recording's folder of small files into one tape that replays faster.
    """
    src = open_tape(_one(tape))
    lo, hi = clock_window(src, start, end)
    meta = msgspec.structs.replace(src.meta, source=f"slice of {src.meta.source}")
    tmp = out.with_name(f".{out.name}.slice.tmp")
    try:
        with TapeWriter(tmp, meta, validate=False, name=str(out), codec=codec or _source_codec(src)) as w:
            for rb in src.record_batches(start_ns=lo, end_ns=hi):
                w.write(rb)
            warm = w.meta.warm
            if warm is not None and (lo is not None or w.rows < warm.rows):
                # a warm recording's first rows are its warm-up: without all of them, no warm start
                w.meta = msgspec.structs.replace(w.meta, warm=None)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {out}: {w.rows:,} rows, {fmt_ns(w.start_ns)} → {fmt_ns(w.end_ns)}")


@tapes.command()
@click.argument("tape", type=_TAPE, nargs=-1, required=True)
@click.option("--out", type=OUT_TAPE, required=True, help="The Parquet file to write (must not exist yet).")
@codec_option(copies=True)
def merge(tape: tuple[Path, ...], out: Path, codec: str | None) -> None:
    """Merge several TAPEs (e.g. one per symbol) into one tape sorted by the clock column.

    Ties keep the order of the arguments, then row order. The tapes are read into
    memory; they must share a clock column.
    """
    if len(tape) < 2:
        raise InputError("merge: give at least two tapes")
    clock = open_tape(list(tape)).meta.clock  # refuses a file given twice, or clocks that differ
    opened = [open_tape(t) for t in tape]
    tables = [pa.Table.from_batches(list(t.record_batches()), schema=SCHEMA) for t in opened]
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    order = pc.sort_indices(table, sort_keys=[(clock, "ascending")])  # stable: ties keep order
    table = table.take(order)
    instruments: dict[str, Any] = {}
    for t in opened:
        for sym, ins in t.instruments.items():
            instruments.setdefault(sym, ins)
    meta = TapeMeta(
        clock=clock,
        source="merge of " + "; ".join(t.meta.source for t in opened),
        instruments=instruments,
        timers=opened[0].meta.timers,
    )
    write_table(table, out, meta, codec=codec or _source_codec(*opened))
    click.echo(f"wrote {out}: {table.num_rows:,} rows from {len(tape)} tapes")


def _one(paths: tuple[Path, ...]) -> Path | list[Path]:
    return paths[0] if len(paths) == 1 else list(paths)
