"""Run outputs: ``runs/<run_id>/`` with manifest, events, equity and summary (DESIGN.md §6).

The manifest is written first with status ``running`` and rewritten at the end
(``complete`` or ``incomplete``), so a directory never looks complete when it is
not. On bad input the directory is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import polars as pl
import pyarrow.parquet as pq

from perpsim.core.engine import EquityRow
from perpsim.core.errors import InputError, PerpsimError
from perpsim.core.events import RunEvent
from perpsim.core.ledger import to_units, units_to_float
from perpsim.core.timefmt import fmt_ns

if TYPE_CHECKING:
    from perpsim.core.engine import Engine
    from perpsim.core.outbox import Digest


class RunSource(Protocol):
    """What run outputs read from a driver: the replay driver and the live driver both are one."""

    engine: Engine
    digest: Digest
    events: list[RunEvent]
    sink: RunWriter | None
    first_ns: int | None
    last_ns: int | None

    @property
    def drawdown(self) -> Drawdown | None: ...


__all__ = [
    "EVENT_SCHEMA",
    "RUN_FILES",
    "Drawdown",
    "RunResult",
    "RunSource",
    "RunWriter",
    "check_out_file",
    "check_unused",
    "equity_frame",
    "events_frame",
    "file_sha256",
    "fresh_path",
    "new_run_dir",
    "summarize",
    "tape_entries",
    "write_json",
]

# What a run directory holds (README "Replay"), all written by RunWriter.
RUN_FILES: tuple[str, ...] = ("manifest.json", "events.parquet", "equity.parquet", "summary.json")

EVENT_SCHEMA: dict[str, Any] = {
    "ts": pl.Int64,
    "recv_ts": pl.Int64,
    "seq": pl.Int64,
    "kind": pl.Utf8,
    "symbol": pl.Utf8,
    "order_id": pl.Int64,
    "client_id": pl.Utf8,
    "side": pl.Utf8,
    "qty": pl.Float64,
    "price": pl.Float64,
    "liquidity": pl.Utf8,
    "fee": pl.Int64,
    "amount": pl.Int64,
    "cash_after": pl.Int64,
    "position_after": pl.Float64,
    "reason": pl.Utf8,
    "text": pl.Utf8,
}


def events_frame(events: list[RunEvent]) -> pl.DataFrame:
    cols = list(EVENT_SCHEMA)
    rows = [msgspec.structs.astuple(e) for e in events]
    return pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row") if rows else pl.DataFrame(schema=EVENT_SCHEMA)[cols]


def equity_frame(rows: list[EquityRow]) -> pl.DataFrame:
    data = msgspec.to_builtins(rows)
    schema: dict[str, Any] = {
        "ts": pl.Int64,
        "cash": pl.Int64,
        "equity": pl.Int64,
        "unrealized": pl.Int64,
        "realized": pl.Int64,
        "fees": pl.Int64,
        "funding": pl.Int64,
        "positions": pl.List(
            pl.Struct(
                {
                    "symbol": pl.Utf8,
                    "qty": pl.Float64,
                    "entry": pl.Float64,
                    "mark": pl.Float64,
                    "unrealized": pl.Int64,
                    "liq_price": pl.Float64,
                }
            )
        ),
    }
    return pl.DataFrame(data, schema=schema) if data else pl.DataFrame(schema=schema)


class RunResult(msgspec.Struct, kw_only=True):
    """What :func:`perpsim.replay` returns.

    ``run_events`` and ``equity_rows`` are None when the run streamed them to
    ``run_dir`` instead of keeping them; ``events`` and ``equity`` then read the files.
    """

    digest: str
    summary: dict[str, Any]
    run_events: list[RunEvent] | None
    equity_rows: list[EquityRow] | None
    config: dict[str, Any]
    warnings: list[str]
    run_dir: Path | None = None

    @property
    def events(self) -> pl.DataFrame:
        if self.run_events is None and self.run_dir is not None:
            return pl.read_parquet(self.run_dir / "events.parquet")
        return events_frame(self.run_events or [])

    @property
    def equity(self) -> pl.DataFrame:
        if self.equity_rows is None and self.run_dir is not None:
            return pl.read_parquet(self.run_dir / "equity.parquet")
        return equity_frame(self.equity_rows or [])

    def __repr__(self) -> str:
        """A line a person can read: the default repr printed every event of the run."""
        s = self.summary
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir is not None else ""
        return (
            f"RunResult(digest={self.digest[:16]!r}, rows={s.get('rows')}, cycles={s.get('cycles')}, "
            f"fills={s.get('fills')}, final_equity={s.get('final_equity')}, warnings={len(self.warnings)}{where})"
        )


class Drawdown:
    """Running peak-to-trough of per-cycle equity, in ledger units (no history kept)."""

    def __init__(self, start: int) -> None:
        self.peak = start
        self.worst = 0

    def update(self, rows: list[EquityRow]) -> None:
        for r in rows:
            if r.equity > self.peak:
                self.peak = r.equity
            elif self.peak - r.equity > self.worst:
                self.worst = self.peak - r.equity


def _drawdown_of(driver: RunSource) -> int:
    dd = driver.drawdown
    if dd is None:
        dd = Drawdown(driver.engine.ledger.cash_start)
        dd.update(driver.engine.equity_rows)
    return int(dd.worst)


def _describe_error(ev: RunEvent | None) -> str | None:
    """The first error event as one line: a run that failed every cycle said only how often."""
    if ev is None:
        return None
    where = f" ({ev.symbol})" if ev.symbol else ""
    return f"{fmt_ns(ev.ts)}{where} {ev.reason}: {ev.text}" if ev.text else f"{fmt_ns(ev.ts)}{where} {ev.reason}"


def summarize(driver: RunSource, wall_s: float) -> dict[str, Any]:
    eng = driver.engine
    led = eng.ledger
    counts = eng.outbox.counts
    equity_u = to_units(eng.equity_exact())
    unreal_u = equity_u - led.cash
    return {
        "rows": eng.rows,
        "wall_s": round(wall_s, 6),
        "events_per_s": round(eng.rows / wall_s) if wall_s > 0 else None,
        "first_ns": driver.first_ns,
        "last_ns": driver.last_ns,
        "cycles": eng.cycles,
        "decisions": counts.get("decision", 0),
        "orders": counts.get("order", 0),
        "fills": counts.get("fill", 0),
        "rejects": counts.get("reject", 0),
        "funding_payments": counts.get("funding", 0),
        "errors": counts.get("error", 0),
        "first_error": _describe_error(eng.outbox.first_error),
        "cash_start": units_to_float(led.cash_start),
        "cash_end": units_to_float(led.cash),
        "realized": units_to_float(led.realized),
        "fees": units_to_float(led.fees),
        "funding": units_to_float(led.funding),
        "unrealized": units_to_float(unreal_u),
        "final_equity": units_to_float(equity_u),
        "max_drawdown": units_to_float(_drawdown_of(driver)),
        "units": {
            "cash_start": led.cash_start,
            "cash_end": led.cash,
            "realized": led.realized,
            "fees": led.fees,
            "funding": led.funding,
            "unrealized": unreal_u,
            "final_equity": equity_u,
        },
        "reconciles": led.reconciles(),
        "positions": {s: float(p.qty) for s, p in led.positions.items() if p.qty != Fraction(0)},
        "digest": driver.digest.hexdigest(),
        "event_count": driver.digest.count,
    }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tape_entries(tape: Any) -> list[dict[str, str]]:
    """A manifest's ``tapes``: each file of ``tape``, its path and SHA-256."""
    return [{"path": str(f), "sha256": file_sha256(Path(f))} for f in tape.files]


