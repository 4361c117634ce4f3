"""Sweeps (issue 8, DESIGN.md §8): grids, job keys, fan-out to a pool or a Dask cluster, results.

Tapes are small synthetic files (one hour, a few thousand rows), so every sweep
here runs in about a second. The Dask tests start a 2-worker ``LocalCluster`` on
loopback; the notebook test runs ``notebooks/sweep.ipynb`` with the venv's
``python3`` kernel (``share/jupyter/kernels/python3`` inside the venv, which
jupyter_client starts with this interpreter: no global kernel install).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from perpsim.cli import main, perpsim_cli
from perpsim.cli_sweep import sweep as sweep_command
from perpsim.core.errors import ConfigError, InputError
from perpsim.sim.fanout import fan_out
from perpsim.sim.sweep import (
    expand,
    job_key,
    load_grid,
    parse_grid,
    run_job,
    run_sweep,
    sharpe,
    tape_hashes,
)
from perpsim.tapes import synth

# Columns that say where and how fast a job ran; everything else must match exactly.
TIMING = ["wall_s", "events_per_s", "group_size", "worker"]
# distributed's own chatter at cluster start and shutdown is not ours to fail on: unclosed sockets,
# deprecations in its dependencies, and "Port 8787 is already in use" (should a cluster ever ask for
# the default port while another holds it; the fixture below asks for a free one).
DASK_WARNINGS = [
    pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:(distributed|tornado|dask)"),
]


@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good tapes and one that fails validation (rows out of clock order)."""
    d = tmp_path_factory.mktemp("tapes")
    synth(hours=1, symbols=["BTC-PERP"], seed=1, out=d / "a.parquet")
    synth(hours=1, symbols=["ETH-PERP"], seed=2, out=d / "b.parquet")
    table = pq.read_table(d / "a.parquet")
    pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), d / "unsorted.parquet")
    return d


