"""Parameter sweeps: a grid of replay jobs fanned out to processes or a Dask cluster (DESIGN.md §8).

One replay is single-threaded by design; a sweep runs many of them side by side.
A **grid** (TOML) names tapes (paths or globs), profiles and parameter axes; it
expands into :class:`Job` s, each one replay of one tape under one resolved
config. Jobs run on a local process pool (``workers``) or on a Dask cluster
(``scheduler``) through :func:`perpsim.sim.fanout.fan_out`, in groups of one tape's
jobs that a worker replays from one decode of the tape (:func:`run_jobs`); each
finished job becomes one row of ``results.parquet``, which DuckDB or polars query directly
(``notebooks/sweep.ipynb`` draws PnL over two parameters).

A grid file::

    name = "ma-grid"                          # label (default: the file's stem)
    strategy = "perpsim.core.baseline:MACrossover"   # default: each profile's
    profiles = ["backtest"]                   # a name or a list (default backtest)
    tapes = ["tapes/*.parquet"]               # files, folders or globs, relative to this file
    seed = 0                                  # a value, a list or a range
    interval_s = [60, 300]                    # a value, a list or a range
    symbols = ["BTC-PERP"]                    # fixed (default: all on the tape)
    keep_runs = false                         # also write each job's run directory

    [params]                                  # strategy parameters: the axes of the grid
    short = [3, 5, 8]                         # a list of values
    long = {start = 10, stop = 30, step = 10} # a range: 10, 20, 30 (stop is inclusive)
    eps_bps = 0.0                             # a single value: fixed, still a column

    [config]                                  # fixed overrides merged over each profile
    venue = {taker_bps = 5.0}

The **job key** is a SHA-256 over the tape files' content hashes, the canonical
(sorted-key JSON) resolved config and the perpsim version, so a result is
reused exactly when the same code would see the same input: re-running a sweep
skips every job whose key is already in the results table (``retry_failed``
re-runs the failed ones), and a moved or renamed tape keeps its results.

A job that raises, or whose worker dies, is retried once; if it fails again it
is recorded with ``status = "failed"``, its error text and ``attempts = 2``,
and the sweep goes on. Dask workers must have the same perpsim installed and
see the tapes at the same paths (a shared filesystem); a worker checks both
(version and tape hashes) and fails the job when they differ, so a key never
labels a result computed from other input.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from decimal import Decimal
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from perpsim.core.config import RunConfig
from perpsim.core.errors import ConfigError, InputError, PerpsimError
from perpsim.sim.fanout import Outcome, ProgressBar, connect_scheduler, error_text, fan_out, worker_name
from perpsim.sim.profiles import resolve_config
from perpsim.sim.runs import RunResult, file_sha256
from perpsim.tapes.reader import cores, open_tape

__all__ = [
    "GRID_KEYS",
    "RESULT_SCHEMA",
    "Grid",
    "Job",
    "SweepReport",
    "expand",
    "job_key",
    "load_grid",
    "parse_grid",
    "run_job",
    "run_sweep",
    "sharpe",
    "tape_hashes",
]

GRID_KEYS = ("name", "strategy", "profiles", "tapes", "seed", "interval_s", "symbols", "keep_runs", "params", "config")
# Keys of [config] that the grid sets itself; refused there so one value has one home.
_GRID_OWNED = ("profile", "strategy", "seed", "interval_s", "symbols")
_RANGE_KEYS = ("start", "stop", "step")
_MAX_AXIS = 100_000
_MAX_JOBS = 1_000_000
_YEAR_S = 365.25 * 86400.0  # perpetual futures trade around the clock
_FLUSH_S = 5.0
# Jobs replayed from one decode of their tape: their engines and kept outputs share one
# worker's memory, and a group's result lands only when its last job ends.
_GROUP_MAX = 16

RESULT_SCHEMA: dict[str, Any] = {
    "key": pl.Utf8,
    "sweep": pl.Utf8,
    "tape": pl.Utf8,
    "profile": pl.Utf8,
    "strategy": pl.Utf8,
    "seed": pl.Int64,
    "interval_s": pl.Float64,
    "status": pl.Utf8,
    "error": pl.Utf8,
    "attempts": pl.Int64,
    "digest": pl.Utf8,
    "pnl": pl.Float64,
    "net_pnl": pl.Float64,
    "realized": pl.Float64,
    "unrealized": pl.Float64,
    "fees": pl.Float64,
    "funding": pl.Float64,
    "max_drawdown": pl.Float64,
    "final_equity": pl.Float64,
    "trades": pl.Int64,
    "orders": pl.Int64,
    "cycles": pl.Int64,
    "sharpe": pl.Float64,
    "rows": pl.Int64,
    "events_per_s": pl.Float64,
    "wall_s": pl.Float64,
    "group_size": pl.Int64,
    "worker": pl.Utf8,
    "perpsim_version": pl.Utf8,
    "tape_sha256": pl.Utf8,
    "run_dir": pl.Utf8,
}
"""Columns of ``results.parquet`` besides ``param.<name>`` (which follow ``interval_s``).

