"""``perpsim sweep GRID.toml`` (and the body of ``drift --many``): work fanned out to a pool or Dask.

The work is :func:`perpsim.sim.sweep.run_sweep` (DESIGN.md §8); this module only
parses options and prints. Bad grids and unreachable schedulers raise
``ConfigError``/``InputError``, which ``perpsim.cli.main`` prints as one line
with exit status 2; a sweep in which some jobs failed prints them and exits 1
(``CheckFailed``) after the results table is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
from rich import box
from rich.console import Console
from rich.table import Table

from perpsim.core.errors import CheckFailed, ConfigError

if TYPE_CHECKING:  # the CLI imports this module at start-up; polars and the sweep load on use
    from perpsim.sim.drift_many import DriftManyReport
    from perpsim.sim.sweep import SweepReport

__all__ = ["drift_many_cli", "print_drift_many", "print_sweep", "sweep"]

_SHOWN_FAILURES = 10


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def print_sweep(report: SweepReport, console: Console, *, top: int = 10) -> None:
    """The human summary: the best ``top`` jobs by PnL over the whole table, then counts.

    Args:
        report: what :func:`~perpsim.sim.sweep.run_sweep` returned.
        console: where to print.
        top: how many rows of the ranking to show (0: none).
    """
    frame = report.table
    ok = frame.filter(frame["status"] == "ok")
    params = [c for c in frame.columns if c.startswith("param.")]
    if top > 0 and ok.height:
        best = ok.sort(["pnl", "key"], descending=[True, False], nulls_last=True).head(top)
        many_profiles = ok["profile"].n_unique() > 1
        t = Table(
            title=f"sweep {report.name}: top {best.height} of {ok.height} by PnL (USD)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            show_edge=False,
        )
        heads = ["#", "tape", *(["profile"] if many_profiles else []), *(p.removeprefix("param.") for p in params)]
        for col in heads:
            t.add_column(col, justify="right" if col == "#" else "left", no_wrap=True)
        for col in ("PnL", "fees", "max DD", "trades", "Sharpe"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("digest", no_wrap=True)
        for n, row in enumerate(best.iter_rows(named=True), 1):
            t.add_row(
                str(n),
                Path(row["tape"]).name,
                *([row["profile"]] if many_profiles else []),
                *(str(row[p]) for p in params),
                _num(row["pnl"]),
                _num(row["fees"]),
                _num(row["max_drawdown"]),
                _num(row["trades"]),
                _num(row["sharpe"]),
                row["digest"][:8],
            )
        console.print(t)
    line = (
        f"{report.jobs} jobs: {report.ran} ran ({report.ok} ok, {report.failed} failed), "
        f"{report.skipped} already in the table"
    )
    if report.duplicates:
        line += f", {report.duplicates} duplicate(s) dropped"
    if report.failed_earlier:
        line += f"; {report.failed_earlier} failed earlier (--retry-failed re-runs them)"
    if report.groups:  # groups of jobs that replayed to a result, each from one decode of its tape
        line += f"; {report.groups} tape decode{'s' if report.groups != 1 else ''}"
    console.print(f"{line}; {report.wall_s:.2f} s → {report.results}", soft_wrap=True)


def _check_timeout(seconds: float) -> None:
    """Refuse a --timeout Dask cannot take (NaN and inf fail inside it with a KeyError)."""
    if not 0 < seconds < math.inf:
        raise ConfigError(f"--timeout must be a positive number of seconds, not {seconds:g}")


def _failures(report: SweepReport) -> list[dict[str, Any]]:
    return [
        {"key": r["key"], "tape": r["tape"], "params": _params(r), "error": r["error"], "attempts": r["attempts"]}
        for r in report.rows
        if r["status"] != "ok"
    ]


def _params(row: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("param."): v for k, v in row.items() if k.startswith("param.")}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("grid", type=click.Path(path_type=Path))
@click.option(
    "--workers", type=int, help="Local worker processes (default: the cores this process may use; 0 = in this process)."
)
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="Run the jobs on this Dask scheduler instead.")
@click.option(
    "--timeout",
    "connect_timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to reach the scheduler and see a worker.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Sweep folder (default runs/sweep-<name>).")
@click.option("--retry-failed", is_flag=True, help="Re-run jobs recorded as failed (default: skip every known job).")
@click.option("--top", type=int, default=10, show_default=True, help="Rows of the best-PnL table to print.")
@click.option("--dry-run", is_flag=True, help="Check the grid and count its jobs; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def sweep(
    grid: Path,
    workers: int | None,
    scheduler: str | None,
    connect_timeout: float,
    out: Path | None,
    retry_failed: bool,
    top: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Replay every combination of GRID.toml's tapes, profiles and parameters.

    Jobs run on a local process pool, or on a Dask cluster with --scheduler (its
    workers need perpsim installed and the tapes at the same paths); a worker
    replays a group of one tape's jobs (up to 16) from one decode of the tape. Each
    job becomes one row of OUT/results.parquet: parameters, tape, digest, PnL, fees,
    funding, max drawdown, trades, Sharpe, events/s, wall time, status and error.
    A failing job is retried once, then recorded; the sweep goes on. Running the
    same grid again skips jobs already in the table (keyed by tape hashes, config
    and perpsim version). Every job's config and strategy are checked before any
    runs, so a combination the strategy refuses (short >= long) fails the grid.
    Exit status: 0 all jobs ok, 1 some failed, 2 bad grid or unreachable scheduler.

    \b
    Example grid:
        tapes = ["tapes/*.parquet"]
        [params]
        short = [3, 5, 8]
        long = {start = 10, stop = 30, step = 10}
    """
    from perpsim.sim.sweep import expand, load_grid, run_sweep

    if scheduler is not None and workers is not None:
        raise ConfigError("--workers and --scheduler exclude each other (a cluster brings its own workers)")
    _check_timeout(connect_timeout)
    g = load_grid(grid)
    if dry_run:
        jobs, dropped = expand(g)
        info = {"sweep": g.name, "jobs": len(jobs), "duplicates": dropped, "tapes": g.tapes, "params": g.params}
        if as_json:
            click.echo(json.dumps(info, indent=2))
        else:
            click.echo(f"sweep {g.name}: {len(jobs)} jobs over {len(g.tapes)} tape(s); nothing run (--dry-run)")
        return
    console = Console(stderr=True)
    report = run_sweep(
        g,
        out=out,
        workers=workers,
        scheduler=scheduler,
        connect_timeout=connect_timeout,
        retry_failed=retry_failed,
        progress=console.is_terminal and not as_json,
    )
    failures = _failures(report)
    if as_json:
        frame = report.table
        ok = frame.filter(frame["status"] == "ok") if frame.height else frame
        best = ok.sort(["pnl", "key"], descending=[True, False], nulls_last=True).head(max(top, 0)) if ok.height else ok
        data = {
            "sweep": report.name,
            "out": report.out,
            "results": report.results,
            "jobs": report.jobs,
            "ran": report.ran,
            "skipped": report.skipped,
            "ok": report.ok,
            "failed": report.failed,
            "duplicates": report.duplicates,
            "groups": report.groups,
            "failed_earlier": report.failed_earlier,
            "wall_s": report.wall_s,
            "top": best.to_dicts(),
            "failures": failures,
        }
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        print_sweep(report, Console(), top=top)
        for f in failures[:_SHOWN_FAILURES]:
            click.echo(f"failed: {Path(f['tape']).name} {f['params']}: {f['error']}", err=True)
        if len(failures) > _SHOWN_FAILURES:
            click.echo(f"failed: ... and {len(failures) - _SHOWN_FAILURES} more (status/error columns)", err=True)
    if failures:
        raise CheckFailed(f"sweep {report.name}: {len(failures)} of {report.ran} jobs failed; see {report.results}")