def write_grid(folder: Path, text: str, name: str = "grid.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def grid_text(tapes: Path, *, tape: str = "[a, b]", params: str = "short = [2, 3]\nlong = [8, 12]") -> str:
    """A grid named ``t`` over tapes ``[a, b]``, ``a``, ``b`` or ``all`` of the fixture (absolute paths)."""
    names = {
        "[a, b]": f'["{tapes}/a.parquet", "{tapes}/b.parquet"]',
        "all": f'"{tapes}/*.parquet"',
        "a": f'"{tapes}/a.parquet"',
        "b": f'"{tapes}/b.parquet"',
    }
    return f'name = "t"\ntapes = {names[tape]}\n\n[params]\n{params}\n'


def btc_only(tapes: Path, *, tape: str = "[a, b]", params: str = "short = [2]\nlong = [8]", name: str = "t") -> str:
    """A grid whose jobs on tape ``b`` (ETH-PERP only) fail as they run: ``symbols`` names BTC-PERP,
    which only a replay of the tape can find missing (every job passes the grid's up-front checks)."""
    text = grid_text(tapes, tape=tape, params=params).replace('name = "t"', f'name = "{name}"')
    return text.replace("\n\n[params]", '\nsymbols = ["BTC-PERP"]\n\n[params]')


BTC_MISSING = "ConfigError: symbols: BTC-PERP not on the tape (it has ETH-PERP)"


def figures(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(TIMING).sort("key")


# --- grids -----------------------------------------------------------------------------------------


def test_grid_expands_lists_ranges_and_fixed_values(tapes: Path) -> None:
    g = parse_grid(
        {
            "tapes": "a.parquet",
            "seed": {"start": 0, "stop": 1},
            "params": {
                "short": [2, 3],
                "long": {"start": 10, "stop": 30, "step": 10},
                "eps_bps": {"start": 0.1, "stop": 0.3, "step": 0.1},
                "confirm": 0,
            },
        },
        base=tapes,
    )
    assert g.params["long"] == [10, 20, 30]
    assert g.params["eps_bps"] == [0.1, 0.2, 0.3]  # decimal steps: no 0.30000000000000004
    assert g.params["confirm"] == [0]
    assert g.seeds == [0, 1]
    down = parse_grid({"tapes": "a.parquet", "params": {"long": {"start": 30, "stop": 10, "step": -10}}}, base=tapes)
    assert down.params["long"] == [30, 20, 10]  # a negative step counts down to stop
    jobs, dropped = expand(g)
    assert len(jobs) == g.size == 2 * 2 * 3 * 3 and dropped == 0
    assert len({j.key for j in jobs}) == len(jobs)
    # Order: tape, profile, seed, interval, then params in file order (last one fastest).
    assert [(j.seed, j.params["short"], j.params["long"], j.params["eps_bps"]) for j in jobs[:4]] == [
        (0, 2, 10, 0.1),
        (0, 2, 10, 0.2),
        (0, 2, 10, 0.3),
        (0, 2, 20, 0.1),
    ]


def test_grid_drops_duplicate_jobs_of_the_same_tape(tapes: Path) -> None:
    g = parse_grid({"tapes": ["a.parquet", "*.parquet", "a.parquet"], "params": {"short": [2, 2]}}, base=tapes)
    assert len(g.tapes) == 3  # a, b, unsorted: listed twice is one tape
    jobs, dropped = expand(g)
    assert len(jobs) == 3 and dropped == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tapes = "a.parquet"\nworkers = 2\n', r"grid.toml: unknown key 'workers' \(allowed: name, "),
        ('tapes = "a.parquet"\n[params]\nlong = {start = 30, stop = 10, step = 5}\n', r"params.long: empty range"),
        # Short of start by less than a step: empty, not [30.0] (int() rounded -0.5 up to 0).
        ('tapes = "a.parquet"\n[params]\nlong = {start = 30, stop = 29.5, step = 1}\n', r"params.long: empty range"),
        ('tapes = "a.parquet"\n[params]\nlong = {start = 1, stop = 1.5, step = -1}\n', r"params.long: empty range"),
        (
            'tapes = "a.parquet"\n[params]\nlong = {start = 1, stop = 5, step = 0}\n',
            r"params.long: range step must not",
        ),
        ('tapes = "a.parquet"\n[params]\nlong = {start = 1, end = 5}\n', r"params.long: unknown key 'end' in range"),
        ('tapes = "a.parquet"\n[params]\nshort = []\n', r"params.short: empty list"),
        ('tapes = "a.parquet"\n[params]\nshrot = [2]\n', r"params.shrot: not a parameter of MACrossover"),
        ('tapes = "a.parquet"\n[params]\nshort = [[2]]\n', r"params.short: values must be numbers"),
        ('tapes = "nope/*.parquet"\n', r"tapes: 'nope/\*.parquet' matches nothing"),
        ('tapes = "missing.parquet"\n', r"tapes: 'missing.parquet': no such file"),
        ("tapes = []\n", r"tapes: empty list"),
        ("[params]\nshort = [2]\n", r"tapes: missing"),
        ('tapes = "a.parquet"\nprofiles = ["nope"]\n', r"unknown profile 'nope'"),
        ('tapes = "a.parquet"\nseed = -1\n', r"seed: expected non-negative integers"),
        ('tapes = "a.parquet"\n[config]\nseed = 3\n', r"config.seed: set it at the top of the grid"),
        ('tapes = "a.parquet"\n[config.venue]\ntaker = 3\n', r"config: .*unknown field `taker`"),
        ('tapes = "a.parquet"\n[params\n', r"grid.toml: not valid TOML"),
    ],
)
def test_grid_errors_name_the_key(tapes: Path, tmp_path: Path, text: str, message: str) -> None:
    path = write_grid(tmp_path, text.replace('"a.parquet"', f'"{tapes / "a.parquet"}"'))
    with pytest.raises(ConfigError, match=message):
        load_grid(path)