``pnl`` is realized + unrealized; ``net_pnl`` is final equity minus the starting
balance (after fees and funding); money in USD. ``trades`` counts fills.
``sharpe`` is defined in :func:`sharpe`. ``wall_s``, ``events_per_s``,
``group_size`` and ``worker`` describe where and how fast a job ran and are the only
columns that differ between two runs of the same job. Jobs of one tape run in groups
that share one decode of it (:func:`run_jobs`): ``group_size`` counts the group's
jobs, and ``wall_s`` is the group's.
"""


class Grid(msgspec.Struct, kw_only=True):
    """A checked grid: every axis is a non-empty list of values; tapes are resolved paths."""

    name: str
    source: str
    strategy: str | None = None
    profiles: list[str]
    tapes: list[str]
    seeds: list[int | None]
    intervals: list[float | None]
    symbols: list[str] | None = None
    keep_runs: bool = False
    params: dict[str, list[Any]]
    config: dict[str, Any] = {}

    @property
    def size(self) -> int:
        """How many jobs the grid expands to (before de-duplication)."""
        n = len(self.tapes) * len(self.profiles) * len(self.seeds) * len(self.intervals)
        for values in self.params.values():
            n *= len(values)
        return n


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One replay: picklable, so it can be shipped to another process or machine."""

    key: str
    index: int
    sweep: str
    tape: str
    tape_sha256: list[str]
    profile: str
    strategy: str | None
    seed: int | None
    interval_s: float | None
    symbols: list[str] | None
    params: dict[str, Any]
    grid_params: list[str]
    config: dict[str, Any]
    config_sha256: str
    version: str
    run_dir: str | None = None


class SweepReport(msgspec.Struct, kw_only=True):
    """What :func:`run_sweep` did: counts, where the table is, and this run's new rows."""

    name: str
    out: str
    results: str
    jobs: int
    skipped: int
    ran: int
    ok: int
    failed: int
    duplicates: int
    wall_s: float
    rows: list[dict[str, Any]]
    groups: int = 0  # tape decodes: job groups (retries included) whose replay gave at least one result
    failed_earlier: int = 0  # this grid's jobs skipped because the table records them as failed

    @property
    def table(self) -> pl.DataFrame:
        """The whole results table (this run's rows and earlier ones)."""
        path = Path(self.results)
        return pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=RESULT_SCHEMA)