def print_drift_many(report: DriftManyReport, console: Console) -> None:
    """The human summary of ``drift --many``: one line per pair that is not ok, then counts."""
    t = Table(title="drift over many runs", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("status", "run A", "run B", "why"):
        t.add_column(col, no_wrap=col != "why")
    for r in report.rows:
        if r["status"] != "ok":
            why = r["failed_checks"] or r["error"] or ""
            t.add_row(r["status"], Path(r["run_a"] or "-").name, Path(r["run_b"] or "-").name, why)
    if t.row_count:
        console.print(t)
    console.print(
        f"{report.pairs} pairs: {report.ok} ok, {report.drift} drifted, {report.errors} could not be compared; "
        f"{report.unpaired} unpaired; {report.wall_s:.2f} s" + (f" → {report.results}" if report.results else ""),
        soft_wrap=True,
    )


def drift_many_cli(
    a: Path,
    b: Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    thresholds: Any = None,
    force: bool = False,
    timing_tolerance_ns: int = 0,
    out: Path | None = None,
    as_json: bool = False,
) -> None:
    """The body of ``perpsim drift --many A B``: run, print, and fail when any pair is not ok.

    For the ``drift`` command to call with its own parsed options. Runs pair as
    :func:`perpsim.sim.drift_many.pair_runs` says: equal tape hashes and config, or the
    tape alone, whatever the configs, when it has exactly one run on each side.

    Raises:
        InputError: no runs under A or B, an unreachable scheduler (exit 2).
        CheckFailed: a pair drifted, could not be compared, or had no partner (exit 1).
    """
    from perpsim.sim.drift_many import drift_many

    if scheduler is not None and workers is not None:
        raise ConfigError("--workers and --scheduler exclude each other (a cluster brings its own workers)")
    _check_timeout(connect_timeout)
    console = Console(stderr=True)
    report = drift_many(
        a,
        b,
        workers=workers,
        scheduler=scheduler,
        connect_timeout=connect_timeout,
        thresholds=thresholds,
        force=force,
        timing_tolerance_ns=timing_tolerance_ns,
        out=out,
        progress=console.is_terminal and not as_json,
    )
    if as_json:
        data = {k: v for k, v in msgspec.to_builtins(report).items() if k != "rows"}
        click.echo(json.dumps({**data, "pairs_table": report.rows}, indent=2, default=str))
    else:
        print_drift_many(report, Console())
    bad = report.drift + report.errors + report.unpaired
    if bad:
        # Drifted and not compared count pairs (two runs each); unpaired counts single runs.
        raise CheckFailed(
            f"drift --many: {report.drift} drifted and {report.errors} not compared of {report.pairs} "
            f"pair{'s' if report.pairs != 1 else ''}; "
            f"{report.unpaired} unpaired run{'s' if report.unpaired != 1 else ''}"
        )