def test_cli_grid_error_is_one_line_and_exit_2(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_grid(tmp_path, f'tapes = "{tapes / "a.parquet"}"\n[params]\nlong = {{start = 9, stop = 1}}\n')
    code, out, err = cli("sweep", str(path), "--workers", "0", capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "params.long: empty range {start = 9, stop = 1, step = 1}" in err


@pytest.mark.parametrize(
    ("params", "job", "problem"),
    [
        ("short = [3, 30]\nlong = [20]", "{'short': 30, 'long': 20}", "short (30) must be less than long (20)"),
        ('short = "five"', "{'short': 'five'}", "short must be a positive integer, got 'five'"),
        ("long = {start = 10, stop = 20, step = 2.5}", "{'long': 10.0}", "long must be a positive integer, got 10.0"),
        # A fixed [config.params] value meets the axis: the first job that cannot run is named.
        ("short = [3, 5, 8]\n[config.params]\nlong = 4", "{'short': 5}", "short (5) must be less than long (4)"),
    ],
    ids=["short-not-below-long", "string-for-int", "float-range-for-int", "fixed-config-param"],
)
def test_a_grid_with_jobs_that_cannot_run_is_refused_before_any_job_runs(
    tapes: Path,
    tmp_path: Path,
    cli: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    params: str,
    job: str,
    problem: str,
) -> None:
    from perpsim.sim import sweep as sweep_module

    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a job was sent to run")

    monkeypatch.setattr(sweep_module, "fan_out", no_work)
    grid = write_grid(tmp_path, grid_text(tapes, params=params))
    message = f"{grid}: profile 'backtest' with {job}: {problem}"
    with pytest.raises(ConfigError) as exc:
        expand(load_grid(grid))
    assert str(exc.value) == message
    rows: list[dict[str, Any]] = []
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_sweep(grid, out=tmp_path / "out", workers=0, on_row=rows.append)
    assert rows == [] and not (tmp_path / "out").exists()
    args = ("sweep", str(grid), "--workers", "0", "--out", str(tmp_path / "out"))
    for extra in ((), ("--dry-run",), ("--json",)):
        code, out, err = cli(*args, *extra, capsys=capsys)
        assert (code, out, err) == (2, "", f"perpsim: {message}\n")
    assert not (tmp_path / "out").exists()


def test_jobs_that_pass_the_grid_checks_replay_as_they_do_alone(tapes: Path, tmp_path: Path) -> None:
    import perpsim

    grid = write_grid(tmp_path, grid_text(tapes, tape="a", params="short = [2, 3]\nlong = [8]"))
    report = run_sweep(grid, out=tmp_path / "out", workers=0)
    assert report.ok == 2
    alone = {s: perpsim.replay(tapes / "a.parquet", params={"short": s, "long": 8}).digest for s in (2, 3)}
    assert dict(zip(report.table["param.short"], report.table["digest"], strict=True)) == alone


# --- keys, Sharpe, determinism ---------------------------------------------------------------------


def test_job_key_follows_tape_content_not_its_path(tapes: Path, tmp_path: Path) -> None:
    (tmp_path / "moved.parquet").write_bytes((tapes / "a.parquet").read_bytes())
    cfg = {"profile": "backtest", "params": {"short": 2}}
    a, moved = tape_hashes(tapes / "a.parquet"), tape_hashes(tmp_path / "moved.parquet")
    assert a == moved
    assert job_key(a, cfg, "0.1.0") == job_key(moved, cfg, "0.1.0")
    assert job_key(a, cfg, "0.1.0") != job_key(tape_hashes(tapes / "b.parquet"), cfg, "0.1.0")
    assert job_key(a, cfg, "0.1.0") != job_key(a, {**cfg, "params": {"short": 3}}, "0.1.0")
    assert job_key(a, cfg, "0.1.0") != job_key(a, cfg, "0.2.0")


def test_sharpe_is_mean_over_std_of_cycle_returns_annualized() -> None:
    equity = [100, 110, 99, 108]
    rets = [0.1, -0.1, 108 / 99 - 1]
    mean = sum(rets) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / 2)
    assert sharpe(equity, 60.0) == pytest.approx(mean / std * math.sqrt(365.25 * 86400 / 60))
    assert sharpe([100, 100, 100], 60.0) is None  # no variation
    assert sharpe([100, 101], 60.0) is None  # one return
    assert sharpe([100, 0, 50], 60.0) is None  # equity wiped out


def test_worker_refuses_a_tape_that_changed_since_planning(tapes: Path, tmp_path: Path) -> None:
    tape = tmp_path / "t.parquet"
    tape.write_bytes((tapes / "a.parquet").read_bytes())
    (job,), _ = expand(parse_grid({"tapes": str(tape)}, base=tmp_path))
    tape.write_bytes((tapes / "b.parquet").read_bytes())
    with pytest.raises(InputError, match=r"t.parquet: content on worker .* differs"):
        run_job(job)


# --- running ---------------------------------------------------------------------------------------


def test_failing_jobs_are_retried_once_recorded_and_the_sweep_completes(tapes: Path, tmp_path: Path) -> None:
    grid = write_grid(tmp_path, btc_only(tapes, tape="all"))
    report = run_sweep(grid, out=tmp_path / "out", workers=0)
    assert (report.jobs, report.ran, report.ok, report.failed) == (3, 3, 1, 2)
    # Five groups ran (three, then two retries) but only a's replayed its tape to a result: the
    # unsorted tape fails as it decodes, and b's job stops before it (no BTC-PERP there).
    assert report.groups == 1
    t = report.table.sort("key")
    ok = t.filter(status="ok").row(0, named=True)
    assert ok["attempts"] == 1 and ok["error"] is None and len(ok["digest"]) == 64
    failed = t.filter(status="failed")
    assert failed["attempts"].to_list() == [2, 2]
    assert failed["digest"].null_count() == 2
    errors = sorted(failed["error"].to_list())
    assert errors[0] == BTC_MISSING
    # The bad tape fails its job with the validator's message: file, row and column.
    assert errors[1].startswith("TapeError: ") and "unsorted.parquet row 1 column ts:" in errors[1]


def test_jobs_of_one_tape_are_grouped_to_fill_the_workers_and_no_larger_than_the_cap() -> None:
    from types import SimpleNamespace

    from perpsim.sim.sweep import _groups

    jobs: Any = [SimpleNamespace(tape="a")] * 10 + [SimpleNamespace(tape="b")] * 2 + [SimpleNamespace(tape="a")]
    # Four slots, two tapes: two groups a tape, contiguous, sizes within one of each other.
    assert _groups(jobs, range(13), 4) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 12], [10], [11]]
    assert _groups(jobs, range(13), 1) == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12], [10, 11]]
    assert _groups(jobs, [3, 11], 8) == [[3], [11]]
    many: Any = [SimpleNamespace(tape="a")] * 40
    assert [len(g) for g in _groups(many, range(40), 1)] == [14, 13, 13]  # at most 16 share a decode
    assert _groups(jobs, [], 2) == []