def new_run_dir(root: str | Path = "runs", label: str = "run") -> Path:
    """A fresh ``runs/<UTC time>-<label>`` directory name (not yet created)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return fresh_path(Path(root) / f"{stamp}-{label}")


def fresh_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, … : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def check_unused(path: Path, what: str = "--out") -> None:
    """Refuse a run directory that already holds files: a run written over another would
    leave a mix of both, under a manifest that names only one.

    Raises:
        InputError: ``path`` is a file, or a folder that is not empty.
    """
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise InputError(f"{what} {path}: already exists; choose another folder or remove it")


def check_out_file(path: str | Path, what: str = "") -> Path:
    """Refuse an output path that can never be a file (a folder, or a path below a file),
    before the work whose result it would hold is spent.

    Raises:
        InputError: naming ``what`` (an option) and the path.
    """
    p = Path(path)
    name = f"{what} {p}".strip()
    if p.is_dir():
        raise InputError(f"{name}: is a folder; give a file name")
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{name}: {parent} is a file, not a folder")
    return p


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


class RunWriter:
    """Writes one run directory; ``finish`` or ``abort`` exactly once."""

    def __init__(self, path: str | Path, config: Any, tape: Any, *, tapes: list[dict[str, str]] | None = None) -> None:
        """``tapes``: the manifest's entries for ``tape`` (:func:`tape_entries`), when the
        caller has them already: runs sharing a tape hash its files once."""
        from perpsim import __version__

        self.path = Path(path)
        self._made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._events: pq.ParquetWriter | None = None
        self._equity: pq.ParquetWriter | None = None
        self.manifest: dict[str, Any] = {
            "status": "running",
            "perpsim_version": __version__,
            "profile": config.profile,
            "seed": config.seed,
            "config": msgspec.to_builtins(config),
            "tapes": tapes if tapes is not None else tape_entries(tape),
            "clock": tape.meta.clock,
            "digest": None,
        }
        write_json(self.path / "manifest.json", self.manifest)

    def write_events(self, events: list[RunEvent]) -> None:
        """Append run events as they are drained, so memory does not grow with the run."""
        if events:
            self._events = self._append(self._events, "events.parquet", events_frame(events))

    def write_equity(self, rows: list[EquityRow]) -> None:
        if rows:
            self._equity = self._append(self._equity, "equity.parquet", equity_frame(rows))

    def _append(self, writer: pq.ParquetWriter | None, name: str, frame: pl.DataFrame) -> pq.ParquetWriter:
        table = frame.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(self.path / name, table.schema, compression="zstd")
        writer.write_table(table)
        return writer

    def finish(self, driver: RunSource, wall_s: float, status: str) -> None:
        """Close the run's files and write its summary and final manifest.

        Raises:
            PerpsimError: the summary cannot be made (money out of the ledger's range
                after a failed run); the manifest still records ``status``.
        """
        if driver.sink is not self:  # a driver that did not stream to us
            self.write_events(driver.events)
            self.write_equity(driver.engine.equity_rows)
        for writer, name, empty in (
            (self._events, "events.parquet", events_frame([])),
            (self._equity, "equity.parquet", equity_frame([])),
        ):
            if writer is None:
                empty.write_parquet(self.path / name, compression="zstd")
            else:
                writer.close()
        self._events = self._equity = None
        self.manifest["status"] = status
        self.manifest["digest"] = driver.digest.hexdigest()  # of the events up to an error, if one
        try:
            summary = summarize(driver, wall_s)
        except PerpsimError:
            write_json(self.path / "manifest.json", self.manifest)
            raise
        summary["status"] = status
        write_json(self.path / "summary.json", summary)
        self.manifest["warnings"] = list(driver.engine.warnings)
        write_json(self.path / "manifest.json", self.manifest)

    def abort(self) -> None:
        """Remove the run's files, and its directory if this writer made it: only those,
        so a failed run given an existing folder (``replay(out=".")``) leaves the rest."""
        for w in (self._events, self._equity):
            if w is not None:
                w.close()
        for name in RUN_FILES:
            for p in (self.path / name, self.path / f"{name}.tmp"):
                p.unlink(missing_ok=True)
        if self._made:
            with contextlib.suppress(OSError):  # not empty: someone else's files
                self.path.rmdir()
