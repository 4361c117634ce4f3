"""The run catalog: every run directory under a root, queryable with SQL (DESIGN.md §6, §8).

Runs stay where they were written; DuckDB reads their Parquet files in place.
A :class:`Catalog` exposes three views:

* ``runs``   — one row per run directory: ``run_id`` (the directory name), status,
  profile, seed, perpsim version, digest, tape, clock span and the summary's key
  figures (from ``manifest.json`` and ``summary.json``);
* ``events`` — every ``events.parquet`` row with its ``run_id``;
* ``equity`` — every ``equity.parquet`` row with its ``run_id``.

So ``SELECT run_id, count(*) FROM events WHERE kind = 'fill' GROUP BY 1`` works
across all runs. A directory whose manifest cannot be read is listed in ``runs``
with status ``unreadable`` and its reason, and left out of the other two views.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import duckdb
import polars as pl

from perpsim.core.errors import InputError
from perpsim.core.timefmt import fmt_ns
from perpsim.sim.runs import EVENT_SCHEMA

__all__ = ["RUN_COLUMNS", "Catalog"]

RUN_COLUMNS: Final[dict[str, Any]] = {
    "run_id": pl.Utf8,
    "path": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "profile": pl.Utf8,
    "strategy": pl.Utf8,
    "seed": pl.Int64,
    "perpsim_version": pl.Utf8,
    "digest": pl.Utf8,
    "tape": pl.Utf8,
    "tape_sha256": pl.Utf8,
    "first_ns": pl.Int64,
    "last_ns": pl.Int64,
    "rows": pl.Int64,
    "cycles": pl.Int64,
    "orders": pl.Int64,
    "fills": pl.Int64,
    "rejects": pl.Int64,
    "errors": pl.Int64,
    "fees": pl.Float64,
    "funding": pl.Float64,
    "realized": pl.Float64,
    "final_equity": pl.Float64,
    "wall_s": pl.Float64,
}
_EQUITY_COLUMNS: Final = ("ts", "cash", "equity", "unrealized", "realized", "fees", "funding")


def _json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, f"{path.name} missing"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{path.name}: not a JSON object"
    return data, None


def _run_row(d: Path) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row["run_id"], row["path"] = d.name, str(d)
    manifest, why = _json(d / "manifest.json")
    if manifest is None:
        row["status"], row["reason"] = "unreadable", why
        return row
    summary, _ = _json(d / "summary.json")
    summary = summary or {}
    cfg = manifest.get("config") or {}
    tapes = [t for t in manifest.get("tapes") or [] if isinstance(t, dict)]
    row.update(
        status=str(manifest.get("status")),
        profile=manifest.get("profile"),
        strategy=cfg.get("strategy"),
        seed=manifest.get("seed"),
        perpsim_version=manifest.get("perpsim_version"),
        digest=manifest.get("digest"),
        tape=",".join(Path(str(t.get("path"))).name for t in tapes) or None,
        tape_sha256=",".join(str(t.get("sha256")) for t in tapes) or None,
    )
    for key in ("first_ns", "last_ns", "rows", "cycles", "orders", "fills", "rejects", "errors"):
        v = summary.get(key)
        row[key] = int(v) if isinstance(v, int | float) else None
    for key in ("fees", "funding", "realized", "final_equity", "wall_s"):
        v = summary.get(key)
        row[key] = float(v) if isinstance(v, int | float) else None
    return row


class Catalog:
    """The run directories under ``root`` (default ``./runs``), for listing and SQL.

    A run directory is any direct subfolder holding a ``manifest.json``.
    """

    def __init__(self, root: str | Path = "runs") -> None:
        self.root = Path(root)

    def run_dirs(self) -> list[Path]:
        """Run directories in name order (names start with the UTC time, so time order).

        Raises:
            InputError: the root does not exist or is not a folder.
        """
        if not self.root.exists():
            raise InputError(f"{self.root}: no such runs folder (give --root DIR)")
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder")
        return sorted(d for d in self.root.iterdir() if d.is_dir() and (d / "manifest.json").exists())

    def runs(self) -> pl.DataFrame:
        """One row per run directory (see :data:`RUN_COLUMNS`)."""
        rows = [_run_row(d) for d in self.run_dirs()]
        return pl.DataFrame(rows, schema=RUN_COLUMNS) if rows else pl.DataFrame(schema=RUN_COLUMNS)

    def resolve(self, run: str | Path) -> Path:
        """A run directory from a path, a run id under the root, or a unique id prefix.

        Raises:
            InputError: nothing matches, or a prefix matches several runs.
        """
        p = Path(run)
        if p.is_dir():
            return p
        candidate = self.root / str(run)
        if candidate.is_dir():
            return candidate
        if self.root.is_dir():
            matches = [d for d in self.run_dirs() if d.name.startswith(str(run))]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(d.name for d in matches[:5])
                raise InputError(f"run {run!r} is ambiguous under {self.root}: {names}")
        raise InputError(f"run {run!r}: no such run directory (looked in {self.root})")

    def show(self, run: str | Path) -> dict[str, Any]:
        """The manifest and summary of one run, with its files and their sizes.

        Raises:
            InputError: as :meth:`resolve`, or the manifest is unreadable (named).
        """
        d = self.resolve(run)
        manifest, why = _json(d / "manifest.json")
        if manifest is None:
            raise InputError(f"{d / 'manifest.json'}: {why}")
        summary, _ = _json(d / "summary.json")
        files = {f.name: f.stat().st_size for f in sorted(d.iterdir()) if f.is_file()}
        span = None
        if summary and summary.get("first_ns") is not None:
            span = f"{fmt_ns(summary.get('first_ns'))} → {fmt_ns(summary.get('last_ns'))}"
        return {
            "run_id": d.name,
            "path": str(d),
            "span": span,
            "files": files,
            "manifest": manifest,
            "summary": summary,
        }

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with the views ``runs``, ``events`` and ``equity``,
        and ``sweeps`` (every sweep's results table) when the root holds sweeps.

        The Parquet files are read in place by DuckDB; nothing is copied.
        """
        con = duckdb.connect(":memory:")
        runs = self.runs()
        con.register("_runs_frame", runs.to_arrow())
        con.execute("CREATE VIEW runs AS SELECT * FROM _runs_frame")
        good = runs.filter(pl.col("status") != "unreadable")["path"].to_list()
        for name in ("events", "equity"):
            files = [str(Path(p) / f"{name}.parquet") for p in good if (Path(p) / f"{name}.parquet").is_file()]
            if files:
                mapping = pl.DataFrame({"_file": files, "run_id": [Path(f).parent.name for f in files]})
                con.register(f"_{name}_files", mapping.to_arrow())
                file_list = "[" + ", ".join(_sql_str(f) for f in files) + "]"
                con.execute(
                    f"CREATE VIEW {name} AS SELECT m.run_id, p.* EXCLUDE (filename) "
                    f"FROM read_parquet({file_list}, filename = true, union_by_name = true) p "
                    f"JOIN _{name}_files m ON p.filename = m._file"
                )
            else:
                empty = _empty_frame(name)
                con.register(f"_{name}_empty", empty.to_arrow())
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
        sweeps = sorted(str(p) for p in self.root.glob("*/results.parquet"))
        if sweeps:  # perpsim sweep writes <root>/sweep-<name>/results.parquet
            file_list = "[" + ", ".join(_sql_str(f) for f in sweeps) + "]"
            con.execute(
                "CREATE VIEW sweeps AS SELECT regexp_extract(filename, '([^/]+)/results.parquet$', 1) AS sweep, "
                f"* EXCLUDE (filename) FROM read_parquet({file_list}, filename = true, union_by_name = true)"
            )
        return con

    def query(self, sql: str) -> pl.DataFrame:
        """Run SQL over the views; returns a polars DataFrame.

        Raises:
            InputError: DuckDB refused the SQL (its message, on one line).
        """
        con = self.connect()
        try:
            rel = con.sql(sql)
            out: pl.DataFrame = pl.DataFrame() if rel is None else rel.pl()
            return out
        except duckdb.Error as exc:
            raise InputError(f"query: {' '.join(str(exc).split())}") from exc
        finally:
            con.close()


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _empty_frame(name: str) -> pl.DataFrame:
    if name == "events":
        return pl.DataFrame(schema={"run_id": pl.Utf8, **EVENT_SCHEMA})
    schema: dict[str, Any] = {"run_id": pl.Utf8, **{c: pl.Int64 for c in _EQUITY_COLUMNS}}
    return pl.DataFrame(schema=schema)