def test_default_pool_follows_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from perpsim.sim.sweep import _parallelism
    from perpsim.tapes.reader import cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cores() == 1 and _parallelism(None, None) == 1
    assert _parallelism(3, None) == 3 and _parallelism(0, None) == 1


def test_a_group_shares_one_decode_and_each_job_keeps_its_own_figures(tapes: Path, tmp_path: Path) -> None:
    grid = write_grid(tmp_path, grid_text(tapes, tape="a", params="short = [2, 3, 4]\nlong = [8, 12]"))
    report = run_sweep(grid, out=tmp_path / "out", workers=0)
    t = report.table
    assert report.ok == 6 and report.groups == 1 and t["group_size"].to_list() == [6] * 6
    assert t["wall_s"].n_unique() == 1  # the group's wall time
    jobs, _ = expand(load_grid(grid))
    assert {j.key: run_job(j)["digest"] for j in jobs} == dict(zip(t["key"], t["digest"], strict=True))
    assert t["digest"].n_unique() > 1


def test_a_group_reports_each_batch_of_rows_it_replays(tmp_path: Path) -> None:
    import queue

    from perpsim.sim.sweep import _run_task

    sample = Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))  # 143,338 rows
    jobs, _ = expand(parse_grid({"tapes": str(sample), "params": {"short": [2, 3], "long": [8]}}, base=tmp_path))
    rows: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    outcomes = _run_task((jobs, rows, 7))
    assert [o.ok for o in outcomes] == [True, True]
    got = []
    while not rows.empty():
        got.append(rows.get())
    assert len(got) == 3 and {g for g, _ in got} == {7}  # three batches of 65,536 rows or fewer
    assert sum(n for _, n in got) == 2 * 143_338


