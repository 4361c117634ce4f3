"""Drift checks over many runs: pair run directories and compare each pair in parallel (DESIGN.md §8).

``perpsim drift RUN_A RUN_B`` compares two runs (:mod:`perpsim.sim.drift`). Over a
set of recordings and their replays, or two code versions across many tapes, the
same comparison runs once per pair, fanned out like a sweep
(:func:`perpsim.sim.fanout.fan_out`: a process pool or a Dask cluster), and the
results land in one table. Pairs are found from the runs' manifests, so directory
names do not matter: equal tape content hashes and an equal config (its description
aside), except that a tape with exactly one run on each side pairs on the tape alone,
whatever the two configs (:func:`pair_runs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from perpsim.core.errors import InputError
from perpsim.sim.fanout import ProgressBar, connect_scheduler, fan_out

__all__ = ["DRIFT_SCHEMA", "DriftManyReport", "DriftTask", "drift_many", "pair_runs"]


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


DRIFT_SCHEMA: dict[str, Any] = {
    "run_a": pl.Utf8,
    "run_b": pl.Utf8,
    "tape_sha256": pl.Utf8,
    "status": pl.Utf8,
    "identical": pl.Boolean,
    "failed_checks": pl.Utf8,
    "first_divergence_ts": pl.Int64,
    "first_divergence_kind": pl.Utf8,
    "decision_agreement": pl.Float64,
    "fills_a": pl.Int64,
    "fills_b": pl.Int64,
    "pnl_diff": pl.Float64,
    "equity_max_abs_diff": pl.Float64,
    "digest_a": pl.Utf8,
    "digest_b": pl.Utf8,
    "warnings": pl.Utf8,
    "error": pl.Utf8,
    "attempts": pl.Int64,
}
"""Columns of :func:`drift_many`'s table. ``status``: ``ok`` (within the thresholds),
``drift`` (a threshold exceeded: ``failed_checks`` says which), ``error`` (the pair
could not be compared: ``error``), ``unpaired`` (no run on the other side)."""


class DriftTask(msgspec.Struct, frozen=True, kw_only=True):
    """One comparison of two run directories; picklable for the workers."""

    a: str
    b: str
    thresholds: Any = None
    force: bool = False
    timing_tolerance_ns: int = 0


class DriftManyReport(msgspec.Struct, kw_only=True):
    """What :func:`drift_many` found: counts by status and one row per pair (see ``DRIFT_SCHEMA``)."""

    pairs: int
    ok: int
    drift: int
    errors: int
    unpaired: int
    wall_s: float
    rows: list[dict[str, Any]]
    results: str | None = None

    @property
    def table(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=DRIFT_SCHEMA) if self.rows else pl.DataFrame(schema=DRIFT_SCHEMA)


def _run_dirs(root: str | Path) -> list[Path]:
    """A run directory itself, or every run directory below a folder (a sweep's ``runs/``)."""
    p = Path(root)
    if (p / "manifest.json").is_file():
        return [p]
    if not p.is_dir():
        raise InputError(f"{p}: no such run directory or folder of runs")
    found = sorted(m.parent for m in p.rglob("manifest.json"))
    if not found:
        raise InputError(f"{p}: no run directories (folders with manifest.json) below it")
    return found


def _manifest_keys(path: Path) -> tuple[str, str]:
    """(tape hashes, canonical config without what may legitimately differ) of a run directory."""
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path / 'manifest.json'}: unreadable: {exc}") from exc
    tapes = ",".join(str(t.get("sha256")) for t in m.get("tapes") or [] if isinstance(t, dict))
    cfg = dict(m.get("config") or {})
    cfg.pop("description", None)
    return tapes, hashlib.sha256(_canonical(cfg)).hexdigest()


