"""The ``perpsim`` command line (DESIGN.md §9).

Exit status: 0 ok, 1 a check failed, 2 bad input or configuration. Errors are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from perpsim.core.errors import InputError, PerpsimError
from perpsim.core.timefmt import fmt_ns, parse_duration_ns

__all__ = ["main", "perpsim_cli", "print_summary"]


def _sample_tape() -> Path:
    from importlib import resources

    return Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="perpsim")
def perpsim_cli() -> None:
    """perpsim: deterministic backtest-and-live simulator for perpetual-futures bots."""


def print_summary(summary: dict[str, Any], console: Console, title: str = "replay") -> None:
    """The human summary of a run."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    money = lambda v: f"{v:,.8f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)  # noqa: E731
    rows = [
        ("market events", f"{summary['rows']:,}"),
        ("events/s", f"{summary['events_per_s']:,}" if summary.get("events_per_s") else "-"),
        ("clock span", f"{fmt_ns(summary.get('first_ns'))} → {fmt_ns(summary.get('last_ns'))}"),
        ("cycles", f"{summary['cycles']:,}"),
        ("orders / fills / rejects", f"{summary['orders']:,} / {summary['fills']:,} / {summary['rejects']:,}"),
        ("fees", money(summary["fees"])),
        ("funding", money(summary["funding"])),
        ("realized PnL", money(summary["realized"])),
        ("unrealized PnL", money(summary["unrealized"])),
        ("final equity", money(summary["final_equity"])),
        ("max drawdown", money(summary["max_drawdown"])),
        ("errors", f"{summary['errors']:,}"),
        ("ledger reconciles", "yes" if summary["reconciles"] else "NO"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if summary.get("first_error"):
        console.print(f"first error: {summary['first_error']}", soft_wrap=True, markup=False)
    console.print(f"digest {summary['digest']}", soft_wrap=True)


@perpsim_cli.command()
@click.argument("tape", nargs=-1, type=click.Path(path_type=Path))
@click.option("--profile", default="backtest", show_default=True, help="Profile name (see `perpsim profiles`).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML file merged over the profile.")
@click.option("--strategy", help="A strategy class as module:Class (default: the profile's).")
@click.option("--symbols", help="Comma-separated symbols to trade (default: all on the tape).")
@click.option("--interval", help="Cycle interval, e.g. 60s, 5m.")
@click.option("--start", help="Replay rows from this time (ISO 8601 UTC or ns).")
@click.option("--end", help="Replay rows before this time.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for the run's random models.")
@click.option("--cycles", type=click.IntRange(min=1), help="Stop cycling after this many cycles (dev profile: 1).")
@click.option(
    "--engine",
    "engine_mode",
    type=click.Choice(["fast", "reference"]),
    default="fast",
    show_default=True,
    help="fast-forwards between events that matter; reference dispatches every row (same digest).",
)
@click.option("--ignore-timer-rows", is_flag=True, help="Schedule timers anew instead of taking a recording's.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<time>-<tape>).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    tape: tuple[Path, ...],
    profile: str,
    config_file: Path | None,
    strategy: str | None,
    symbols: str | None,
    interval: str | None,
    start: str | None,
    end: str | None,
    seed: int | None,
    cycles: int | None,
    engine_mode: str,
    ignore_timer_rows: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Replay TAPE (files or folders; default: the bundled sample) through the bot.

    Writes runs/<run_id>/ (manifest.json, events.parquet, equity.parquet,
    summary.json) and prints a summary with the run's digest.
    """
    from perpsim.cli_tapes import clock_window
    from perpsim.sim.replay import replay as run_replay
    from perpsim.sim.runs import check_unused, new_run_dir
    from perpsim.tapes.reader import open_tape

    paths = list(tape) or [_sample_tape()]
    overrides: dict[str, Any] = {}
    if cycles is not None:
        overrides["max_cycles"] = cycles
    opened = open_tape(paths if len(paths) > 1 else paths[0])
    start_ns, end_ns = clock_window(opened, start, end)
    label = paths[0].stem if paths[0].suffix else paths[0].name
    if out is not None:
        check_unused(out)
    out_dir = out or new_run_dir("runs", f"{label}-{profile}")
    console = Console(stderr=True)
    progress_cb = None
    bar = None
    if console.is_terminal and not as_json:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        task = bar.add_task("replaying", total=opened.num_rows)
        bar.start()
        progress_cb = lambda n: bar.advance(task, n)  # noqa: E731
    try:
        result = run_replay(
            opened,
            profile=profile,
            config=config_file,
            strategy=strategy,
            symbols=symbols.split(",") if symbols else None,
            interval_s=parse_duration_ns(interval, what="--interval") / 1e9 if interval else None,
            start_ns=start_ns,
            end_ns=end_ns,
            seed=seed,
            out=out_dir,
            overrides=overrides,
            progress=progress_cb,
            engine=engine_mode,
            ignore_timer_rows=ignore_timer_rows,
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        click.echo(f"perpsim replay: interrupted; {out_dir} is marked incomplete", err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.stop()
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps({**result.summary, "run_dir": str(result.run_dir)}, indent=2))
    else:
        out_console = Console(width=None if sys.stdout.isatty() else 100)
        print_summary(result.summary, out_console, title=f"replay ({profile}) → {result.run_dir}")


@perpsim_cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON (NAME is always shown as JSON).")
def profiles(name: str | None, as_json: bool) -> None:
    """List the shipped profiles, or show NAME fully resolved (JSON)."""
    import msgspec

    from perpsim.sim.profiles import available, load_profile, resolve_config

    if name is None:
        rows = [(p, str(load_profile(p).get("description", ""))) for p in available()]
        if as_json:
            click.echo(json.dumps(dict(rows), indent=2))
            return
        t = Table(title="profiles", title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("description")
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    cfg = msgspec.to_builtins(resolve_config(name))
    click.echo(json.dumps(cfg, indent=2))


def _attach_subcommands() -> None:
    from perpsim.cli_analysis import characterize, drift, runs, soak
    from perpsim.cli_live import live, serve
    from perpsim.cli_sweep import sweep
    from perpsim.cli_tapes import tapes

    perpsim_cli.add_command(tapes)
    for cmd in (live, serve, drift, soak, characterize, runs, sweep):
        perpsim_cli.add_command(cmd)
    try:
        from perpsim.cli_convert import convert

        tapes.add_command(convert)
    except ImportError:  # pragma: no cover - during development only
        pass


_attach_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into one line and an exit status."""
    # `--strategy mymod:Class` finds mymod.py in the current folder, as under `python -m
    # perpsim`; appended, so a file there cannot shadow an installed module.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        perpsim_cli.main(args=argv, prog_name="perpsim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("perpsim: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "perpsim"
        click.echo(f"{cmd}: {exc.format_message()} (see --help)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"perpsim: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code or 2)
    except PerpsimError as exc:
        click.echo(f"perpsim: {exc}", err=True)
        sys.exit(exc.exit_code)
    except FileNotFoundError as exc:
        click.echo(f"perpsim: {InputError(str(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("perpsim: interrupted", err=True)
        sys.exit(130)