@pytest.mark.parametrize("workers", [0, 2])
def test_the_progress_bar_measures_every_jobs_rows(
    tapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    from perpsim.sim import sweep as sweep_module

    bars: list[Any] = []

    class Recording(sweep_module.ProgressBar):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.units = 0
            bars.append(self)

        def work(self, units: int) -> None:
            self.units += units
            super().work(units)

    monkeypatch.setattr(sweep_module, "ProgressBar", Recording)
    grid = write_grid(tmp_path, grid_text(tapes))
    report = run_sweep(grid, out=tmp_path / "out", workers=workers, progress=True)
    (bar,) = bars
    per_tape = {t: pq.ParquetFile(t).metadata.num_rows for t in report.table["tape"].unique()}
    assert report.ok == 8 and bar.done == 8
    assert bar.units == sum(per_tape[t] for t in report.table["tape"])


def test_rerun_skips_finished_jobs_and_runs_only_new_ones(tapes: Path, tmp_path: Path) -> None:
    grid = write_grid(tmp_path, btc_only(tapes))
    first = run_sweep(grid, out=tmp_path / "out", workers=0)
    assert (first.ok, first.failed) == (1, 1)
    again = run_sweep(grid, out=tmp_path / "out", workers=0)
    assert (again.ran, again.skipped) == (0, 2)
    assert figures(again.table).equals(figures(first.table))
    write_grid(tmp_path, btc_only(tapes, params="short = [2, 3]\nlong = [8]"))
    more = run_sweep(grid, out=tmp_path / "out", workers=0)
    assert (more.ran, more.skipped, more.table.height) == (2, 2, 4)
    retried = run_sweep(grid, out=tmp_path / "out", workers=0, retry_failed=True)
    assert (retried.ran, retried.failed, retried.table.height) == (2, 2, 4)  # replaced, not appended


def test_fan_out_retries_a_flaky_call_once() -> None:
    calls: list[int] = []

    def flaky(x: int) -> int:
        calls.append(x)
        if calls.count(x) == 1:
            raise RuntimeError(f"first try of {x}")
        return x * 10

    got = sorted((i, o.ok, o.value, n) for i, o, n in fan_out(flaky, [1, 2], workers=0))
    assert got == [(0, True, 10, 2), (1, True, 20, 2)]
    ((_, out, n),) = fan_out(lambda x: 1 / 0, [1], workers=0)
    assert (out.ok, n) == (False, 2) and out.error.startswith("ZeroDivisionError: division by zero (at ")


def test_pool_reports_workers_that_die_on_start_up() -> None:
    t0 = time.monotonic()
    with pytest.raises(InputError, match="worker processes died before finishing any job, twice"):
        list(fan_out(os._exit, [3], workers=1))
    assert time.monotonic() - t0 < 30


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """DASK_WARNINGS as a context: module fixtures set up and tear down outside the marked tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Port .* is already in use", UserWarning)
        warnings.filterwarnings("ignore", category=ResourceWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="(distributed|tornado|dask)")
        yield


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A 2-worker, 2-process LocalCluster on loopback, shared by the Dask tests."""
    from distributed import LocalCluster

    # dashboard_address=None still binds the scheduler's HTTP server to 127.0.0.1:8787, which collides
    # with any other cluster on the machine (parallel test sessions); port 0 takes a free port.
    with quiet_dask():
        c = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", host="127.0.0.1"
        )
    try:
        yield c
    finally:
        with quiet_dask():
            c.close()


def _dask(fn: Any) -> Any:
    for mark in DASK_WARNINGS:
        fn = mark(fn)
    return fn


