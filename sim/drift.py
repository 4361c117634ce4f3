"""Drift review: how far two runs of the bot are apart, and whether that is too far.

The two runs are run directories (DESIGN.md §6): typically a live session and the
replay of its recording with the replay's own scheduler (``--ignore-timer-rows``,
which measures timing drift), or yesterday's code and today's on the same tape.
Because replay is deterministic, every difference is real: it comes from the code,
the configuration or the timing, never from noise.

What is compared, and why:

* **the first divergent event** — events are compared in order, field by field
  (time, kind, symbol, order id, side, quantity, price, money, position, reason,
  text); the first row where they differ is where the runs stopped agreeing, and
  everything after it is a consequence;
* **decision agreement per symbol** — the k-th decision about a symbol in one run
  against the k-th in the other (one per cycle), so an insertion early on does not
  make every later decision look different;
* **order and fill counts**, **fill price drift** in bps over fills paired the same
  way, **PnL, fee and funding** differences, the **position path** per cycle, and
  **timing drift** (event ``ts`` differences over paired events);
* the origin's **48-hour checklist** (:func:`checklist`), per run, saying which
  metrics only a live run can provide.

Thresholds come from :class:`Thresholds` (defaults, a TOML file, options);
:func:`drift` raises :class:`~perpsim.core.errors.CheckFailed` when one is
exceeded. Unusable run directories, different tapes and incompatible versions are
refused with :class:`~perpsim.core.errors.InputError` unless ``force`` is set.
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import polars as pl

from perpsim.core.config import RunConfig
from perpsim.core.errors import CheckFailed, ConfigError, InputError
from perpsim.core.timefmt import fmt_ns
from perpsim.sim.runs import EVENT_SCHEMA, file_sha256
from perpsim.tapes.reader import open_tape

__all__ = [
    "CHECKLIST",
    "DEFAULT",
    "DriftReport",
    "RunData",
    "Thresholds",
    "checklist",
    "checklist_note",
    "compare_runs",
    "config_diff",
    "divergences",
    "drift",
    "equity_paths",
    "failure_line",
    "fill_pairs",
    "flatten",
    "fmt_value",
    "load_run",
    "load_thresholds",
    "position_paths",
    "quantile",
]

_UNIT: Final = 10**8  # ledger units per currency unit (DESIGN.md §5)
_MS: Final = 1e6
_EVENT_COLUMNS: Final = tuple(EVENT_SCHEMA)
_MARKET_KINDS: Final = ("trade", "quote", "book", "mark", "funding")
_PRICE_KINDS: Final = ("trade", "quote", "mark")


# -- loading ----------------------------------------------------------------------


class RunData:
    """One run directory, loaded: manifest, events, equity and (if present) summary.

    Build it with :func:`load_run`, which checks every file and names the one that is
    missing or unreadable.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        events: pl.DataFrame,
        equity: pl.DataFrame,
        summary: dict[str, Any] | None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.events = events
        self.equity = equity
        self.summary = summary

    @property
    def run_id(self) -> str:
        """The directory name, as the run catalog names runs."""
        return self.path.name

    @property
    def tape_hashes(self) -> list[str]:
        return [str(t.get("sha256")) for t in self.manifest.get("tapes") or [] if isinstance(t, dict)]

    @property
    def starting_units(self) -> int:
        """The starting balance in ledger units, from the run's config."""
        cfg = self.manifest.get("config") or {}
        bal = (cfg.get("venue") or {}).get("starting_balance")
        if bal is None and self.summary:
            return int((self.summary.get("units") or {}).get("cash_start", 0))
        return round(float(bal or 0.0) * _UNIT)

    def __repr__(self) -> str:
        return f"RunData({str(self.path)!r}, {self.events.height} events)"