def pair_runs(a: str | Path, b: str | Path) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair the run directories under ``a`` with those under ``b`` that replayed the same tapes.

    A pair has equal tape content hashes and, where several runs share the tapes
    (a sweep), an equal config; a run whose tapes appear once on each side pairs
    on the tapes alone (a live session and its replay under another profile).

    Returns:
        ``(pairs, unpaired_a, unpaired_b)``, each in path order.

    Raises:
        InputError: a path that is neither a run directory nor a folder of them.
    """
    runs_a, runs_b = _run_dirs(a), _run_dirs(b)
    keys_a = {p: _manifest_keys(p) for p in runs_a}
    keys_b = {p: _manifest_keys(p) for p in runs_b}
    pairs: list[tuple[Path, Path]] = []
    free_b = dict(keys_b)
    for pa, ka in keys_a.items():
        match = next((pb for pb, kb in free_b.items() if kb == ka), None)
        if match is None:
            same_tapes_a = [p for p, k in keys_a.items() if k[0] == ka[0]]
            same_tapes_b = [p for p, k in free_b.items() if k[0] == ka[0]]
            if len(same_tapes_a) == 1 and len(same_tapes_b) == 1:
                match = same_tapes_b[0]
        if match is not None:
            pairs.append((pa, match))
            del free_b[match]
    paired_a = {pa for pa, _ in pairs}
    return pairs, [p for p in runs_a if p not in paired_a], sorted(free_b)


def _drift_pair(task: DriftTask) -> dict[str, Any]:
    """Compare one pair in a worker; only the figures travel back, not the frames."""
    from perpsim.sim.drift import compare_runs, failure_line

    rep = compare_runs(
        task.a, task.b, thresholds=task.thresholds, force=task.force, timing_tolerance_ns=task.timing_tolerance_ns
    )
    first = rep.first_divergence or {}
    fills = rep.counts.get("fill", {})
    return {
        "status": "ok" if rep.ok else "drift",
        "identical": rep.identical,
        "failed_checks": None if rep.ok else failure_line(rep),
        "first_divergence_ts": first.get("ts_a") if first.get("ts_a") is not None else first.get("ts_b"),
        "first_divergence_kind": first.get("kind_a") or first.get("kind_b"),
        "decision_agreement": rep.decision_agreement,
        "fills_a": fills.get("a", 0),
        "fills_b": fills.get("b", 0),
        "pnl_diff": rep.money.get("pnl", {}).get("diff"),
        "equity_max_abs_diff": rep.equity_max_abs_diff,
        "digest_a": rep.run_a.get("digest"),
        "digest_b": rep.run_b.get("digest"),
        "warnings": "; ".join(rep.warnings) or None,
    }


def drift_many(
    a: str | Path,
    b: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    thresholds: Any = None,
    force: bool = False,
    timing_tolerance_ns: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
) -> DriftManyReport:
    """Drift-check every pair of runs under ``a`` and ``b`` in parallel; one summary table.

    Typical uses: the runs of a recording set against their replays, or two code
    versions across a set of tapes (a sweep with ``keep_runs = true`` under each
    version, then ``drift_many(old/runs, new/runs)``). Pairs come from
    :func:`pair_runs`; each is :func:`perpsim.sim.drift.compare_runs` in a worker,
    retried once if it raises, and a pair that cannot be compared is a row with
    ``status = "error"``, not the end of the check.

    Args:
        a, b: a run directory or a folder of them; A is the reference.
        workers, scheduler, connect_timeout: where to run, as :func:`perpsim.sim.sweep.run_sweep`.
        thresholds: a :class:`perpsim.sim.drift.Thresholds` (default: its defaults).
        force, timing_tolerance_ns: as :func:`perpsim.sim.drift.compare_runs`.
        out: also write the table to this Parquet file.
        progress: draw a progress bar on stderr.

    Returns:
        A :class:`DriftManyReport`; a check failed when ``drift``, ``errors`` or
        ``unpaired`` is non-zero (the CLI raises ``CheckFailed`` then).

    Raises:
        InputError: a path holds no runs, or the scheduler cannot be reached.
    """
    pairs, only_a, only_b = pair_runs(a, b)
    tasks = [
        DriftTask(a=str(pa), b=str(pb), thresholds=thresholds, force=force, timing_tolerance_ns=timing_tolerance_ns)
        for pa, pb in pairs
    ]
    t0 = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    client = connect_scheduler(scheduler, connect_timeout) if scheduler is not None and tasks else None
    bar = ProgressBar(progress, len(tasks), "drift")
    results = fan_out(_drift_pair, tasks, workers=workers, client=client)
    try:
        with contextlib.closing(results):
            for i, outcome, attempts in results:
                row = dict.fromkeys(DRIFT_SCHEMA)
                row.update(run_a=tasks[i].a, run_b=tasks[i].b, tape_sha256=_manifest_keys(pairs[i][0])[0])
                row.update(outcome.value if outcome.ok else {"status": "error", "error": outcome.error})
                row["attempts"] = attempts
                rows[i] = row
                bar.advance(sum(r["status"] != "ok" for r in rows.values()))
    finally:
        bar.stop()
        if client is not None:
            client.close()
    ordered = [rows[i] for i in sorted(rows)]
    runs_of = {"a": [pa for pa, _ in pairs] + only_a, "b": [pb for _, pb in pairs] + only_b}
    tapes_of = {side: {_manifest_keys(q)[0] for q in runs} for side, runs in runs_of.items()}
    for side, paths in (("a", only_a), ("b", only_b)):
        other, other_side = (b, "b") if side == "a" else (a, "a")
        for p in paths:
            tapes = _manifest_keys(p)[0]
            row = dict.fromkeys(DRIFT_SCHEMA)
            row.update({f"run_{side}": str(p), "tape_sha256": tapes, "status": "unpaired"})
            row["error"] = (
                f"runs in {other} replayed the same tapes, but none with the same config is left to pair"
                if tapes in tapes_of[other_side]
                else f"no run in {other} replayed the same tapes"
            )
            ordered.append(row)
    count = {s: sum(r["status"] == s for r in ordered) for s in ("ok", "drift", "error", "unpaired")}
    report = DriftManyReport(
        pairs=len(pairs),
        ok=count["ok"],
        drift=count["drift"],
        errors=count["error"],
        unpaired=count["unpaired"],
        wall_s=round(time.perf_counter() - t0, 3),
        rows=ordered,
        results=None if out is None else str(out),
    )
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        report.table.write_parquet(tmp, compression="zstd")
        os.replace(tmp, path)
    return report