@_dask
def test_sweep_on_local_pool_and_dask_cluster_give_identical_tables(tapes: Path, tmp_path: Path, cluster: Any) -> None:
    grid = write_grid(tmp_path, grid_text(tapes) + "eps_bps = [0.0]\n")
    pool = run_sweep(grid, out=tmp_path / "pool", workers=2)
    dask = run_sweep(grid, out=tmp_path / "dask", scheduler=cluster.scheduler_address, connect_timeout=10)
    assert (pool.ran, pool.ok, dask.ran, dask.ok) == (8, 8, 8, 8)
    a, b = pool.table, dask.table
    assert a.columns == b.columns
    assert "param.short" in a.columns and "param.eps_bps" in a.columns
    assert figures(a).equals(figures(b))
    assert a["trades"].sum() > 0 and a["sharpe"].null_count() < a.height
    # Rows are in job order whichever worker finished first.
    assert a["key"].to_list() == b["key"].to_list()


@_dask
def test_same_job_gives_the_same_digest_on_every_worker(tapes: Path, cluster: Any) -> None:
    from distributed import Client

    (job,), _ = expand(parse_grid({"tapes": "b.parquet", "params": {"short": 3, "long": 9}}, base=tapes))
    here = run_job(job)
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        futures = [client.submit(run_job, job, workers=[w], pure=False) for w in workers]
        there = client.gather(futures)
    assert {r["digest"] for r in there} == {here["digest"]}
    assert all(r["sharpe"] == here["sharpe"] and r["pnl"] == here["pnl"] for r in there)


@_dask
def test_unreachable_scheduler_fails_fast_with_a_clear_message(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = write_grid(tmp_path, grid_text(tapes, tape="a"))
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"cannot reach Dask scheduler tcp://127.0.0.1:1 within 2 s"):
        run_sweep(grid, out=tmp_path / "out", scheduler="tcp://127.0.0.1:1", connect_timeout=2)
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "out" / "results.parquet").exists()
    code, _, err = cli("sweep", str(grid), "--scheduler", "nonsense", capsys=capsys)
    assert (
        code == 2
        and err == "perpsim: scheduler address 'nonsense': expected tcp://HOST:PORT (or tls://, or HOST:PORT)\n"
    )


# --- drift over many runs -------------------------------------------------------------------------