def _read_json(path: Path, *, required: bool = True) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise InputError(f"{path}: missing (is {path.parent} a run directory?)")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: missing (is {path.parent} a complete run directory?)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a damaged file
        raise InputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def load_run(path: str | Path) -> RunData:
    """Load a run directory written by ``perpsim replay`` (or the live driver).

    Raises:
        InputError: the directory, ``manifest.json``, ``events.parquet`` or
            ``equity.parquet`` is missing or unreadable; the message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such run directory")
    if not p.is_dir():
        raise InputError(f"{p}: not a directory (give a run directory holding manifest.json)")
    manifest = _read_json(p / "manifest.json")
    assert manifest is not None
    for key in ("status", "perpsim_version", "tapes"):
        if key not in manifest:
            raise InputError(f"{p / 'manifest.json'}: missing key {key!r}")
    events = _read_parquet(p / "events.parquet", _EVENT_COLUMNS)
    events = events.select(pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items())
    equity = _read_parquet(p / "equity.parquet", ("ts", "cash", "equity", "positions"))
    summary = _read_json(p / "summary.json", required=False)
    return RunData(p, manifest, events, equity, summary)


def _version_key(v: str) -> tuple[int, int]:
    parts = [*v.split("+")[0].split("."), "0", "0"][:2]
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except ValueError:
        return (-1, -1)


def _compatible(va: str, vb: str) -> bool:
    """Semantic versioning: same major, and for 0.x the same minor (the event schema may change)."""
    ka, kb = _version_key(va), _version_key(vb)
    if ka[0] != kb[0]:
        return False
    return ka[0] != 0 or ka[1] == kb[1]


def _check_pair(a: RunData, b: RunData, force: bool) -> list[str]:
    """Refuse comparisons that would mislead; with ``force`` they become warnings."""
    problems: list[str] = []
    ha, hb = a.tape_hashes, b.tape_hashes
    if ha and hb and ha != hb:
        problems.append(
            f"the runs replayed different tapes ({a.path} tape sha256 {','.join(h[:12] for h in ha)}, "
            f"{b.path} tape sha256 {','.join(h[:12] for h in hb)})"
        )
    va, vb = str(a.manifest["perpsim_version"]), str(b.manifest["perpsim_version"])
    if not _compatible(va, vb):
        problems.append(f"incompatible perpsim versions ({a.path}: {va}, {b.path}: {vb})")
    for r in (a, b):
        if r.manifest.get("status") != "complete":
            problems.append(f"{r.path / 'manifest.json'}: run status is {r.manifest.get('status')!r}, not 'complete'")
    warnings: list[str] = []
    if problems and not force:
        raise InputError(f"drift: {problems[0]}; pass --force to compare anyway")
    warnings.extend(f"forced: {p}" for p in problems)
    for r in (a, b):
        if not r.tape_hashes:
            warnings.append(f"{r.path}: the manifest lists no tape, so the tapes cannot be checked to be the same")
    return warnings


# -- thresholds -------------------------------------------------------------------


# A share outside [0, 1] or a negative limit can never be met (or is always met): refused.
_Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Limit = Annotated[float, msgspec.Meta(ge=0.0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class Thresholds(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Limits a drift review checks; ``None`` switches a check off.

    The defaults suit "the same bot on the same tape": every decision, order and
    fill agrees, and fill prices stay within 5 bps. Money limits are in the
    settlement currency, timing limits in milliseconds, position limits in base
    units; ``max_position_cycles_differing`` is the share of cycles at which any
    position differs. In a TOML file put the keys at the top level or under ``[drift]``.
    """

    identical: bool = False
    min_decision_agreement: _Share | None = 0.99
    max_order_count_diff: _Count | None = 0
    max_fill_count_diff: _Count | None = 0
    max_fill_drift_bps_p95: _Limit | None = 5.0
    max_fill_drift_bps_max: _Limit | None = None
    max_pnl_diff: _Limit | None = None
    max_fee_diff: _Limit | None = None
    max_funding_diff: _Limit | None = None
    max_position_diff: _Limit | None = None
    max_position_cycles_differing: _Share | None = 0.01
    max_timing_drift_ms_p95: _Limit | None = None
    max_timing_drift_ms_max: _Limit | None = None


def load_thresholds(path: str | Path | None = None, **overrides: Any) -> Thresholds:
    """Defaults, then a TOML file, then keyword overrides (``None`` values are ignored).

    Raises:
        InputError: the file is missing or not TOML.
        ConfigError: an unknown key or a value of the wrong type, named.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: thresholds file not found")
        try:
            raw = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
        table = raw.get("drift", raw)
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: [drift] must be a table")
        data.update(table)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(data, type=Thresholds)
    except msgspec.ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}drift thresholds: {exc}") from exc


# -- comparisons ------------------------------------------------------------------


class DriftReport(msgspec.Struct, kw_only=True):
    """Everything :func:`compare_runs` found; ``to_dict()`` is the ``--json`` output.

    ``ok`` is False when a threshold in ``checks`` was exceeded.
    """

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    identical: bool
    warnings: list[str]
    config_diff: list[dict[str, Any]]
    first_divergence: dict[str, Any] | None
    counts: dict[str, dict[str, int]]
    symbols: dict[str, dict[str, Any]]
    decision_agreement: float | None
    fill_drift_bps: dict[str, Any]
    money: dict[str, dict[str, float]]
    equity_max_abs_diff: float
    positions: dict[str, dict[str, Any]]
    timing_ms: dict[str, Any]
    checklist: dict[str, dict[str, Any]]
    checks: list[dict[str, Any]]
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The checks that exceeded their limit."""
        return [c for c in self.checks if not c["ok"]]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (``params.short``), in key order."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k in sorted(d):
        out.update(flatten(d[k], f"{prefix}{k}."))
    return out


DEFAULT: Final = "(default)"  # a parameter a run left to its strategy, whose default cannot be looked up
_ABSENT: Final = object()