# --- grid ------------------------------------------------------------------------------------------


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def _range_values(where: str, spec: dict[str, Any]) -> list[Any]:
    unknown = sorted(set(spec) - set(_RANGE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in range (use start, stop, step)")
    if "start" not in spec or "stop" not in spec:
        raise ConfigError(f"{where}: a range needs start and stop (and optionally step, default 1)")
    start, stop, step = spec["start"], spec["stop"], spec.get("step", 1)
    for k, v in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: range {k} must be a finite number, not {v!r}")
    if step == 0:
        raise ConfigError(f"{where}: range step must not be 0")
    # Decimal steps: 0.1 + 0.2 is 0.3 here, so values are the ones a user typed.
    d_start, d_stop, d_step = (Decimal(repr(x)) for x in (start, stop, step))
    # Floor, not int(): a stop short of start by less than a step is empty, not [start].
    n = math.floor((d_stop - d_start) / d_step) + 1
    if n <= 0:
        raise ConfigError(f"{where}: empty range {{start = {start}, stop = {stop}, step = {step}}}")
    if n > _MAX_AXIS:
        raise ConfigError(f"{where}: range has {n:,} values; at most {_MAX_AXIS:,} per axis")
    as_int = all(isinstance(x, int) for x in (start, stop, step))
    return [int(d_start + k * d_step) if as_int else float(d_start + k * d_step) for k in range(n)]


def _axis(where: str, value: Any) -> list[Any]:
    """A grid axis as a list: a scalar, a list of scalars or a {start, stop, step} range."""
    if isinstance(value, dict):
        return _range_values(where, value)
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: empty list")
        values = value
    else:
        values = [value]
    for v in values:
        if not _is_scalar(v):
            raise ConfigError(
                f"{where}: values must be numbers, booleans or strings, not {v!r} "
                "(put fixed non-scalar parameters under [config.params])"
            )
    return list(values)


def _strings(where: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: empty list")
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: expected a string or a list of strings, not {value!r}")
    return list(values)


def _resolve_tapes(patterns: list[str], base: Path) -> list[str]:
    found: list[str] = []
    for pat in patterns:
        full = Path(pat).expanduser()
        full = full if full.is_absolute() else base / full
        if glob.has_magic(str(full)):
            matches = sorted(glob.glob(str(full), recursive=True))
            if not matches:
                raise ConfigError(f"tapes: {pat!r} matches nothing (relative to {base})")
            found.extend(str(Path(m).resolve()) for m in matches)
        elif full.exists():
            found.append(str(full.resolve()))
        else:
            raise ConfigError(f"tapes: {pat!r}: no such file or folder (relative to {base})")
    # A tape listed twice (a path and a glob) is one tape.
    return list(dict.fromkeys(found))


def parse_grid(data: dict[str, Any], *, base: str | Path = ".", name: str = "sweep", source: str = "<grid>") -> Grid:
    """Check a grid mapping (as read from TOML) and resolve its tapes.

    Args:
        data: the grid's keys (see the module docstring).
        base: the folder relative tape paths and globs start from.
        name: the sweep's label when ``data`` has no ``name``.
        source: where the grid came from, for error messages.

    Returns:
        A :class:`Grid`; pass it to :func:`expand` or :func:`run_sweep`.

    Raises:
        ConfigError: naming the key: an unknown key, an empty list or range, a wrong
            type, a tape path or glob that matches nothing, an unknown profile or a
            parameter the strategy does not have.
    """
    try:
        return _parse_grid(data, Path(base), name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _parse_grid(data: dict[str, Any], base: Path, name: str) -> Grid:
    unknown = [k for k in data if k not in GRID_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (allowed: {', '.join(GRID_KEYS)})")
    if "tapes" not in data:
        raise ConfigError("tapes: missing (give a path, a folder or a glob)")
    label = data.get("name", name)
    if not isinstance(label, str) or not label:
        raise ConfigError(f"name: expected a non-empty string, not {label!r}")
    strategy = data.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise ConfigError(f"strategy: expected module:Class, not {strategy!r}")
    keep = data.get("keep_runs", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"keep_runs: expected true or false, not {keep!r}")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError("params: expected a table of parameter = values")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError("config: expected a table of config overrides")
    owned = [k for k in config if k in _GRID_OWNED]
    if owned:
        raise ConfigError(f"config.{owned[0]}: set it at the top of the grid, not under [config]")
    seeds = _axis("seed", data["seed"]) if "seed" in data else [None]
    if "seed" in data and not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"seed: expected non-negative integers, not {data['seed']!r}")
    intervals = _axis("interval_s", data["interval_s"]) if "interval_s" in data else [None]
    if "interval_s" in data and not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in intervals
    ):
        raise ConfigError(f"interval_s: expected positive numbers of seconds, not {data['interval_s']!r}")
    symbols = _strings("symbols", data["symbols"]) if "symbols" in data else None
    grid = Grid(
        name=label,
        source="",
        strategy=strategy,
        profiles=_strings("profiles", data.get("profiles", "backtest")),
        tapes=_resolve_tapes(_strings("tapes", data["tapes"]), base),
        seeds=seeds,
        intervals=[None if v is None else float(v) for v in intervals],
        symbols=symbols,
        keep_runs=keep,
        params={k: _axis(f"params.{k}", v) for k, v in params.items()},
        config=config,
    )
    _check_params(grid)
    if grid.size > _MAX_JOBS:
        raise ConfigError(f"the grid expands to {grid.size:,} jobs; at most {_MAX_JOBS:,}")
    return grid


def _check_params(grid: Grid) -> None:
    """Refuse parameter names the strategy does not declare, before any job runs."""
    from perpsim.sim.replay import load_strategy

    for profile in grid.profiles:
        cfg = resolve_config(profile, overrides=_overrides(grid.strategy, None, None, grid.symbols, {}, grid.config))
        cls = load_strategy(cfg.strategy)
        for name in grid.params:
            if name not in cls.defaults:
                known = ", ".join(sorted(cls.defaults)) or "none"
                raise ConfigError(f"params.{name}: not a parameter of {cls.__name__} (known: {known})")


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid TOML file; relative tape paths start at the file's folder.

    Raises:
        InputError: the file does not exist.
        ConfigError: the file is not TOML, or a key is wrong (see :func:`parse_grid`).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: grid file not found")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    grid = parse_grid(data, base=p.parent, name=p.stem, source=str(p))
    grid.source = str(p)
    return grid


# --- jobs ------------------------------------------------------------------------------------------


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _overrides(
    strategy: str | None,
    seed: int | None,
    interval_s: float | None,
    symbols: list[str] | None,
    params: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The override mapping merged over a profile, built the same way in parent and worker."""
    over: dict[str, Any] = dict(config)
    if params or "params" in config:
        over["params"] = {**dict(config.get("params", {})), **params}
    if strategy is not None:
        over["strategy"] = strategy
    if seed is not None:
        over["seed"] = seed
    if interval_s is not None:
        over["interval_s"] = interval_s
    if symbols is not None:
        over["symbols"] = list(symbols)
    return over


def tape_hashes(tape: str | Path) -> list[str]:
    """SHA-256 of each file of a tape (a file, or a folder's ``*.parquet`` in name order).

    The same rule as the reader (DESIGN.md §4), so the hashes cover exactly what a
    replay reads.
    """
    p = Path(tape)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".parquet" and not f.name.startswith(".") and f.is_file())
        return [f"{f.name}:{file_sha256(f)}" for f in files]
    return [file_sha256(p)]


def job_key(tape_sha256: Sequence[str], config: dict[str, Any], version: str) -> str:
    """The job key: SHA-256 over tape content hashes, canonical resolved config and version."""
    return hashlib.sha256(_canonical({"tapes": list(tape_sha256), "config": config, "perpsim": version})).hexdigest()


def expand(grid: Grid, *, run_root: str | Path | None = None) -> tuple[list[Job], int]:
    """Expand a grid into jobs, in a fixed order: tape, profile, seed, interval, then params.

    Configs are resolved and each distinct one's strategy is constructed here (in the
    caller's process), as a replay does before it reads its tape, so a combination that
    could never run (``short >= long``, a string or a float for an integer) refuses the
    whole grid before any tape is decoded, instead of failing, being retried and landing
    as a failed row; tapes are hashed here for the keys. Jobs with equal keys (the same
    tape twice, the same value twice) are kept once.

    Args:
        grid: from :func:`load_grid` or :func:`parse_grid`.
        run_root: where jobs write run directories when ``grid.keep_runs``.

    Returns:
        ``(jobs, duplicates_dropped)``.

    Raises:
        ConfigError: the first job whose profile, override or strategy parameters do not
            resolve or construct, naming its profile and parameters.
    """
    from perpsim import __version__

    hashes = {t: tape_hashes(t) for t in grid.tapes}
    names = list(grid.params)
    jobs: list[Job] = []
    seen: set[str] = set()
    checked: set[tuple[str, bytes]] = set()  # (strategy, params) constructed: all the constructor sees
    dropped = 0
    combos = list(itertools.product(*(grid.params[n] for n in names)))
    for tape, profile, seed, interval in itertools.product(grid.tapes, grid.profiles, grid.seeds, grid.intervals):
        for combo in combos:
            params = dict(zip(names, combo))
            over = _overrides(grid.strategy, seed, interval, grid.symbols, params, grid.config)
            try:
                resolved = resolve_config(profile, overrides=over)
                cfg = msgspec.to_builtins(resolved)
                cfg_sha = hashlib.sha256(_canonical(cfg)).hexdigest()
                made = (resolved.strategy, _canonical(cfg["params"]))
                if made not in checked:
                    _check_strategy(resolved)
                    checked.add(made)
            except ConfigError as exc:
                raise ConfigError(f"{grid.source or grid.name}: profile {profile!r} with {params}: {exc}") from exc
            key = job_key(hashes[tape], cfg, __version__)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            jobs.append(
                Job(
                    key=key,
                    index=len(jobs),
                    sweep=grid.name,
                    tape=tape,
                    tape_sha256=hashes[tape],
                    profile=profile,
                    strategy=grid.strategy,
                    seed=seed,
                    interval_s=interval,
                    symbols=grid.symbols,
                    params=params,
                    grid_params=names,
                    config=grid.config,
                    config_sha256=cfg_sha,
                    version=__version__,
                    run_dir=str(Path(run_root) / key[:16]) if grid.keep_runs and run_root is not None else None,
                )
            )
    return jobs, dropped


def _check_strategy(cfg: RunConfig) -> None:
    """Construct the job's strategy as its replay will, and drop it: what the constructor
    refuses there would fail the job on every attempt, after its tape was decoded."""
    from perpsim.core.strategy import make_strategy
    from perpsim.sim.replay import load_strategy

    make_strategy(load_strategy(cfg.strategy), cfg.params)


# --- one job ---------------------------------------------------------------------------------------


def sharpe(equity: Sequence[int], interval_s: float) -> float | None:
    """Annualized Sharpe ratio of per-cycle equity returns.

    ``r_i = E_i / E_{i-1} - 1`` over consecutive cycle equities (``equity.parquet``,
    integer units), risk-free rate 0; ``sharpe = mean(r) / std(r) * sqrt(N)`` with
    the sample standard deviation (ddof 1) and ``N = 365.25 * 86400 / interval_s``
    cycles per year (perpetuals trade around the clock). ``None`` when there are
    fewer than two returns, the returns do not vary, or equity reached zero. Sums
    use :func:`math.fsum` (exactly rounded), so the figure is the same on every
    machine, like the digest.
    """
    if len(equity) < 3:
        return None
    rets: list[float] = []
    for prev, cur in itertools.pairwise(equity):
        if prev <= 0:
            return None
        rets.append(cur / prev - 1.0)
    n = len(rets)
    mean = math.fsum(rets) / n
    var = math.fsum((r - mean) ** 2 for r in rets) / (n - 1)
    if var <= 0.0:
        return None
    return mean / math.sqrt(var) * math.sqrt(_YEAR_S / interval_s)


def run_job(job: Job) -> dict[str, Any]:
    """Run one job (in any process) and return its figures as a results row.

    Raises:
        PerpsimError: a version or tape mismatch (see :func:`run_jobs`), a bad tape
            (``TapeError``) or a bad parameter (``ConfigError``).
    """
    [result] = _run_group([job])
    if isinstance(result, Exception):
        raise result
    return result


def run_jobs(jobs: Sequence[Job], progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run jobs of one tape together (in any process), one :class:`Outcome` per job.

    The tape is decoded once for all of them (:func:`perpsim.sim.replay.replay_many`);
    one job's error fails that job alone. The worker first checks that it has the
    sweep's perpsim version and that the tape's content hashes match the jobs'.
    ``progress`` is called with the tape's rows as each batch is replayed.

    Raises:
        InputError: a version or tape mismatch (every job would compute from other input).
    """
    here = worker_name()
    return [
        Outcome(ok=False, error=error_text(r), worker=here)
        if isinstance(r, Exception)
        else Outcome(ok=True, value=r, worker=here)
        for r in _run_group(jobs, progress)
    ]


def _run_task(task: tuple[list[Job], Any, int]) -> list[Outcome]:
    """:func:`run_jobs` for :func:`fan_out`: ``(jobs, queue, group)``; with a queue, each
    batch's rows (times the jobs that replayed them) go onto it as ``(group, rows)``."""
    jobs, rows, group = task
    if rows is None:
        return run_jobs(jobs)
    k = len(jobs)

    def report(n: int) -> None:
        with contextlib.suppress(Exception):  # the bar is best-effort: a lost queue never fails a job
            rows.put((group, n * k))

    return run_jobs(jobs, report)


def _run_group(jobs: Sequence[Job], progress: Callable[[int], None] | None = None) -> list[dict[str, Any] | Exception]:
    from perpsim import __version__
    from perpsim.sim.replay import RunSpec, replay_many

    tape = jobs[0].tape
    if any(j.tape != tape or j.tape_sha256 != jobs[0].tape_sha256 for j in jobs):
        raise InputError("a job group must share one tape")
    if __version__ != jobs[0].version:
        raise InputError(f"worker {worker_name()} has perpsim {__version__}, the sweep expects {jobs[0].version}")
    if tape_hashes(tape) != jobs[0].tape_sha256:
        raise InputError(f"{tape}: content on worker {worker_name()} differs from when the sweep was planned")
    specs = [
        RunSpec(
            profile=j.profile,
            overrides=_overrides(j.strategy, j.seed, j.interval_s, j.symbols, j.params, j.config),
            out=j.run_dir,
            # Events stay in memory only when there is no run directory to stream them to (memory stays flat).
            keep_events=j.run_dir is None,
        )
        for j in jobs
    ]
    results = replay_many(tape, specs, progress=progress)
    return [r if isinstance(r, Exception) else _figures(j, r, len(jobs)) for j, r in zip(jobs, results, strict=True)]


def _figures(job: Job, result: RunResult, group: int) -> dict[str, Any] | Exception:
    """A job's results row, or an error if its config resolved differently here."""
    if hashlib.sha256(_canonical(result.config)).hexdigest() != job.config_sha256:
        return InputError(f"profile {job.profile!r} resolves differently on worker {worker_name()}")
    s = result.summary
    u = s["units"]
    equity = result.equity["equity"].to_list()
    return {
        "digest": result.digest,
        "pnl": (u["realized"] + u["unrealized"]) / 1e8,
        "net_pnl": (u["final_equity"] - u["cash_start"]) / 1e8,
        "realized": s["realized"],
        "unrealized": s["unrealized"],
        "fees": s["fees"],
        "funding": s["funding"],
        "max_drawdown": s["max_drawdown"],
        "final_equity": s["final_equity"],
        "trades": s["fills"],
        "orders": s["orders"],
        "cycles": s["cycles"],
        "sharpe": sharpe(equity, float(result.config["interval_s"])),
        "rows": s["rows"],
        "events_per_s": None if s["events_per_s"] is None else float(s["events_per_s"]),
        "wall_s": s["wall_s"],
        "group_size": group,
        "run_dir": None if result.run_dir is None else str(result.run_dir),
    }


def _job_row(job: Job, out: Outcome, attempts: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": job.key,
        "sweep": job.sweep,
        "tape": job.tape,
        "profile": job.profile,
        "strategy": job.strategy,
        "seed": job.seed,
        "interval_s": job.interval_s,
    }
    row.update({f"param.{k}": job.params[k] for k in job.grid_params})
    row.update({"status": "ok" if out.ok else "failed", "error": None if out.ok else out.error, "attempts": attempts})
    figures = out.value if out.ok else {}
    for col in RESULT_SCHEMA:
        if col not in row:
            row[col] = figures.get(col)
    row["worker"] = out.worker
    row["perpsim_version"] = job.version
    row["tape_sha256"] = hashlib.sha256("\n".join(job.tape_sha256).encode()).hexdigest()
    return row


# --- the results table -----------------------------------------------------------------------------


class _Results:
    """``results.parquet``: earlier rows, then this run's in job order; rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.old = _read_results(path)
        self.new: dict[int, dict[str, Any]] = {}
        self._flushed = time.monotonic()

    def keys(self, *, status: str | None = None) -> set[str]:
        if self.old is None or self.old.is_empty():
            return set()
        frame = self.old if status is None else self.old.filter(pl.col("status") == status)
        return set(frame["key"].to_list())

    def add(self, index: int, row: dict[str, Any]) -> None:
        self.new[index] = row
        if time.monotonic() - self._flushed >= _FLUSH_S:
            self.flush()

    def frame(self) -> pl.DataFrame:
        rows = [self.new[i] for i in sorted(self.new)]
        schema = {c: RESULT_SCHEMA[c] for c in rows[0] if c in RESULT_SCHEMA} if rows else {}
        new = pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None, strict=False) if rows else None
        old = self.old
        if old is not None and rows:
            # A re-run failed job replaces its old row.
            old = old.filter(~pl.col("key").is_in(sorted(r["key"] for r in rows)))
        parts = [f for f in (old, new) if f is not None]
        if not parts:
            return pl.DataFrame(schema=RESULT_SCHEMA)
        return parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.frame().write_parquet(tmp, compression="zstd")
        os.replace(tmp, self.path)
        self._flushed = time.monotonic()


def _read_results(path: Path) -> pl.DataFrame | None:
    """The table a sweep resumes from (None: none yet). Anything else there is refused before
    any job runs, so a wrong ``--out`` is one clear error, not a traceback or an overwritten file."""
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path}: not a sweep results table (not a file)")
    try:
        frame = pl.read_parquet(path, glob=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"{path}: not a sweep results table ({' '.join(str(exc).split())})") from exc
    for col in ("key", "sweep", "status"):
        if frame.schema.get(col) != RESULT_SCHEMA[col]:
            raise InputError(f"{path}: not a sweep results table (no {col!r} column of strings)")
    return frame


def _check_out(out_dir: Path) -> None:
    """Refuse an ``out`` that cannot become a folder, before any job runs: the folder is
    made only when the table is first written, and that failing would lose every result."""
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{p}: not a folder (the sweep writes {out_dir / 'results.parquet'})")
            return


def _rows_of(tape: str) -> int:
    """A tape's rows, from its footers; 0 when it cannot be opened (its jobs will fail and say why)."""
    try:
        return open_tape(tape).num_rows
    except PerpsimError:
        return 0


class _RowFeed:
    """Rows replayed so far by each group of a sweep's first pass, for the progress bar.

    Workers put ``(group, rows)`` on :attr:`queue` (a manager's queue for a process pool,
    a plain one in this process; None on a Dask cluster) and a thread moves them to the
    bar; a group that lands counts whole, whatever it reported (a cluster reports
    nothing, and a retried group reports its rows twice).
    """

    def __init__(self, bar: ProgressBar, totals: list[int], *, where: str) -> None:
        self.bar = bar
        self.totals = totals
        self.seen = [0] * len(totals)
        self._lock = threading.Lock()
        self._manager: Any = None
        self.queue: Any = None
        if where == "pool":
            # The manager outlives a Ctrl-C (it ignores SIGINT) until close() shuts it down.
            self._manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
            self._manager.start(functools.partial(signal.signal, signal.SIGINT, signal.SIG_IGN))
            self.queue = self._manager.Queue()
        elif where == "here":
            self.queue = queue.SimpleQueue()
        self._thread = None
        if self.queue is not None:
            self._thread = threading.Thread(target=self._drain, name="perpsim-sweep-progress", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(EOFError, OSError):  # the manager is gone: the bar stops moving
            while (msg := self.queue.get()) is not None:
                self.add(*msg)

    def add(self, group: int, rows: int) -> None:
        with self._lock:
            step = min(rows, self.totals[group] - self.seen[group])
            if step > 0:
                self.seen[group] += step
                self.bar.work(step)

    def landed(self, group: int) -> None:
        self.add(group, self.totals[group])

    def close(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(EOFError, OSError):
                self.queue.put(None)
            self._thread.join(timeout=10)
        if self._manager is not None:
            self._manager.shutdown()


def _parallelism(workers: int | None, client: Any) -> int:
    """How many jobs run at once: the pool's processes or the cluster's threads."""
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    if workers is None:
        return cores()
    return max(1, workers)


def _groups(jobs: Sequence[Job], indexes: Sequence[int], slots: int) -> list[list[int]]:
    """``indexes`` of ``jobs`` in groups that share a tape, each replayed from one decode.

    Each tape's jobs are split into contiguous groups of near-equal size: enough groups
    that every slot has work while there are jobs to spread, and none larger than
    :data:`_GROUP_MAX`.
    """
    by_tape: dict[str, list[int]] = {}
    for i in indexes:
        by_tape.setdefault(jobs[i].tape, []).append(i)
    if not by_tape:
        return []
    per_tape = -(-slots // len(by_tape))
    out: list[list[int]] = []
    for idx in by_tape.values():
        k = max(min(per_tape, len(idx)), -(-len(idx) // _GROUP_MAX))
        q, r = divmod(len(idx), k)
        pos = 0
        for c in range(k):
            size = q + (c < r)
            out.append(idx[pos : pos + size])
            pos += size
    return out


def run_sweep(
    grid: Grid | str | Path,
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    retry_failed: bool = False,
    progress: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepReport:
    """Run a grid's jobs that have no result yet and add their rows to ``OUT/results.parquet``.

    The table is rewritten every few seconds and at the end (also on Ctrl-C), so
    an interrupted sweep keeps what finished and a re-run picks up the rest.

    Args:
        grid: a :class:`Grid` or the path of a grid TOML file.
        out: the sweep folder (default ``runs/sweep-<name>``); holds ``results.parquet``,
            ``sweep.json`` and, with ``keep_runs``, ``runs/<key[:16]>/``.
        workers: local pool size (default: the cores this process may use; 0 = in this process).
        scheduler: a Dask scheduler address; the jobs run there instead.
        connect_timeout: seconds to reach the scheduler.
        retry_failed: also re-run jobs recorded as failed (default: skip every known key).
        progress: draw a progress bar on stderr.
        on_row: called with each new row as it lands.

    Returns:
        A :class:`SweepReport`; ``report.table`` is the whole results table.

    Raises:
        ConfigError: a bad grid (see :func:`parse_grid`).
        InputError: an unreachable scheduler, a negative ``workers``, an ``out`` that is
            not a folder or holds a ``results.parquet`` that is not a results table.
    """
    g = load_grid(grid) if isinstance(grid, (str, Path)) else grid
    if workers is not None and workers < 0:
        raise InputError(f"workers must be >= 0, not {workers}")
    out_dir = Path(out) if out is not None else Path("runs") / f"sweep-{g.name}"
    _check_out(out_dir)
    table = _Results(out_dir / "results.parquet")
    jobs, dropped = expand(g, run_root=(out_dir / "runs").resolve())
    failed_before = table.keys(status="failed")
    done = table.keys() - (failed_before if retry_failed else set())
    todo = [j for j in jobs if j.key not in done]
    t0 = time.perf_counter()
    ok = failed = decodes = 0
    # Connect before the bar starts, so an unreachable scheduler is one clear error.
    client = connect_scheduler(scheduler, connect_timeout) if scheduler is not None and todo else None
    # With a bar, it measures rows replayed (each job's tape rows), reported as they go.
    tape_rows = {t: _rows_of(t) for t in dict.fromkeys(j.tape for j in todo)} if progress else {}
    bar = ProgressBar(
        progress, len(todo), f"sweep {g.name}", work=sum(tape_rows[j.tape] for j in todo) if progress else 0
    )
    feed: _RowFeed | None = None

    def land(i: int, outcome: Outcome, attempts: int) -> None:
        nonlocal ok, failed
        row = _job_row(todo[i], outcome, attempts)
        ok, failed = ok + outcome.ok, failed + (not outcome.ok)
        table.add(i, row)
        bar.advance(failed)
        if on_row is not None:
            on_row(row)

    def run_pass(groups: list[list[int]], before: int) -> list[int]:
        """Run ``groups`` (``before``: attempts made already) and land their rows, except
        a job's first failure inside a group that ran: those are returned, to go once more."""
        nonlocal decodes
        again: list[int] = []
        rows = feed.queue if feed is not None and not before else None
        tasks = [([todo[i] for i in grp], rows, k) for k, grp in enumerate(groups)]
        results = fan_out(_run_task, tasks, workers=workers, client=client, retries=1 - before)
        with contextlib.closing(results):
            for k, outcome, attempts in results:
                if feed is not None and not before:
                    feed.landed(k)
                n = before + attempts
                # A group fails whole when its worker died or found other input: every job with it.
                outcomes = outcome.value if outcome.ok else [outcome] * len(groups[k])
                # A decode is a group that replayed to a result: a tape that cannot be read decodes nothing.
                decodes += any(one.ok for one in outcomes)
                for i, one in zip(groups[k], outcomes, strict=True):
                    if one.ok or n > 1:
                        land(i, one, n)
                    else:
                        again.append(i)
        return again

    try:
        slots = _parallelism(workers, client)
        groups = _groups(todo, range(len(todo)), slots)
        if bar.bar is not None:
            where = "cluster" if client is not None else "here" if workers == 0 else "pool"
            feed = _RowFeed(bar, [sum(tape_rows[todo[i].tape] for i in grp) for grp in groups], where=where)
        again = run_pass(groups, 0)
        if again:
            run_pass(_groups(todo, again, slots), 1)
    finally:
        if feed is not None:
            feed.close()
        bar.stop()
        if client is not None:
            client.close()
        if table.new:
            table.flush()
    wall = time.perf_counter() - t0
    report = SweepReport(
        name=g.name,
        out=str(out_dir),
        results=str(table.path),
        jobs=len(jobs),
        skipped=len(jobs) - len(todo),
        ran=len(todo),
        ok=ok,
        failed=failed,
        duplicates=dropped,
        wall_s=round(wall, 3),
        rows=[table.new[i] for i in sorted(table.new)],
        groups=decodes,
        failed_earlier=sum(j.key in failed_before for j in jobs if j.key in done),
    )
    _write_manifest(out_dir, g, report, scheduler, workers)
    return report


def _write_manifest(out_dir: Path, grid: Grid, report: SweepReport, scheduler: str | None, workers: int | None) -> None:
    from perpsim import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "sweep": grid.name,
        "grid": grid.source or None,
        "perpsim_version": __version__,
        "executor": scheduler or f"pool:{workers if workers is not None else cores()}",
        "jobs": report.jobs,
        "skipped": report.skipped,
        "ran": report.ran,
        "ok": report.ok,
        "failed": report.failed,
        "duplicates": report.duplicates,
        "groups": report.groups,
        "wall_s": report.wall_s,
        "results": Path(report.results).name,
        "tapes": grid.tapes,
        "params": grid.params,
    }
    tmp = out_dir / ".sweep.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, out_dir / "sweep.json")
