"""The run catalog: every run directory under a root, queryable with SQL (DESIGN.md §6, §8).

Runs stay where they were written; DuckDB reads their Parquet files in place.
A :class:`Catalog` exposes four views (``sweeps`` only when the root holds a sweep):

* ``runs``   — one row per run directory: ``run_id`` (the directory name), status,
  profile, seed, perpsim version, digest, tape, clock span and the summary's key
  figures (from ``manifest.json`` and ``summary.json``);
* ``events`` — every ``events.parquet`` row with its ``run_id``;
* ``equity`` — every ``equity.parquet`` row with its ``run_id``;
* ``sweeps`` — every ``<root>/<folder>/results.parquet`` row (a sweep's table) with
  the folder's name as ``sweep_dir`` (the table's own ``sweep`` is the grid's name).

So ``SELECT run_id, count(*) FROM events WHERE kind = 'fill' GROUP BY 1`` works
across all runs. A directory whose manifest cannot be read, or holds fields of the
wrong type, is listed in ``runs`` with status ``unreadable`` and its reason, and
left out of the other views. A Parquet file DuckDB cannot read is left out of its
view and named in :attr:`Catalog.warnings`, so one damaged file does not stop
every query; the files of a run still ``running`` cannot be read until it ends, so
they are left out with one line in :attr:`Catalog.notes` instead. ``runs`` lists
runs oldest first, by ``started_ns``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
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
    "started_ns": pl.Int64,
}
_STAMP: Final = re.compile(r"(\d{8}T\d{6})Z?(?:[^0-9]|$)")
_EQUITY_COLUMNS: Final = ("ts", "cash", "equity", "unrealized", "realized", "fees", "funding")
# Manifest fields the catalog reads, and the JSON type each must have when present.
_MANIFEST_TYPES: Final[dict[str, type]] = {
    "config": dict,
    "tapes": list,
    "seed": int,
    "profile": str,
    "perpsim_version": str,
    "digest": str,
}


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


def _int64(v: Any) -> int | None:
    """``v`` as an Int64 column value, or None: JSON allows NaN, Infinity and huge integers."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) >= 2**63:
        return None
    return int(v)


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """Why a valid-JSON manifest still cannot be listed (a field of the wrong type), or None.

    Checked up front so a hand-edited manifest makes its run ``unreadable`` instead of
    crashing ``runs ls`` for every run.
    """
    for key, typ in _MANIFEST_TYPES.items():
        v = manifest.get(key)
        if v is not None and (not isinstance(v, typ) or isinstance(v, bool)):
            return f"manifest.json: {key} is {type(v).__name__}, not {typ.__name__}"
    if _int64(manifest.get("seed")) != manifest.get("seed"):
        return f"manifest.json: seed {manifest['seed']} is out of range"
    strategy = (manifest.get("config") or {}).get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        return f"manifest.json: config.strategy is {type(strategy).__name__}, not str"
    return None


def _name_stamp_ns(name: str) -> int | None:
    """The UTC start time both writers put at the front of a run folder's name, or None.

    A replay writes ``20261125T033243-…`` and a live session ``20261125T033544Z-…``: sorted as
    text the two formats do not interleave by time, parsed they do.
    """
    m = _STAMP.match(name)
    if m is None:
        return None
    try:
        t = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * 1_000_000_000


def _mtime_start_ns(d: Path, status: str | None, summary: dict[str, Any]) -> int | None:
    """The start time the files say: the manifest's modification time, which is the start
    for a run still ``running`` (the manifest is rewritten only at the end) and the end
    otherwise, less the summary's wall time. Lost when the folder is copied, so second to
    the stamp in the name."""
    try:
        mtime_ns = (d / "manifest.json").stat().st_mtime_ns
    except OSError:
        return None
    wall_s = summary.get("wall_s")
    if status != "running" and isinstance(wall_s, int | float) and math.isfinite(wall_s) and wall_s >= 0:
        mtime_ns -= round(wall_s * 1e9)
    return mtime_ns


def _started_ns(d: Path, status: str | None, summary: dict[str, Any]) -> tuple[int | None, int | None]:
    """When the run started (ns since the epoch, UTC), and the files' finer estimate to
    order runs stamped in the same second.

    The stamp both writers put in the folder's name when there is one; else what the
    files say. (Not ``first_ns``: a replay's clock is its tape's, not the wall's.)
    """
    stamp, files = _name_stamp_ns(d.name), _mtime_start_ns(d, status, summary)
    if stamp is None:
        return files, files
    if files is not None and stamp <= files < stamp + 1_000_000_000:
        return files, files  # the same time, finer
    return stamp, files


def _run_row(d: Path) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row["run_id"], row["path"] = d.name, str(d)
    manifest, why = _json(d / "manifest.json")
    why = why if manifest is None else _manifest_problem(manifest)
    if manifest is None or why is not None:
        row["status"], row["reason"] = "unreadable", why
        row["started_ns"], row["_files_ns"] = _started_ns(d, None, {})
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
        row[key] = _int64(summary.get(key))
    for key in ("fees", "funding", "realized", "final_equity", "wall_s"):
        v = summary.get(key)
        row[key] = float(v) if isinstance(v, int | float) else None
    row["started_ns"], row["_files_ns"] = _started_ns(d, row["status"], summary)
    return row