@functools.lru_cache(maxsize=32)
def _strategy_defaults(spec: str) -> dict[str, Any] | None:
    """The ``defaults`` of the strategy class ``module:Class``, or None when it cannot be loaded."""
    from perpsim.sim.replay import load_strategy

    try:
        return dict(load_strategy(spec).defaults)
    except Exception:  # the user's module may raise anything on import; the diff just says "(default)"
        return None


def _param_default(config: dict[str, Any], key: str) -> Any:
    """What a run used for ``params.<path>`` it did not set: its strategy's default, or :data:`DEFAULT`."""
    spec = config.get("strategy") or RunConfig().strategy
    value: Any = _strategy_defaults(str(spec)) if isinstance(spec, str) else None
    for part in key.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return DEFAULT
        value = value[part]
    return value


def config_diff(ca: dict[str, Any], cb: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, a, b)`` for every flattened config key whose values differ.

    A strategy parameter one run left out is shown as the value that run used (its
    strategy's default), not None: "params.short None → 4" hid that the run used 5, and a
    run that set a parameter to its default does not differ from one that left it out.
    """
    fa, fb = flatten(ca), flatten(cb)
    out = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, _ABSENT), fb.get(key, _ABSENT)
        if key.startswith("params."):
            va = _param_default(ca, key) if va is _ABSENT else va
            vb = _param_default(cb, key) if vb is _ABSENT else vb
        va, vb = (None if v is _ABSENT else v for v in (va, vb))
        if va != vb:
            out.append((key, va, vb))
    return out


def _config_diff(a: RunData, b: RunData) -> list[dict[str, Any]]:
    diff = config_diff(a.manifest.get("config") or {}, b.manifest.get("config") or {})
    return [{"key": k, "a": va, "b": vb} for k, va, vb in diff]


def _event_dict(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: v for k, v in row.items() if v is not None}


def _first_divergence(a: pl.DataFrame, b: pl.DataFrame, timing_tol_ns: int) -> dict[str, Any] | None:
    """The first index where the event streams differ in any field (ts within tolerance)."""
    n = min(a.height, b.height)
    cols = list(_EVENT_COLUMNS)
    idx: int | None = None
    fields: list[str] = []
    if n:
        ha, hb = a.head(n), b.head(n)
        masks = []
        for c in cols:
            if c in ("ts", "recv_ts") and timing_tol_ns > 0:
                m = (ha[c] - hb[c]).abs() > timing_tol_ns
            else:
                m = ~ha[c].eq_missing(hb[c])
            masks.append(m.fill_null(True))
        frame = pl.DataFrame({c: m for c, m in zip(cols, masks)})
        any_diff = frame.select(pl.any_horizontal(pl.all()).alias("d"))["d"]
        hits = any_diff.arg_true()
        if hits.len():
            idx = int(hits[0])
            fields = [c for c in cols if bool(frame[c][idx])]
    if idx is None:
        if a.height == b.height:
            return None
        idx = n
        fields = ["(event missing)"]
    ra = a.row(idx, named=True) if idx < a.height else None
    rb = b.row(idx, named=True) if idx < b.height else None
    return {
        "index": idx,
        "after_identical": idx,
        "ts_a": None if ra is None else ra["ts"],
        "ts_b": None if rb is None else rb["ts"],
        "time_a": None if ra is None else fmt_ns(ra["ts"]),
        "time_b": None if rb is None else fmt_ns(rb["ts"]),
        "kind_a": None if ra is None else ra["kind"],
        "kind_b": None if rb is None else rb["kind"],
        "fields": fields,
        "a": _event_dict(ra),
        "b": _event_dict(rb),
    }


def _keyed(df: pl.DataFrame) -> pl.DataFrame:
    """Number events per (kind, symbol): the k-th of its kind about its symbol."""
    return df.with_columns(pl.col("symbol").fill_null("*").alias("sym")).with_columns(
        pl.int_range(pl.len()).over(["kind", "sym"]).alias("nth")
    )


def _paired(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Events of both runs side by side, paired by (kind, symbol, k-th); ``_b`` columns are run B's.

    ``matched`` marks pairs that are the same event (see below); ``both`` pairs present in both runs.
    """
    ka, kb = _keyed(a), _keyed(b)
    j = ka.join(kb, on=["kind", "sym", "nth"], how="full", suffix="_b", coalesce=True, nulls_equal=True)
    # The same event: everything but timing, sequence and money/price fields agrees. Prices
    # and money may differ (a live fill vs its replay); an order id alone is only a run-local
    # counter, so after a divergence equal ids are different orders unless side and size agree.
    ident = pl.all_horizontal(
        [pl.col(c).eq_missing(pl.col(f"{c}_b")) for c in ("order_id", "side", "qty", "reason", "text")]
    )
    both = pl.col("seq").is_not_null() & pl.col("seq_b").is_not_null()
    return j.with_columns((both & ident).alias("matched"), both.alias("both"))


def quantile(s: pl.Series, q: float) -> float | None:
    """The ``q`` quantile (linear interpolation) of a series, None when it is empty."""
    if s.len() == 0:
        return None
    v = s.quantile(q, interpolation="linear")
    return None if v is None else float(v)


def _stats(s: pl.Series) -> dict[str, Any]:
    s = s.drop_nulls().cast(pl.Float64)
    return {
        "n": s.len(),
        "p50": quantile(s, 0.5),
        "p95": quantile(s, 0.95),
        "p99": quantile(s, 0.99),
        "max": None if s.len() == 0 else float(s.max()),  # type: ignore[arg-type]
    }


_SUMMARY_MONEY: Final = ("cash_start", "realized", "fees", "funding", "final_equity")


def _summary_units(run: RunData) -> dict[str, int] | None:
    """The summary's end-of-run money in ledger units, or None when the run has none usable."""
    units = (run.summary or {}).get("units")
    if isinstance(units, dict) and all(isinstance(units.get(k), int) for k in _SUMMARY_MONEY):
        return {k: int(units[k]) for k in _SUMMARY_MONEY}
    return None


def _money(run: RunData, from_summary: bool = True) -> dict[str, int]:
    """End-of-run money in ledger units: the summary's when the run wrote one, so drift agrees
    exactly with ``summary.json`` and ``runs show``. The last equity row is the last cycle's,
    before anything booked after it at the same time (a funding payment at the final cycle).
    ``from_summary`` False: the events' and equity's figures, as for the other run of a pair
    that has no summary (two sources would show a difference neither run has)."""
    u = _summary_units(run) if from_summary else None
    if u is not None:
        return {
            "pnl": u["final_equity"] - u["cash_start"],
            "realized": u["realized"],
            "fees": u["fees"],
            "funding": u["funding"],
            "final_equity": u["final_equity"],
        }
    # No summary (a run that never finished): the nearest figures its events and equity hold.
    ev, start = run.events, run.starting_units
    fills = ev.filter(pl.col("kind") == "fill")
    funding = ev.filter(pl.col("kind") == "funding")
    final_equity = int(run.equity["equity"][-1]) if run.equity.height else start
    return {
        "pnl": final_equity - start,
        "realized": int(fills["amount"].fill_null(0).sum()),
        "fees": int(fills["fee"].fill_null(0).sum()),
        "funding": int(funding["amount"].fill_null(0).sum()),
        "final_equity": final_equity,
    }


def _positions_long(equity: pl.DataFrame) -> pl.DataFrame:
    """(ts, symbol, qty) for every cycle and every symbol ever held (0 when flat)."""
    held = (
        equity.select("ts", "positions")
        .explode("positions")
        .drop_nulls("positions")
        .select("ts", pl.col("positions").struct.field("symbol"), pl.col("positions").struct.field("qty"))
    )
    syms = held["symbol"].unique().sort()
    grid = (
        equity.select("ts")
        .unique()
        .sort("ts")
        .join(pl.DataFrame({"symbol": syms}, schema={"symbol": pl.Utf8}), how="cross")
    )
    return grid.join(held, on=["ts", "symbol"], how="left").with_columns(pl.col("qty").fill_null(0.0))


def position_paths(a: RunData, b: RunData) -> pl.DataFrame:
    """Per cycle and symbol: ``qty_a``, ``qty_b`` (0 when flat or absent) and ``diff``."""
    pa_, pb = _positions_long(a.equity), _positions_long(b.equity)
    j = pa_.join(pb, on=["ts", "symbol"], how="full", suffix="_b", coalesce=True)
    return (
        j.rename({"qty": "qty_a"})
        .with_columns(pl.col("qty_a").fill_null(0.0), pl.col("qty_b").fill_null(0.0))
        .with_columns((pl.col("qty_b") - pl.col("qty_a")).alias("diff"))
        .sort("ts", "symbol")
    )


def equity_paths(a: RunData, b: RunData) -> pl.DataFrame:
    """Per cycle: equity of both runs in currency units and the difference B - A."""
    ea = a.equity.select("ts", (pl.col("equity") / _UNIT).alias("equity_a"))
    eb = b.equity.select("ts", (pl.col("equity") / _UNIT).alias("equity_b"))
    j = ea.join(eb, on="ts", how="full", coalesce=True).sort("ts")
    return j.with_columns((pl.col("equity_b") - pl.col("equity_a")).alias("diff"))


def fill_pairs(a: RunData, b: RunData) -> pl.DataFrame:
    """Fills paired per symbol in order (the k-th fill of a symbol in each run).

    A pair counts only when it is the same fill: same order id, side and quantity (its
    price may differ; that difference is the drift).
    """
    p = _paired(a.events.filter(pl.col("kind") == "fill"), b.events.filter(pl.col("kind") == "fill"))
    return (
        p.filter(pl.col("matched"))
        .select(
            "sym",
            "nth",
            "side",
            pl.col("ts").alias("ts_a"),
            "ts_b",
            pl.col("price").alias("price_a"),
            "price_b",
            pl.col("qty").alias("qty_a"),
            "qty_b",
        )
        .rename({"sym": "symbol"})
        .with_columns(((pl.col("price_b") - pl.col("price_a")) / pl.col("price_a") * 1e4).alias("drift_bps"))
    )


def divergences(a: RunData, b: RunData, limit: int | None = 50) -> pl.DataFrame:
    """Paired events (by kind, symbol and k-th) whose content differs, in run A's order.

    Timing (``ts``, ``recv_ts``) and ``seq`` are left out: this lists *what* differs,
    :func:`compare_runs` reports *when* separately.
    """
    p = _paired(a.events, b.events)
    content = [c for c in _EVENT_COLUMNS if c not in ("ts", "recv_ts", "seq", "kind", "symbol")]
    diff = pl.any_horizontal([~pl.col(c).eq_missing(pl.col(f"{c}_b")) for c in content])
    out = p.filter(diff | ~pl.col("both")).sort(pl.coalesce("seq", "seq_b"))
    cols = ["kind", "sym", "nth", "ts", "ts_b"] + [x for c in content for x in (c, f"{c}_b")]
    out = out.select(cols).rename({"sym": "symbol", "ts": "ts_a"})
    return out if limit is None else out.head(limit)


# -- the 48-hour checklist ---------------------------------------------------------

CHECKLIST: Final[dict[str, str]] = {
    "mark_updates_per_min": "mark update rate: price rows (trade/quote/mark) per minute, weakest symbol",
    "heartbeat_lag_p95_ms": "heartbeat lag p95: how late the cycle timer fired after its deadline",
    "mark_freshness_p95_s": "mark freshness p95: age of the newest price at each cycle",
    "mark_freshness_max_s": "mark freshness max",
    "order_failure_rate": "order failure rate: rejects / (orders + rejects)",
    "order_latency_p99_ms": "order latency p99: order accepted → first fill",
    "feed_lag_p99_ms": "feed lag p99: recv_ts - ts of market rows",
    "memory_mb": "memory (RSS)",
    "cpu_pct": "CPU",
}


def _tape_frame(run: RunData) -> tuple[pl.DataFrame | None, str]:
    """The run's tape rows (ts, recv_ts, kind, symbol, text, next_ts), or None and why not."""
    tapes = [t for t in run.manifest.get("tapes") or [] if isinstance(t, dict)]
    if not tapes:
        return None, "the manifest lists no tape"
    files: list[Path] = []
    for t in tapes:
        p = Path(str(t.get("path")))
        if not p.is_absolute() and not p.exists():
            p = run.path / p
        if not p.is_file():
            return None, f"tape {t.get('path')} not found"
        if t.get("sha256") and file_sha256(p) != t["sha256"]:
            return None, f"tape {p} changed since the run (sha256 differs)"
        files.append(p)
    try:
        df = (
            pl.scan_parquet(files)
            .select(
                "ts",
                "recv_ts",
                pl.col("kind").cast(pl.Utf8),
                pl.col("symbol").cast(pl.Utf8),
                pl.col("text").cast(pl.Utf8),
                "next_ts",
            )
            .collect()
        )
    except Exception as exc:  # a tape the run could read should be readable here
        return None, f"tape unreadable: {' '.join(str(exc).split())[:120]}"
    # A warm session's recording starts with the earlier session's tail, replayed before going
    # live: the session's own feed starts after it.
    warm = open_tape(files).meta.warm
    if warm is not None:
        df = df.slice(warm.rows)
    return df.with_columns(pl.col("recv_ts").fill_null(pl.col("ts"))), ""


def checklist_note(item: dict[str, dict[str, Any]]) -> str:
    """One checklist row's note for runs A and B: one note when they agree (or one is empty),
    else both, labelled (an order count or a caveat may be one run's only)."""
    a, b = item["a"]["note"], item["b"]["note"]
    return a or b if a == b or not (a and b) else f"A: {a}; B: {b}"


def checklist(run: RunData) -> dict[str, dict[str, Any]]:
    """The origin's 48-hour drift checklist for one run: ``{metric: {value, note}}``.

    Metrics from the feed (mark update rate, mark freshness, feed lag) come from the
    run's tape, read in place; the order metrics and the cycle lag from its events.
    Memory and CPU exist only for live runs (their summary) or a soak: a replay
    says so instead of inventing a number.
    """
    out: dict[str, dict[str, Any]] = {}
    ev = run.events
    summ = run.summary or {}
    live_info = run.manifest.get("live") if isinstance(run.manifest.get("live"), dict) else {}
    live = bool(live_info) or (run.manifest.get("mode") or summ.get("mode")) == "live"
    tape, why = _tape_frame(run)
    clock = str(run.manifest.get("clock") or "ts")
    cycles = ev.filter(pl.col("kind") == "cycle")

    def put(key: str, value: Any, note: str = "") -> None:
        out[key] = {"value": value, "note": note, "what": CHECKLIST[key]}

    if tape is not None and tape.height:
        prices = tape.filter(pl.col("kind").is_in(_PRICE_KINDS))
        span_min = max((int(tape[clock].max()) - int(tape[clock].min())) / 60e9, 1e-9)  # type: ignore[arg-type]
        per_sym = prices.group_by("symbol").len().sort("symbol")
        rates = {r["symbol"]: round(r["len"] / span_min, 3) for r in per_sym.iter_rows(named=True)}
        put(
            "mark_updates_per_min",
            min(rates.values()) if rates else 0.0,
            ", ".join(f"{k} {v:.1f}" for k, v in rates.items()),
        )
        market = tape.filter(pl.col("kind").is_in(_MARKET_KINDS))
        lag = (market["recv_ts"] - market["ts"]) / _MS
        p99 = quantile(lag, 0.99)
        note = "the tape has no receive times (recv_ts = ts)" if p99 == 0 else ""
        put("feed_lag_p99_ms", p99, note)
        if cycles.height and prices.height:
            last = prices.select(pl.col(clock).alias("t"), "symbol").sort("t")
            cyc = cycles.select(pl.col("ts").alias("t")).sort("t")
            ages = []
            for sym in last["symbol"].unique().sort():
                s = last.filter(pl.col("symbol") == sym).with_columns(pl.col("t").alias("seen"))
                j = cyc.join_asof(s.select("t", "seen"), on="t", strategy="backward").drop_nulls("seen")
                ages.append((j["t"] - j["seen"]) / 1e9)
            age = pl.concat(ages) if ages else pl.Series([], dtype=pl.Float64)
            put("mark_freshness_p95_s", quantile(age, 0.95))
            put("mark_freshness_max_s", None if age.len() == 0 else float(age.max()))  # type: ignore[arg-type]
        else:
            put("mark_freshness_p95_s", None, "no cycles or no prices")
            put("mark_freshness_max_s", None, "no cycles or no prices")
    else:
        for key in ("mark_updates_per_min", "feed_lag_p99_ms", "mark_freshness_p95_s", "mark_freshness_max_s"):
            put(key, None, f"needs the tape: {why}")

    lag_c = (cycles["recv_ts"] - cycles["ts"]) / _MS
    lag_note = "replay: timers fire on their deadline, so 0 by construction; measured in live runs"
    if live:  # a live cycle runs at its deadline's stamp; its recorded timer row says when it fired
        fired = None if tape is None else tape.filter((pl.col("kind") == "timer") & (pl.col("text") == "cycle"))
        if fired is not None and fired.height:
            lag_c, lag_note = (fired["ts"] - fired["next_ts"]) / _MS, "from the recording's cycle timer rows"
        else:
            lag_note = "the recording has no cycle timer rows"
    put("heartbeat_lag_p95_ms", quantile(lag_c, 0.95), lag_note)
    n_orders = ev.filter(pl.col("kind") == "order").height
    n_rejects = ev.filter(pl.col("kind") == "reject").height
    total = n_orders + n_rejects
    put("order_failure_rate", (n_rejects / total) if total else None, f"{n_rejects} of {total}")
    orders = ev.filter(pl.col("kind") == "order").select("order_id", pl.col("ts").alias("t_order"))
    first_fill = ev.filter(pl.col("kind") == "fill").group_by("order_id").agg(pl.col("ts").min().alias("t_fill"))
    lat = orders.join(first_fill, on="order_id", how="inner")
    lat_ms = (lat["t_fill"] - lat["t_order"]) / _MS
    put(
        "order_latency_p99_ms",
        quantile(lat_ms, 0.99),
        "" if live else "simulated: the venue's latency model (0 in backtest)",
    )
    mem = summ.get("rss_mb", summ.get("memory_mb", live_info.get("rss_mb")))
    cpu = summ.get("cpu_pct", live_info.get("cpu_pct"))
    only_live = "only a live run provides it (or `perpsim soak` for the engine alone)"
    put("memory_mb", mem, "" if mem is not None else only_live)
    put("cpu_pct", cpu, "" if cpu is not None else only_live)
    return out


# -- the review -------------------------------------------------------------------


def _run_info(r: RunData) -> dict[str, Any]:
    m = r.manifest
    return {
        "path": str(r.path),
        "run_id": r.run_id,
        "status": m.get("status"),
        "perpsim_version": m.get("perpsim_version"),
        "profile": m.get("profile"),
        "digest": m.get("digest"),
        "events": r.events.height,
        "cycles": r.equity.height,
        "tapes": [{"path": t.get("path"), "sha256": t.get("sha256")} for t in m.get("tapes") or []],
    }


def _check(name: str, value: float | None, limit: float | None, *, minimum: bool = False) -> dict[str, Any] | None:
    if limit is None:
        return None
    if value is None:
        ok = True
    elif minimum:
        ok = value >= limit
    else:
        ok = value <= limit
    return {"name": name, "value": value, "limit": limit, "kind": "min" if minimum else "max", "ok": ok}


def compare_runs(
    a: RunData | str | Path,
    b: RunData | str | Path,
    *,
    thresholds: Thresholds | None = None,
    force: bool = False,
    timing_tolerance_ns: int = 0,
) -> DriftReport:
    """Compare two runs; the report says where they diverge and which limits they exceed.

    Args:
        a, b: run directories (or loaded :class:`RunData`); A is the reference.
        thresholds: the limits to check (default :class:`Thresholds`).
        force: compare runs of different tapes, incompatible versions or
            incomplete runs anyway (each becomes a warning).
        timing_tolerance_ns: event times within this are not a divergence (they
            still count in the timing drift).

    Raises:
        InputError: a run directory is unusable, or the runs should not be compared
            and ``force`` is not set.
    """
    ra = a if isinstance(a, RunData) else load_run(a)
    rb = b if isinstance(b, RunData) else load_run(b)
    th = thresholds or Thresholds()
    warnings = _check_pair(ra, rb, force)
    ea, eb = ra.events, rb.events
    first = _first_divergence(ea, eb, timing_tolerance_ns)
    identical = first is None

    kinds = sorted(set(ea["kind"].unique().to_list()) | set(eb["kind"].unique().to_list()))
    ca = dict(ea.group_by("kind").len().iter_rows())
    cb = dict(eb.group_by("kind").len().iter_rows())
    counts = {
        k: {"a": int(ca.get(k, 0)), "b": int(cb.get(k, 0)), "diff": int(cb.get(k, 0) - ca.get(k, 0))} for k in kinds
    }

    symbols: dict[str, dict[str, Any]] = {}
    dec = _paired(ea.filter(pl.col("kind") == "decision"), eb.filter(pl.col("kind") == "decision"))
    sym_names = sorted(
        set(ea["symbol"].drop_nulls().unique().to_list()) | set(eb["symbol"].drop_nulls().unique().to_list())
    )
    agree_total = pairs_total = 0
    for sym in sym_names:
        d = dec.filter(pl.col("sym") == sym)
        n_a = int(d["seq"].is_not_null().sum())
        n_b = int(d["seq_b"].is_not_null().sum())
        same = d.filter(pl.col("both") & pl.col("text").eq_missing(pl.col("text_b")))
        differ = d.filter(~(pl.col("both") & pl.col("text").eq_missing(pl.col("text_b")))).sort(
            pl.coalesce("ts", "ts_b")
        )
        denom = max(n_a, n_b)
        agree_total += same.height
        pairs_total += denom
        first_dis = None
        if differ.height:
            r = differ.row(0, named=True)
            t = r["ts"] if r["ts"] is not None else r["ts_b"]
            first_dis = {"time": fmt_ns(t), "ts": t, "a": r["text"], "b": r["text_b"]}
        sa = ea.filter(pl.col("symbol") == sym)
        sb = eb.filter(pl.col("symbol") == sym)
        symbols[sym] = {
            "decisions_a": n_a,
            "decisions_b": n_b,
            "decision_agreement": (same.height / denom) if denom else None,
            "first_disagreement": first_dis,
            "orders_a": sa.filter(pl.col("kind") == "order").height,
            "orders_b": sb.filter(pl.col("kind") == "order").height,
            "fills_a": sa.filter(pl.col("kind") == "fill").height,
            "fills_b": sb.filter(pl.col("kind") == "fill").height,
        }
    agreement = (agree_total / pairs_total) if pairs_total else None

    fp = fill_pairs(ra, rb)
    n_fills_a, n_fills_b = counts.get("fill", {}).get("a", 0), counts.get("fill", {}).get("b", 0)
    absd = fp["drift_bps"].abs()
    fill_drift = {
        "matched": fp.height,
        "unmatched": max(n_fills_a, n_fills_b) - fp.height,
        "p50": quantile(absd, 0.5),
        "p95": quantile(absd, 0.95),
        "max": None if absd.len() == 0 else float(absd.max()),  # type: ignore[arg-type]
        "mean_signed": None if fp.height == 0 else float(fp["drift_bps"].mean()),  # type: ignore[arg-type]
    }

    both = _summary_units(ra) is not None and _summary_units(rb) is not None  # one source for both sides
    ma, mb = _money(ra, both), _money(rb, both)
    money = {k: {"a": ma[k] / _UNIT, "b": mb[k] / _UNIT, "diff": (mb[k] - ma[k]) / _UNIT} for k in ma}
    eq = equity_paths(ra, rb)
    eq_diff = eq["diff"].drop_nulls().abs()
    eq_max = float(eq_diff.max()) if eq_diff.len() else 0.0  # type: ignore[arg-type]

    pos = position_paths(ra, rb)
    positions: dict[str, dict[str, Any]] = {}
    for sym in pos["symbol"].unique().sort().to_list():
        p = pos.filter(pl.col("symbol") == sym)
        positions[sym] = {
            "max_abs_diff": float(p["diff"].abs().max()),  # type: ignore[arg-type]
            "cycles_differing": int((p["diff"] != 0).sum()),
            "cycles": p.height,
        }
    pos_max = max((v["max_abs_diff"] for v in positions.values()), default=0.0)
    pos_cycles = pos.group_by("ts").agg((pl.col("diff") != 0).any().alias("d"))
    pos_share = float(pos_cycles["d"].mean()) if pos_cycles.height else 0.0  # type: ignore[arg-type]

    allp = _paired(ea, eb).filter(pl.col("matched"))
    timing = _stats(((allp["ts_b"] - allp["ts"]).abs()) / _MS)
    timing["mean_signed"] = None if allp.height == 0 else float(((allp["ts_b"] - allp["ts"]) / _MS).mean())  # type: ignore[arg-type]

    checks = [
        c
        for c in (
            {"name": "identical", "value": 0 if identical else 1, "limit": 0, "kind": "max", "ok": identical}
            if th.identical
            else None,
            _check("decision agreement", agreement, th.min_decision_agreement, minimum=True),
            _check("order count diff", abs(counts.get("order", {}).get("diff", 0)), th.max_order_count_diff),
            _check("fill count diff", abs(counts.get("fill", {}).get("diff", 0)), th.max_fill_count_diff),
            _check("fill drift bps p95", fill_drift["p95"], th.max_fill_drift_bps_p95),
            _check("fill drift bps max", fill_drift["max"], th.max_fill_drift_bps_max),
            _check("PnL diff", abs(money["pnl"]["diff"]), th.max_pnl_diff),
            _check("fee diff", abs(money["fees"]["diff"]), th.max_fee_diff),
            _check("funding diff", abs(money["funding"]["diff"]), th.max_funding_diff),
            _check("position diff", pos_max, th.max_position_diff),
            _check("cycles with a position diff", pos_share, th.max_position_cycles_differing),
            _check("timing drift ms p95", timing["p95"], th.max_timing_drift_ms_p95),
            _check("timing drift ms max", timing["max"], th.max_timing_drift_ms_max),
        )
        if c is not None
    ]
    cl_a, cl_b = checklist(ra), checklist(rb)
    return DriftReport(
        run_a=_run_info(ra),
        run_b=_run_info(rb),
        identical=identical,
        warnings=warnings,
        config_diff=_config_diff(ra, rb),
        first_divergence=first,
        counts=counts,
        symbols=symbols,
        decision_agreement=agreement,
        fill_drift_bps=fill_drift,
        money=money,
        equity_max_abs_diff=eq_max,
        positions=positions,
        timing_ms=timing,
        checklist={k: {"a": v, "b": cl_b[k]} for k, v in cl_a.items()},
        checks=checks,
        ok=all(c["ok"] for c in checks),
    )


def drift(
    a: str | Path | RunData,
    b: str | Path | RunData,
    *,
    thresholds: Thresholds | None = None,
    force: bool = False,
    timing_tolerance_ns: int = 0,
    report: str | Path | None = None,
) -> DriftReport:
    """:func:`compare_runs`, write an optional report, and fail loudly.

    Args:
        report: write a self-contained ``.html`` or ``.md`` report here.

    Raises:
        InputError: as :func:`compare_runs`; or the report suffix is not .html/.md.
        CheckFailed: a threshold was exceeded (the message lists which); the report
            is written first.
    """
    ra = a if isinstance(a, RunData) else load_run(a)
    rb = b if isinstance(b, RunData) else load_run(b)
    rep = compare_runs(ra, rb, thresholds=thresholds, force=force, timing_tolerance_ns=timing_tolerance_ns)
    if report is not None:
        from perpsim.sim.drift_report import write_report

        write_report(rep, ra, rb, report)
    if not rep.ok:
        raise CheckFailed(f"drift: {failure_line(rep)}")
    return rep


def failure_line(rep: DriftReport) -> str:
    """One line naming each exceeded threshold: ``fill count diff 3 > 0; ...``."""
    parts = []
    for c in rep.failed:
        op = "<" if c["kind"] == "min" else ">"
        parts.append(f"{c['name']} {fmt_value(c['value'])} {op} {fmt_value(c['limit'])}")
    return f"{len(parts)} threshold(s) exceeded: " + "; ".join(parts)


def fmt_value(v: Any) -> str:
    """A number for a table: thousands separators, at most four decimals, ``-`` for None."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and abs(v) < 0.001:
            return f"{v:.3g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)