def test_drift_many_pairs_the_runs_of_two_sweeps_and_reports_each_pair(
    tapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from perpsim.cli_sweep import drift_many_cli
    from perpsim.core.errors import CheckFailed
    from perpsim.sim.drift import Thresholds
    from perpsim.sim.drift_many import drift_many

    base = grid_text(tapes, params="short = [3]\nlong = [9]").replace('name = "t"', "keep_runs = true")
    for name, extra in (("a", ""), ("b", ""), ("fees", "\n[config.venue]\ntaker_bps = 6.0\n")):
        report = run_sweep(write_grid(tmp_path, base + extra, f"{name}.toml"), out=tmp_path / name, workers=0)
        assert report.ok == 2 and all(Path(r["run_dir"], "manifest.json").is_file() for r in report.rows)

    same = drift_many(tmp_path / "a" / "runs", tmp_path / "b" / "runs", workers=0)
    assert (same.pairs, same.ok, same.drift, same.errors, same.unpaired) == (2, 2, 0, 0, 0)
    assert same.table["identical"].to_list() == [True, True]
    assert same.table["digest_a"].to_list() == same.table["digest_b"].to_list()

    # Another fee: the configs differ, so each run pairs on its tape alone, and the events do not match.
    fees = drift_many(
        tmp_path / "a" / "runs", tmp_path / "fees" / "runs", workers=0, thresholds=Thresholds(identical=True)
    )
    assert (fees.pairs, fees.drift) == (2, 2)
    assert all("identical" in r["failed_checks"] for r in fees.rows)

    broken = sorted((tmp_path / "b" / "runs").iterdir())[0]
    (broken / "events.parquet").write_bytes(b"not parquet")
    out = tmp_path / "drift.parquet"
    with pytest.raises(CheckFailed, match=r"drift --many: 0 drifted and 1 not compared of 2 pairs; 0 unpaired runs$"):
        drift_many_cli(tmp_path / "a" / "runs", tmp_path / "b" / "runs", workers=0, out=out, as_json=True)
    data = json.loads(capsys.readouterr().out)
    (error,) = [r for r in data["pairs_table"] if r["status"] == "error"]
    assert error["attempts"] == 2 and "events.parquet" in error["error"]
    assert pl.read_parquet(out)["status"].sort().to_list() == ["error", "ok"]

    good = broken.parent / sorted(p.name for p in broken.parent.iterdir())[1]
    one = drift_many(tmp_path / "a" / "runs", good)
    assert (one.pairs, one.unpaired) == (1, 1)
    # A pair is two runs: one pair and one unpaired run are not "of 2 runs".
    with pytest.raises(CheckFailed, match=r"drift --many: 0 drifted and 0 not compared of 1 pair; 1 unpaired run$"):
        drift_many_cli(tmp_path / "a" / "runs", good, workers=0, as_json=True)
    capsys.readouterr()

    # Two runs a tape on one side, one on the other: the extra runs replayed the same tapes
    # but have no config left to pair with, which is what their rows say.
    two = grid_text(tapes, params="short = [3, 4]\nlong = [9]").replace('name = "t"', "keep_runs = true")
    run_sweep(write_grid(tmp_path, two, "two.toml"), out=tmp_path / "two", workers=0)
    more = drift_many(tmp_path / "a" / "runs", tmp_path / "two" / "runs", workers=0)
    assert (more.pairs, more.unpaired) == (2, 2)
    unpaired = [r for r in more.rows if r["status"] == "unpaired"]
    assert all(r["run_b"] and "replayed the same tapes, but none with the same config" in r["error"] for r in unpaired)
    one_run = sorted((tmp_path / "fees" / "runs").iterdir())[0]  # the other tape's run has no counterpart
    other = drift_many(tmp_path / "a" / "runs", one_run)
    assert [r["error"] for r in other.rows if r["status"] == "unpaired"] == [
        f"no run in {one_run} replayed the same tapes"
    ]


# --- CLI and notebook ------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Iterator[Any]:
    """Run ``perpsim ...`` through ``main`` (one-line errors, exit codes) with ``sweep`` attached."""
    added = "sweep" not in perpsim_cli.commands
    if added:
        perpsim_cli.add_command(sweep_command)

    def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    if added:
        perpsim_cli.commands.pop("sweep", None)


def test_cli_sweep_summary_json_and_exit_status(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = write_grid(tmp_path, btc_only(tapes, params="short = [2, 3]\nlong = [8]"))
    out_dir = tmp_path / "out"
    code, out, err = cli("sweep", str(grid), "--workers", "0", "--out", str(out_dir), capsys=capsys)
    assert code == 1  # jobs failed: recorded, reported, and the status says so
    assert (
        "sweep t: top 2 of 2 by PnL (USD)" in out
        and "4 jobs: 4 ran (2 ok, 2 failed), 0 already in the table; 1 tape decode;" in out
    )
    assert err.splitlines() == [
        f"failed: b.parquet {{'short': 2, 'long': 8}}: {BTC_MISSING}",
        f"failed: b.parquet {{'short': 3, 'long': 8}}: {BTC_MISSING}",
        f"perpsim: sweep t: 2 of 4 jobs failed; see {out_dir / 'results.parquet'}",
    ]
    code, out, err = cli("sweep", str(grid), "--out", str(out_dir), "--json", capsys=capsys)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["jobs"], data["ran"], data["skipped"], data["groups"]) == (4, 0, 4, 0)
    assert [r["param.short"] for r in data["top"]] == sorted(
        [2, 3], key=lambda s: -next(r["pnl"] for r in data["top"] if r["param.short"] == s)
    )
    manifest = json.loads((out_dir / "sweep.json").read_text())
    assert manifest["jobs"] == 4 and manifest["results"] == "results.parquet"
    code, out, _ = cli("sweep", str(grid), "--dry-run", capsys=capsys)
    assert code == 0 and out == "sweep t: 4 jobs over 2 tape(s); nothing run (--dry-run)\n"
    code, _, err = cli("sweep", str(grid), "--workers", "2", "--scheduler", "tcp://h:1", capsys=capsys)
    assert code == 2 and "--workers and --scheduler exclude each other" in err


def test_summary_counts_only_this_grids_earlier_failures(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_grid(tmp_path, btc_only(tapes, tape="b", name="o"), "o.toml")
    mine = write_grid(tmp_path, grid_text(tapes, tape="a", params="short = [2]"))
    out_dir = str(tmp_path / "out")
    assert cli("sweep", str(other), "--workers", "0", "--out", out_dir, capsys=capsys)[0] == 1
    # The other grid's failed row is not this grid's to re-run: no "failed earlier" for it.
    code, out, _ = cli("sweep", str(mine), "--workers", "0", "--out", out_dir, capsys=capsys)
    assert code == 0 and "failed earlier" not in out
    code, out, _ = cli("sweep", str(other), "--workers", "0", "--out", out_dir, "--json", capsys=capsys)
    assert (code, json.loads(out)["failed_earlier"]) == (0, 1)
    code, out, _ = cli("sweep", str(other), "--workers", "0", "--out", out_dir, capsys=capsys)
    assert "1 failed earlier (--retry-failed re-runs them)" in out
    assert run_sweep(other, out=out_dir, workers=0, retry_failed=True).failed_earlier == 0


@pytest.mark.parametrize("kind", ["file", "file-above", "tape", "junk"])
def test_an_out_that_cannot_hold_the_results_is_refused_before_any_job_runs(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    grid = write_grid(tmp_path, grid_text(tapes, tape="a", params="short = [2, 3]"))
    out_dir, message = tmp_path / "out", "out/results.parquet: not a sweep results table ("
    if kind.startswith("file"):
        out_dir.write_bytes(b"notes")
        message = "out: not a folder (the sweep writes "
        out_dir = out_dir / "sub" if kind == "file-above" else out_dir
    else:
        out_dir.mkdir()
        (out_dir / "results.parquet").write_bytes(b"junk" if kind == "junk" else (tapes / "a.parquet").read_bytes())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rows: list[dict[str, Any]] = []
    with pytest.raises(InputError, match=re.escape(message)):
        run_sweep(grid, out=out_dir, workers=0, on_row=rows.append)
    assert rows == [] and {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    code, out, err = cli("sweep", str(grid), "--workers", "0", "--out", str(out_dir), capsys=capsys)
    assert (code, out, err.count("\n")) == (2, "", 1) and message in err


@pytest.mark.parametrize("timeout", ["nan", "inf", "0"])
def test_a_timeout_dask_cannot_take_is_one_line_and_exit_2(
    tapes: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from perpsim.cli_sweep import drift_many_cli

    grid = write_grid(tmp_path, grid_text(tapes, tape="a"))
    code, out, err = cli("sweep", str(grid), "--scheduler", "tcp://127.0.0.1:1", "--timeout", timeout, capsys=capsys)
    assert (code, out) == (2, "")
    assert err == f"perpsim: --timeout must be a positive number of seconds, not {float(timeout):g}\n"
    with pytest.raises(ConfigError, match="--timeout must be a positive number"):
        drift_many_cli(tmp_path, tmp_path, scheduler="tcp://127.0.0.1:1", connect_timeout=float(timeout))


def test_cli_sweep_help(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli("sweep", "--help", capsys=capsys)
    assert code == 0
    for option in ("--workers", "--scheduler", "--timeout", "--out", "--json", "--retry-failed", "--dry-run"):
        assert option in out


@pytest.mark.filterwarnings("ignore::DeprecationWarning:(jupyter_client|jupyter_core|nbclient|zmq)")
@pytest.mark.parametrize("given", [True, False], ids=["test-results", "own-demo-sweep"])
def test_notebook_runs_top_to_bottom(tapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb_path = Path(__file__).resolve().parents[2] / "notebooks" / "sweep.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if given:
        grid = write_grid(tmp_path, grid_text(tapes, tape="all"))
        report = run_sweep(grid, out=tmp_path / "out", workers=0)
        assert report.failed == 4  # the unsorted tape: the failures cell has rows to show
        params.source = params.source.replace("RESULTS = None", f"RESULTS = {report.results!r}")
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the heatmap was not drawn"