class Catalog:
    """The run directories under ``root`` (default ``./runs``), for listing and SQL.

    A run directory is any direct subfolder holding a ``manifest.json``.
    """

    def __init__(self, root: str | Path = "runs") -> None:
        self.root = Path(root)
        self.warnings: list[str] = []  # files the last connect() left out, and why
        self.notes: list[str] = []  # what it left out on purpose (runs still running)

    def run_dirs(self) -> list[Path]:
        """Run directories in name order (:meth:`runs` lists them by start time).

        Raises:
            InputError: the root does not exist or is not a folder.
        """
        if not self.root.exists():
            raise InputError(f"{self.root}: no such runs folder (give --root DIR)")
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder")
        return sorted(d for d in self.root.iterdir() if d.is_dir() and (d / "manifest.json").exists())

    def runs(self) -> pl.DataFrame:
        """One row per run directory (see :data:`RUN_COLUMNS`), oldest first.

        By ``started_ns`` (runs without one last), then by name: folder names come in two
        formats, so name order is not time order.
        """
        rows = [_run_row(d) for d in self.run_dirs()]
        rows.sort(key=lambda r: (r["started_ns"] is None, r["started_ns"] or 0, r["_files_ns"] or 0, r["run_id"]))
        # the schema leaves the sort's _files_ns out
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
        why = why if manifest is None else _manifest_problem(manifest)
        if manifest is None or why is not None:
            raise InputError(f"{d}: {why}")
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

        The Parquet files are read in place by DuckDB; nothing is copied. A file DuckDB
        cannot open is left out of its view and named in :attr:`warnings`, so one damaged
        run does not break every query.
        """
        con = duckdb.connect(":memory:")
        self.warnings, self.notes = [], []
        runs = self.runs()
        con.register("_runs_frame", runs.to_arrow())
        con.execute("CREATE VIEW runs AS SELECT * FROM _runs_frame")
        good = runs.filter(pl.col("status") != "unreadable")["path"].to_list()
        running = set(runs.filter(pl.col("status") == "running")["path"].to_list())
        left_running: set[str] = set()
        for name in ("events", "equity"):
            paths = [Path(p) / f"{name}.parquet" for p in good]
            files = self._readable(con, [str(f) for f in paths if f.is_file() and str(f.parent) not in running], name)
            # A running run's files are still being written (no Parquet footer until the run
            # ends): unreadable by design, so left out without a warning, unless they read.
            for f in (f for f in paths if f.is_file() and str(f.parent) in running):
                if self._reads(con, str(f)) is None:
                    files.append(str(f))
                else:
                    left_running.add(str(f.parent))
            if files:
                mapping = pl.DataFrame({"_file": files, "run_id": [Path(f).parent.name for f in files]})
                con.register(f"_{name}_files", mapping.to_arrow())
                con.execute(
                    f"CREATE VIEW {name} AS SELECT m.run_id, p.* EXCLUDE (filename) "
                    f"FROM read_parquet({_sql_list(files)}, filename = true, union_by_name = true) p "
                    f"JOIN _{name}_files m ON p.filename = m._file"
                )
            else:
                empty = _empty_frame(name)
                con.register(f"_{name}_empty", empty.to_arrow())
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
        if left_running:
            n = len(left_running)
            self.notes.append(
                f"{n} running run{'s' if n > 1 else ''} left out of the events and equity views "
                "(files still being written)"
            )
        # perpsim sweep writes <root>/sweep-<name>/results.parquet
        sweeps = self._readable(con, sorted(str(p) for p in self.root.glob("*/results.parquet")), "sweeps")
        if sweeps:
            con.execute(
                "CREATE VIEW sweeps AS SELECT regexp_extract(filename, '([^/]+)/results.parquet$', 1) AS sweep_dir, "
                f"* EXCLUDE (filename) FROM read_parquet({_sql_list(sweeps)}, filename = true, union_by_name = true)"
            )
        return con

    def _readable(self, con: duckdb.DuckDBPyConnection, files: list[str], view: str) -> list[str]:
        """The files whose Parquet schema DuckDB can read; the others go to :attr:`warnings`.

        One pass over every footer first (``union_by_name`` reads each schema); a file at
        a time only when that fails, so a large healthy catalog pays one pass.
        """
        if not files:
            return files
        try:
            con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_list(files)}, union_by_name = true)").fetchall()
            return files
        except duckdb.Error:
            pass
        ok = []
        for f in files:
            reason = self._reads(con, f)
            if reason is None:
                ok.append(f)
            else:
                self.warnings.append(f"{f}: unreadable, left out of the {view} view ({reason})")
        return ok

    @staticmethod
    def _reads(con: duckdb.DuckDBPyConnection, file: str) -> str | None:
        """None when DuckDB can read the file's Parquet schema, else why not (one line)."""
        try:
            con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_str(file)})").fetchall()
        except duckdb.Error as exc:
            return str(exc).strip().splitlines()[0]  # DuckDB's first line; the rest echoes the SQL
        return None

    def query(self, sql: str) -> pl.DataFrame:
        """Run SQL over the views; returns a polars DataFrame.

        Raises:
            InputError: the SQL is empty, or DuckDB refused it (its message, on one line).
        """
        if not sql.strip():
            raise InputError("query: the SQL is empty (e.g. 'SELECT * FROM runs')")
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


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_str(s) for s in items) + "]"


def _empty_frame(name: str) -> pl.DataFrame:
    if name == "events":
        return pl.DataFrame(schema={"run_id": pl.Utf8, **EVENT_SCHEMA})
    schema: dict[str, Any] = {"run_id": pl.Utf8, **{c: pl.Int64 for c in _EQUITY_COLUMNS}}
    return pl.DataFrame(schema=schema)
