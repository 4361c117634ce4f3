"""Analysis commands: ``drift``, ``soak``, ``characterize`` and ``runs`` (DESIGN.md §9).

Each prints a human summary (rich tables) or ``--json``; a failed check raises
:class:`~perpsim.core.errors.CheckFailed` (exit 1) after the output is printed,
bad input raises :class:`~perpsim.core.errors.InputError` (exit 2). The main
CLI attaches them::

    from perpsim.cli_analysis import characterize, drift, runs, soak
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from perpsim.core.errors import CheckFailed, ConfigError, InputError
from perpsim.core.timefmt import parse_duration_ns

__all__ = ["characterize", "drift", "runs", "soak"]

_MB = 1024 * 1024
# Shares are fractions of a whole; limits and counts below 0 could never be met.
_SHARE = click.FloatRange(0.0, 1.0)
_LIMIT = click.FloatRange(min=0.0)
_COUNT = click.IntRange(min=0)


def _sample_tape() -> Path:
    from importlib import resources

    return Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))


def _dur_ms(text: str | None, what: str) -> float | None:
    return None if text is None else parse_duration_ns(text, what=what) / 1e6


def _console() -> Console:
    """Stdout; when it is not a terminal (a pipe, a file, CI logs), 110 columns instead of 80."""
    con = Console()
    return con if con.is_terminal else Console(width=110)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


# -- drift ------------------------------------------------------------------------


@click.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--thresholds", "thresholds_file", type=click.Path(path_type=Path), help="TOML file of limits ([drift]).")
@click.option("--min-decision-agreement", type=_SHARE, help="Least share of decisions that agree (default 0.99).")
@click.option("--max-order-count-diff", type=_COUNT, help="Most orders more or fewer in B (default 0).")
@click.option("--max-fill-count-diff", type=_COUNT, help="Most fills more or fewer in B (default 0).")
@click.option("--max-fill-drift-bps", type=_LIMIT, help="Largest p95 fill price drift, bps (default 5).")
@click.option("--max-fill-drift-bps-max", type=_LIMIT, help="Largest single fill price drift, bps.")
@click.option("--max-pnl-diff", type=_LIMIT, help="Largest |PnL difference|, settlement currency.")
@click.option("--max-fee-diff", type=_LIMIT, help="Largest |fee difference|.")
@click.option("--max-funding-diff", type=_LIMIT, help="Largest |funding difference|.")
@click.option("--max-position-diff", type=_LIMIT, help="Largest |position difference| at a cycle, base units.")
@click.option(
    "--max-position-cycles-differing", type=_SHARE, help="Largest share of cycles with a position difference."
)
@click.option("--max-timing-drift", help="Largest p95 event time difference, e.g. 250ms.")
@click.option("--max-timing-drift-max", help="Largest event time difference.")
@click.option("--identical", is_flag=True, help="Require identical event streams.")
@click.option("--timing-tolerance", help="Event time differences within this are not a divergence, e.g. 50ms.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a self-contained report: out.html or out.md.")
@click.option("--force", is_flag=True, help="Compare runs of different tapes, versions or incomplete runs anyway.")
@click.option("--many", is_flag=True, help="RUN_A and RUN_B are folders of runs: check every pair, fanned out.")
@click.option("--workers", type=int, help="--many: local worker processes (default: the cores this process may use).")
@click.option("--scheduler", help="--many: a Dask scheduler address, tcp://HOST:PORT.")
@click.option(
    "--timeout",
    "connect_timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="--many: seconds to reach the scheduler.",
)
@click.option(
    "--out", "many_out", type=click.Path(path_type=Path), help="--many: write the summary table (Parquet) here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def drift(
    run_a: Path,
    run_b: Path,
    thresholds_file: Path | None,
    min_decision_agreement: float | None,
    max_order_count_diff: int | None,
    max_fill_count_diff: int | None,
    max_fill_drift_bps: float | None,
    max_fill_drift_bps_max: float | None,
    max_pnl_diff: float | None,
    max_fee_diff: float | None,
    max_funding_diff: float | None,
    max_position_diff: float | None,
    max_position_cycles_differing: float | None,
    max_timing_drift: str | None,
    max_timing_drift_max: str | None,
    identical: bool,
    timing_tolerance: str | None,
    report: Path | None,
    force: bool,
    many: bool,
    workers: int | None,
    scheduler: str | None,
    connect_timeout: float,
    many_out: Path | None,
    as_json: bool,
) -> None:
    """Compare two run directories: where they diverge and whether it is too far.

    RUN_A is the reference (e.g. the live session, or yesterday's code), RUN_B the
    other (its replay, or today's code). Exit 1 when a threshold is exceeded, 2 when
    a run directory is unusable or the runs replayed different tapes (--force).
    With --many, RUN_A and RUN_B are folders of run directories, paired by their
    manifests (folder names do not matter): the same tape content and config, or the
    tape alone, whatever the configs, when it has exactly one run on each side (a
    live session and its replay). Pairs are compared in parallel (local pool or
    Dask), with one summary table.
    """
    from perpsim.sim import drift as d
    from perpsim.sim.drift_report import write_report
    from perpsim.sim.runs import check_out_file

    if many and report is not None:
        raise ConfigError("--report works only without --many (one report per pair of runs)")
    if not many:  # the --many options would otherwise be ignored without a word
        timeout_src = click.get_current_context().get_parameter_source("connect_timeout")
        for opt, used in (
            ("--workers", workers is not None),
            ("--scheduler", scheduler is not None),
            ("--timeout", timeout_src is not ParameterSource.DEFAULT),
            ("--out", many_out is not None),
        ):
            if used:
                raise ConfigError(f"{opt} needs --many")
    if report is not None:
        if report.suffix.lower() not in (".html", ".htm", ".md", ".markdown"):
            raise InputError(f"--report {report}: the suffix must be .html or .md")
        check_out_file(report, "--report")
    if many_out is not None:
        check_out_file(many_out, "--out")
    th = d.load_thresholds(
        thresholds_file,
        identical=identical or None,
        min_decision_agreement=min_decision_agreement,
        max_order_count_diff=max_order_count_diff,
        max_fill_count_diff=max_fill_count_diff,
        max_fill_drift_bps_p95=max_fill_drift_bps,
        max_fill_drift_bps_max=max_fill_drift_bps_max,
        max_pnl_diff=max_pnl_diff,
        max_fee_diff=max_fee_diff,
        max_funding_diff=max_funding_diff,
        max_position_diff=max_position_diff,
        max_position_cycles_differing=max_position_cycles_differing,
        max_timing_drift_ms_p95=_dur_ms(max_timing_drift, "--max-timing-drift"),
        max_timing_drift_ms_max=_dur_ms(max_timing_drift_max, "--max-timing-drift-max"),
    )
    tol = parse_duration_ns(timing_tolerance, what="--timing-tolerance") if timing_tolerance else 0
    if many:
        from perpsim.cli_sweep import drift_many_cli

        drift_many_cli(
            run_a,
            run_b,
            workers=workers,
            scheduler=scheduler,
            connect_timeout=connect_timeout,
            thresholds=th,
            force=force,
            timing_tolerance_ns=tol,
            out=many_out,
            as_json=as_json,
        )
        return
    ra, rb = d.load_run(run_a), d.load_run(run_b)
    rep = d.compare_runs(ra, rb, thresholds=th, force=force, timing_tolerance_ns=tol)
    if report is not None:
        write_report(rep, ra, rb, report)
    if as_json:
        click.echo(_dumps(rep.to_dict() | ({"report": str(report)} if report else {})))
    else:
        _print_drift(rep, _console(), report)
    if not rep.ok:
        raise CheckFailed(f"drift: {d.failure_line(rep)}")


def _print_drift(rep: Any, con: Console, report: Path | None) -> None:
    from perpsim.sim import drift as d
    from perpsim.sim.drift_report import divergence_lines, summary_rows

    con.print(f"[bold]drift[/bold] A={rep.run_a['path']}  B={rep.run_b['path']}")
    for w in rep.warnings:
        con.print(f"[yellow]warning:[/yellow] {w}")
    for line in divergence_lines(rep):
        con.print(line, highlight=False, markup=False)
    if rep.config_diff:
        con.print("config differs: " + ", ".join(f"{c['key']} {c['a']} → {c['b']}" for c in rep.config_diff[:6]))
    t = Table(title="runs side by side", title_justify="left")
    for col, just in (("metric", "left"), ("A", "right"), ("B", "right"), ("B - A", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in summary_rows(rep):
        t.add_row(*row)
    con.print(t)
    if rep.symbols:
        ts = Table(title="decisions per symbol", title_justify="left")
        for col in ("symbol", "A", "B", "agreement", "orders A/B", "fills A/B", "first disagreement"):
            ts.add_column(col)
        for sym, s in rep.symbols.items():
            fd = s["first_disagreement"]
            ts.add_row(
                sym,
                str(s["decisions_a"]),
                str(s["decisions_b"]),
                d.fmt_value(s["decision_agreement"]),
                f"{s['orders_a']}/{s['orders_b']}",
                f"{s['fills_a']}/{s['fills_b']}",
                f"{fd['time']} {fd['a']}→{fd['b']}" if fd else "-",
            )
        con.print(ts)
    tc = Table(title="48-hour checklist", title_justify="left")
    for col in ("metric", "A", "B", "note"):
        tc.add_column(col, overflow="fold")
    for k, v in rep.checklist.items():
        tc.add_row(k, d.fmt_value(v["a"]["value"]), d.fmt_value(v["b"]["value"]), d.checklist_note(v))
    con.print(tc)
    tt = Table(title="thresholds", title_justify="left")
    for col in ("check", "value", "limit", "result"):
        tt.add_column(col)
    for c in rep.checks:
        op = "≥ " if c["kind"] == "min" else "≤ "
        tt.add_row(
            c["name"], d.fmt_value(c["value"]), op + d.fmt_value(c["limit"]), "ok" if c["ok"] else "[red]FAIL[/red]"
        )
    con.print(tt)
    if report is not None:
        con.print(f"report: {report}")
    con.print("[green]drift: PASS[/green]" if rep.ok else f"[red]drift: FAIL[/red] ({d.failure_line(rep)})")


# -- soak -------------------------------------------------------------------------


@click.command()
@click.argument("tape", nargs=-1, type=click.Path(path_type=Path))
@click.option("--duration", help="Clock time to soak, e.g. 2h, 48h (default 48h; a replay soak only).")
@click.option(
    "--live", "live_url", metavar="URL", help="Soak the live path against this feed, e.g. ws://127.0.0.1:8765."
)
@click.option("--wall", help="--live: wall time to run the session, e.g. 60s, 2h (required with --live).")
@click.option("--interval", help="Cycle interval, e.g. 60s (default: the profile's).")
@click.option("--profile", help="Profile name (default backtest; canary with --live).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML file merged over the profile.")
@click.option("--strategy", help="A strategy class as module:Class.")
@click.option("--symbols", help="Comma-separated symbols (default: all on the tape; the profile's with --live).")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for the run's random models.")
@click.option(
    "--sample-every",
    help="Time between samples (default 1h of clock, or a quarter of a shorter --duration; "
    "--live: a twelfth of --wall, ≥ 1s).",
)
@click.option("--warmup", help="Measure memory growth from this time on (default: one sample, or one loop).")
@click.option("--max-memory-growth", type=float, default=0.2, show_default=True, help="Heap and RSS growth limit.")
@click.option("--max-errors", type=int, default=0, show_default=True, help="Most error events allowed.")
@click.option("--max-cycle-p95", help="Fail when the cycle callback's p95 wall time exceeds this, e.g. 50ms.")
@click.option("--no-trace-memory", is_flag=True, help="Skip tracemalloc (faster; RSS only).")
@click.option(
    "--check-heap",
    is_flag=True,
    help="--live: apply --max-memory-growth to the Python heap too (a replay soak always does; live, it is reported).",
)
@click.option("--connect-timeout", help="--live: give up (exit 2) when the feed has not connected by then (30s).")
@click.option(
    "--record",
    "record_dir",
    type=click.Path(path_type=Path),
    help="--live: keep the session's recording and run directory here (default: a temporary folder, removed).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="--live: log the feed and the driver to stderr.")
def soak(
    tape: tuple[Path, ...],
    duration: str | None,
    live_url: str | None,
    wall: str | None,
    interval: str | None,
    profile: str | None,
    config_file: Path | None,
    strategy: str | None,
    symbols: str | None,
    seed: int | None,
    sample_every: str | None,
    warmup: str | None,
    max_memory_growth: float,
    max_errors: int,
    max_cycle_p95: str | None,
    no_trace_memory: bool,
    check_heap: bool,
    connect_timeout: str | None,
    record_dir: Path | None,
    out: Path | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run the bot for --duration of clock time as fast as it can, looping TAPE; or live for --wall.

    Samples memory (RSS, Python heap, top growth), objects, queue depths, timer
    callback wall times and errors every --sample-every; exit 1 when a criterion
    fails (memory growth, errors, unbounded queues, cycle p95). TAPE defaults to
    the bundled sample. With --live URL (e.g. a `perpsim serve`), the live driver
    runs against the feed for --wall of wall time instead, sampled the same way
    over wall time, with the feed's messages, reconnects and gaps; a feed that
    never connects exits 2.
    """
    from perpsim.sim import soak as s
    from perpsim.sim.runs import check_out_file

    if out is not None:
        check_out_file(out, "--out")
    crit = s.SoakCriteria(
        max_memory_growth=max_memory_growth,
        max_errors=max_errors,
        max_cycle_p95_ms=_dur_ms(max_cycle_p95, "--max-cycle-p95"),
    )
    interval_s = parse_duration_ns(interval, what="--interval") / 1e9 if interval else None
    symbol_list = [x.strip() for x in symbols.split(",") if x.strip()] if symbols else None
    err = Console(stderr=True)
    show = err.is_terminal and not as_json

    def progress(done: int, total: int) -> None:
        if show:
            err.print(f"  soaked {s.fmt_duration(done)} of {s.fmt_duration(total)}", end="\r")

    if live_url is None:
        live_only = (
            (wall, "--wall"),
            (connect_timeout, "--connect-timeout"),
            (record_dir, "--record"),
            (check_heap or None, "--check-heap"),
        )
        for given, opt in live_only:
            if given is not None:
                raise InputError(f"soak: {opt} is for a live soak (--live URL); a replay soak runs for --duration")
        paths = list(tape) or [_sample_tape()]
        rep = s.run_soak(
            paths if len(paths) > 1 else paths[0],
            duration_ns=parse_duration_ns(duration or "48h", what="--duration"),
            interval_s=interval_s,
            profile=profile or "backtest",
            config=config_file,
            strategy=strategy,
            symbols=symbol_list,
            seed=seed,
            sample_every_ns=parse_duration_ns(sample_every, what="--sample-every") if sample_every else None,
            warmup_ns=parse_duration_ns(warmup, what="--warmup") if warmup else None,
            criteria=crit,
            trace_memory=not no_trace_memory,
            progress=progress,
        )
    else:
        rep = _live_soak(
            live_url,
            tape=tape,
            duration=duration,
            wall=wall,
            connect_timeout=connect_timeout,
            sample_every=sample_every,
            warmup=warmup,
            record_dir=record_dir,
            verbose=verbose,
            progress=progress,
            interval_s=interval_s,
            profile=profile or "canary",
            config=config_file,
            strategy=strategy,
            symbols=symbol_list,
            seed=seed,
            criteria=crit,
            trace_memory=not no_trace_memory,
            check_heap=check_heap,
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_dumps(rep.to_dict()) + "\n")
    if as_json:
        click.echo(_dumps(rep.to_dict()))
    else:
        _print_soak(rep, _console())
    if not rep.ok:
        raise CheckFailed(f"soak{' --live' if rep.live else ''}: {s.failure_line(rep)}")


def _live_soak(
    url: str,
    *,
    tape: tuple[Path, ...],
    duration: str | None,
    wall: str | None,
    connect_timeout: str | None,
    sample_every: str | None,
    warmup: str | None,
    record_dir: Path | None,
    verbose: bool,
    **kwargs: Any,
) -> Any:
    """``soak --live``: check the options that only make sense together, then run the session."""
    import logging
    import sys

    from perpsim.live.soak import run_live_soak

    if tape:
        raise InputError(f"soak: give TAPE or --live URL, not both (got {tape[0]} and --live {url})")
    if duration is not None:
        raise InputError("soak --live: --duration is a replay soak's clock time; a live soak runs for --wall")
    if wall is None:
        raise InputError("soak --live: --wall is required (the session's wall time, e.g. --wall 60s)")

    def seconds(text: str | None, what: str) -> float | None:
        return None if text is None else parse_duration_ns(text, what=what) / 1e9

    wall_s = seconds(wall, "--wall")
    assert wall_s is not None
    log = logging.getLogger("perpsim")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False
    else:
        # The feed logs every failed connect and disconnect; the report counts them instead,
        # and a feed that never connects is one line on stderr (exit 2), not a screenful.
        log.setLevel(logging.ERROR)
    # As `perpsim live` does: the recorder's writer thread holds the GIL in switch-interval
    # slices, each a stall of the feed; 0.5 ms slices keep socket-to-engine latency low.
    sys.setswitchinterval(0.0005)
    return run_live_soak(
        url,
        wall_s=wall_s,
        sample_every_s=seconds(sample_every, "--sample-every"),
        warmup_s=seconds(warmup, "--warmup"),
        connect_timeout_s=seconds(connect_timeout, "--connect-timeout") or 30.0,
        keep_dir=record_dir,
        **kwargs,
    )


def _print_soak(rep: Any, con: Console) -> None:
    from perpsim.sim.soak import fmt_duration

    live = rep.live
    span = rep.clock_end_ns - rep.clock_start_ns
    if live is None:
        con.print(
            f"[bold]soak[/bold] {rep.tape} · profile {rep.profile} · {fmt_duration(rep.duration_ns)} of clock "
            f"at {rep.interval_s:g}s cycles · wall {rep.wall_s:.1f}s "
            f"({span / 1e9 / max(rep.wall_s, 1e-9):,.0f}x real time)"
        )
    else:
        con.print(
            f"[bold]soak (live)[/bold] {live['url']} · profile {rep.profile} · {rep.interval_s:g}s cycles · "
            f"wall {fmt_duration(rep.duration_ns)} (ran {live['ran_s']:.1f}s, sampled every "
            f"{fmt_duration(round(live['sample_every_s'] * 1e9))})",
            highlight=False,
        )
    for n in rep.notes:
        con.print(f"  note: {n}", highlight=False)
    samples = rep.samples
    step = max(1, -(-len(samples) // 12))
    shown = [x for i, x in enumerate(samples) if i % step == 0 or i == len(samples) - 1]
    t = Table(title="samples" + (f" (every {step}th; --json for all)" if step > 1 else ""), title_justify="left")
    cols = ["clock", "loop", "RSS MB", "heap KB", "objects", "outbox", "orders", "timers", "cycles", "errors"]
    if live is not None:  # tasks and threads are in the criteria table; the timers are the bot's, as in replay
        cols = ["wall", "RSS MB", "heap KB", "objects", "outbox", "orders", "kept", "msgs", "reconn", "gaps"]
        cols += ["cycles", "errors"]
    for col in cols:
        t.add_column(col, justify="right")
    for x in shown:
        head = ["+" + fmt_duration(x.clock_ns - rep.clock_start_ns)]
        mem = [
            f"{x.rss / _MB:.1f}",
            "-" if x.heap is None else f"{x.heap / 1024:.1f}",
            f"{x.objects:,}",
            str(x.outbox_peak),
            str(x.open_orders),
        ]
        if live is None:
            t.add_row(*head, str(x.loop + 1), *mem, str(x.timers), f"{x.cycles:,}", str(x.errors))
        else:
            t.add_row(
                *head,
                *mem,
                f"{x.kept:,}",
                f"{x.messages:,}",
                str(x.reconnects),
                str(x.gaps),
                f"{x.cycles:,}",
                str(x.errors),
            )
    con.print(t)
    tm = Table(title="timer callbacks (wall ms)", title_justify="left")
    for col in ("timer", "n", "p50", "p95", "p99", "max"):
        tm.add_column(col, justify="right")
    for name, v in rep.timers_ms.items():
        tm.add_row(
            name, f"{v['n']:,}", *(("-" if v[k] is None else f"{v[k]:.3f}") for k in ("p50", "p95", "p99", "max"))
        )
    con.print(tm)
    m = rep.memory
    con.print(
        f"memory from {m['warm_clock']} (warm) to the end: RSS {m['rss_warm'] / _MB:.1f} → {m['rss_end'] / _MB:.1f} MB"
        + (
            f", Python heap {m['heap_warm'] / 1024:.1f} → {m['heap_end'] / 1024:.1f} KB"
            if m["heap_warm"] is not None
            else ""
        )
        + f", objects {m['objects_warm']:,} → {m['objects_end']:,}",
        highlight=False,
    )
    if rep.top_growth:
        con.print(
            "top heap growth: "
            + "; ".join(f"{g['where']} +{g['size_diff'] / 1024:.1f} KB" for g in rep.top_growth[:5]),
            highlight=False,
        )
    con.print(
        f"{rep.rows:,} rows, {rep.cycles:,} cycles, {rep.events:,} events, errors {rep.errors['total']}"
        + (f" {rep.errors['by_reason']}" if rep.errors["total"] else "")
        + f", digest {rep.digest[:16]}",
        highlight=False,
    )
    if live is not None:
        f, dc = live["feed"], live["driver_cycle"]
        lag = "-" if f["last_lag_ns"] is None else f"{f['last_lag_ns'] / 1e6:.1f} ms"
        con.print(
            f"feed: {f['messages']:,} messages, {f['connects']} connects, {f['reconnects']} reconnects, "
            f"{f['disconnects']} disconnects, {f['gaps']} gaps, {f['malformed']} malformed, last lag {lag}; "
            f"session {live['status']} (stop: {live['stop_reason'] or '-'}); "
            f"{live['orders']} orders, {live['fills']} fills",
            highlight=False,
        )
        if dc["n"]:
            p95 = "-" if dc["p95_le_ms"] is None else f"≤ {dc['p95_le_ms']:g} ms"
            con.print(
                f"the live driver's cycle histogram: n {dc['n']:,}, mean {dc['mean_ms']:.3f} ms, p95 {p95}",
                highlight=False,
            )
    tc = Table(title="criteria", title_justify="left")
    for col in ("criterion", "value", "limit", "result"):
        tc.add_column(col)
    for c in rep.checks:
        pct = "growth" in c["name"]
        v, lim = c["value"], c["limit"]
        tc.add_row(
            c["name"],
            "-" if v is None else (f"{v:+.1%}" if pct else str(round(v, 3) if isinstance(v, float) else v)),
            f"< {lim:.0%}" if pct else f"≤ {lim}",
            "ok" if c["ok"] else "[red]FAIL[/red]",
        )
    heap = rep.memory["heap_growth"]
    if heap is not None and not any(c["name"] == "heap growth" for c in rep.checks):
        tc.add_row("heap growth (reported)", f"{heap:+.1%}", "", "")
    cyc = rep.timers_ms.get("cycle")
    if cyc:
        tc.add_row("cycle p95 ms (reported)", f"{cyc['p95']:.3f}" if cyc["p95"] is not None else "-", "", "")
    con.print(tc)
    name = "soak --live" if live is not None else "soak"
    con.print(f"[green]{name}: PASS[/green]" if rep.ok else f"[red]{name}: FAIL[/red]")


# -- characterize -----------------------------------------------------------------


@click.command()
@click.argument("tape", nargs=-1, type=click.Path(path_type=Path))
@click.option("--golden", "golden_file", required=True, type=click.Path(path_type=Path), help="The golden JSON file.")
@click.option("--update", is_flag=True, help="Write the golden file from this replay (create or accept a change).")
@click.option("--profile", default="backtest", show_default=True, help="Profile name.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML file merged over the profile.")
@click.option("--strategy", help="A strategy class as module:Class.")
@click.option("--symbols", help="Comma-separated symbols.")
@click.option("--interval", help="Cycle interval, e.g. 60s.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for the run's random models.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def characterize(
    tape: tuple[Path, ...],
    golden_file: Path,
    update: bool,
    profile: str,
    config_file: Path | None,
    strategy: str | None,
    symbols: str | None,
    interval: str | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Replay TAPE and compare with a golden file; print the first differing event.

    With --update the golden file is written (digest, counts per event kind, key
    figures and the events). Exit 1 on a mismatch, 2 when the golden file is
    missing or unreadable. TAPE defaults to the bundled sample.
    """
    from perpsim.sim import characterize as ch

    paths = list(tape) or [_sample_tape()]
    res = ch.characterize(
        paths[0] if len(paths) == 1 else paths,
        golden_file,
        update=update,
        raise_on_mismatch=False,
        profile=profile,
        config=config_file,
        strategy=strategy,
        symbols=symbols.split(",") if symbols else None,
        interval_s=parse_duration_ns(interval, what="--interval") / 1e9 if interval else None,
        seed=seed,
    )
    if as_json:
        click.echo(_dumps(res.to_dict()))
    else:
        for line in res.lines:
            click.echo(line)
    if not res.ok:
        raise CheckFailed(f"characterize: {ch.mismatch_line(res)}")


# -- runs -------------------------------------------------------------------------

_ROOT_HELP = "Folder of run directories (default ./runs)."


def _catalog(ctx: click.Context, root: Path | None) -> Any:
    from perpsim.sim.catalog import Catalog

    chosen = root or (ctx.obj or {}).get("root") or Path("runs")
    return Catalog(chosen)


@click.group()
@click.option("--root", type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.pass_context
def runs(ctx: click.Context, root: Path | None) -> None:
    """The run catalog: list, show and query run directories with SQL (DuckDB).

    Views: runs (one row per run), events and equity (every row, with run_id), and
    sweeps (every sweep's results table, with its folder as sweep_dir).
    """
    ctx.ensure_object(dict)
    ctx.obj["root"] = root


@runs.command("ls")
@click.option("--root", type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def runs_ls(ctx: click.Context, root: Path | None, as_json: bool) -> None:
    """List the runs under the root, oldest first (by start time)."""
    cat = _catalog(ctx, root)
    df = cat.runs()
    if as_json:
        click.echo(_dumps(df.to_dicts()))
        return
    heads = ["run_id", "status", "profile", "tape", "cycles", "fills", "final equity", "digest"]
    rows = [
        [
            r["run_id"],
            r["status"] if r["status"] != "unreadable" else f"unreadable: {r['reason']}",
            r["profile"] or "-",
            r["tape"] or "-",
            "-" if r["cycles"] is None else f"{r['cycles']:,}",
            "-" if r["fills"] is None else f"{r['fills']:,}",
            "-" if r["final_equity"] is None else f"{r['final_equity']:,.2f}",
            (r["digest"] or "-")[:12],
        ]
        for r in df.iter_rows(named=True)
    ]
    _print_grid(
        _console(),
        f"runs in {cat.root} ({df.height})",
        heads,
        rows,
        whole={"run_id", "cycles", "fills", "final equity", "digest"},
        right={"cycles", "fills", "final equity"},
        drop=("digest", "tape", "profile"),
    )


@runs.command("show")
@click.argument("run")
@click.option("--root", type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def runs_show(ctx: click.Context, run: str, root: Path | None, as_json: bool) -> None:
    """Show one run (a path, a run id, or a unique prefix of one)."""
    info = _catalog(ctx, root).show(run)
    if as_json:
        click.echo(_dumps(info))
        return
    con = _console()
    m, s = info["manifest"], info["summary"] or {}
    t = Table(title=f"run {info['run_id']}", show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    rows = [
        ("path", info["path"]),
        ("status", str(m.get("status"))),
        ("profile", str(m.get("profile"))),
        ("strategy", str((m.get("config") or {}).get("strategy"))),
        ("perpsim", str(m.get("perpsim_version"))),
        ("tapes", ", ".join(f"{t_.get('path')} ({str(t_.get('sha256'))[:12]})" for t_ in m.get("tapes") or []) or "-"),
        ("clock span", info["span"] or "-"),
        ("digest", str(m.get("digest"))),
    ]
    for key in (
        "rows",
        "cycles",
        "orders",
        "fills",
        "rejects",
        "errors",
        "fees",
        "funding",
        "realized",
        "final_equity",
    ):
        if key in s:
            rows.append((key.replace("_", " "), f"{s[key]:,}" if isinstance(s[key], int | float) else str(s[key])))
    rows.append(("files", ", ".join(f"{k} ({v:,} B)" for k, v in info["files"].items())))
    for k, v in rows:
        t.add_row(k, v)
    con.print(t)


@runs.command("query")
@click.argument("sql")
@click.option("--root", type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print rows as CSV.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most rows printed in the table."
)
@click.pass_context
def runs_query(ctx: click.Context, sql: str, root: Path | None, as_json: bool, as_csv: bool, limit: int) -> None:
    """Run SQL over the views runs, events, equity and sweeps (DuckDB, Parquet read in place).

    A Parquet file DuckDB cannot read is left out of its view, with a warning on stderr;
    runs still running (their files are being written) are left out with one note. A
    result too wide for the console prints one "column  value" record per row.
    """
    cat = _catalog(ctx, root)
    try:
        df = cat.query(sql)
    finally:  # also when the query fails: a left-out file may be why
        for w in cat.warnings:
            click.echo(f"warning: {w}", err=True)
        for n in cat.notes:
            click.echo(f"note: {n}", err=True)
    if as_json:
        click.echo(_dumps(df.to_dicts()))
        return
    if as_csv:
        click.echo(df.write_csv(), nl=False)
        return
    shown = df.head(limit)
    numeric = {c for c, t in shown.schema.items() if t.is_numeric()}
    rows = [["" if v is None else str(v) for v in r] for r in shown.iter_rows()]
    _print_grid(_console(), f"{df.height} row(s)", list(df.columns), rows, whole=numeric, right=numeric)
    if df.height > limit:
        click.echo(f"({df.height - limit} more rows; --limit N or --csv)")


_READABLE = 10  # the narrowest a folded text column may get, in cells


def _fit(
    heads: list[str], rows: list[list[str]], width: int, whole: Collection[str], drop: Sequence[str]
) -> tuple[list[str], bool] | None:
    """The columns a table can show within ``width`` and whether its text columns must fold,
    with no ``whole`` column (numbers, ids) cut and no text column under :data:`_READABLE`
    cells; None when not even that fits (print records instead).

    Rich would otherwise squeeze every column to fit, down to one cell: "99,219…" or
    a column of single digits.
    """
    full = {h: max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(heads)}
    least = {h: w if h in whole else min(w, _READABLE) for h, w in full.items()}
    for widths, fold in ((full, False), (least, True)):
        for k in range(len(drop) + 1):
            cols = [h for h in heads if h not in drop[:k]]
            if sum(widths[c] for c in cols) + 3 * len(cols) + 1 <= width:  # padding 2, border 1 each
                return cols, fold
    return None


def _print_grid(
    con: Console,
    title: str,
    heads: list[str],
    rows: list[list[str]],
    *,
    whole: Collection[str] = (),
    right: Collection[str] = (),
    drop: Sequence[str] = (),
) -> None:
    """A table when it fits the console readably, dropping the ``drop`` columns (least
    important first) if that makes it fit; else one "column  value" record per row, as
    psql's expanded display does, so a wide result (a sweep's 30-odd columns) stays readable."""
    fit = _fit(heads, rows, con.width, whole, drop)
    if fit is None:
        con.print(title, highlight=False, markup=False)
        label = max((cell_len(h) for h in heads), default=0)
        for n, r in enumerate(rows, 1):
            con.print(f"-[ row {n} ]" + "-" * max(0, label - 6), highlight=False, markup=False)
            for h, v in zip(heads, r):
                con.print(f"{h}{' ' * (label - cell_len(h))}  {v}", highlight=False, markup=False, soft_wrap=True)
        return
    cols, fold = fit
    t = Table(title=title, title_justify="left")
    for h in cols:
        keep = h in whole or not fold
        t.add_column(h, justify="right" if h in right else "left", no_wrap=keep, overflow="fold")
    idx = [heads.index(h) for h in cols]
    for r in rows:
        t.add_row(*(r[i] for i in idx))
    con.print(t)
    if len(cols) < len(heads):
        left = ", ".join(h for h in heads if h not in cols)
        con.print(f"({left} left out to fit {con.width} columns; --json shows every field)", highlight=False)
