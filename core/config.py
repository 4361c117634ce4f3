"""Typed run configuration, validated on load (no ``getattr(config, "x", default)``).

A profile (TOML) decodes into :class:`RunConfig`; unknown keys and wrong types are
refused by msgspec with the key named, and :func:`check` adds range checks.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Literal, NoReturn

import msgspec

from perpsim.core.errors import ConfigError
from perpsim.core.ledger import MAX_UNITS, UNITS_PER_CCY

MAX_VENUE_LEVERAGE = 20.0
_NS = 10**9
_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")  # ASCII digits only: int() would take others

__all__ = [
    "MAX_VENUE_LEVERAGE",
    "FeeTier",
    "RiskConfig",
    "RunConfig",
    "VenueConfig",
    "check",
    "check_venue",
    "load_config",
]


class FeeTier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of a fee schedule: the rates that apply from ``min_volume_30d`` of trailing volume.

    Volume is traded notional in the settlement currency over the trailing 30 days.
    A negative ``maker_bps`` is a rebate.
    """

    min_volume_30d: float = 0.0
    maker_bps: float
    taker_bps: float


class VenueConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The simulated venue's terms. Realism features the tape cannot inform are off by default.

    Fees: ``maker_bps``/``taker_bps`` (Coinbase International's base tier), or a tier table
    ``fee_tiers`` (ascending ``min_volume_30d``) chosen by trailing 30-day volume, or fixed
    with ``fee_tier`` (an index into the table).

    Fills: ``cap_to_top`` and ``slippage_bps`` apply only on symbols without an L2 book.
    ``queue`` models queue position of resting limits (seeded by the run's seed).

    Latency (ms; all 0 = orders act at once, the ``backtest`` semantics): ``latency_ms``
    order entry, ``cancel_latency_ms`` cancels (None: same as entry),
    ``response_latency_ms`` venue → strategy notifications; each draw adds a jitter of
    ``latency_jitter_ms`` (``uniform`` on [0, jitter] or ``exponential`` with that mean).

    Funding: ``funding = "tape"`` settles tape ``funding`` rows; ``"constant"`` settles
    ``funding_rate`` every ``funding_interval_s`` (None: the instrument's interval, hourly
    by default); ``"schedule"`` settles the (time, rate) series given per symbol in
    ``funding_schedule`` (CSV paths, read by the driver; core does no I/O); ``"off"`` none.

    Margin: cross margin in the settlement currency; ``leverage`` (None: the instrument's
    max) sets initial margin; ``margin_check`` rejects orders without enough free margin;
    ``liquidation`` liquidates every position at the mark with ``liquidation_fee_bps`` when
    equity falls to maintenance margin.
    """

    starting_balance: float = 100_000.0
    taker_bps: float = 4.0
    maker_bps: float = 2.0
    fee_tiers: list[FeeTier] = []
    fee_tier: int | None = None
    cap_to_top: bool = False
    slippage_bps: float = 0.0
    liquidation_fee_bps: float = 50.0
    stop_trigger: Literal["trade", "mark"] = "trade"
    queue: Literal["none", "risk_averse", "probabilistic"] = "none"
    latency_ms: float = 0.0
    cancel_latency_ms: float | None = None
    response_latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_dist: Literal["uniform", "exponential"] = "uniform"
    funding: Literal["tape", "constant", "schedule", "off"] = "tape"
    funding_rate: float = 0.0001
    funding_interval_s: float | None = None
    funding_schedule: dict[str, str] = {}
    funding_utc_offset_h: float | None = None
    leverage: float | None = None
    margin_check: bool = True
    liquidation: bool = True


class RiskConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The PerpsBot's pre-trade limits, runtime guards and background jobs; ``enabled`` turns
    them all on (every profile but ``backtest``). Money limits are in the settlement currency.
    """

    enabled: bool = False
    max_leverage: float = 5.0
    leverage_caps: dict[str, float] = {}
    day_leverage_cap: float | None = None
    night_leverage_cap: float | None = None
    day_hours_utc: tuple[int, int] = (8, 20)
    min_liquidation_buffer_pct: float = 0.15
    daily_loss_limit: float = 100.0
    max_exposure_pct: float = 0.8
    max_position_pct_per_symbol: float = 0.2
    max_notional_per_symbol: dict[str, float] = {}
    slippage_guard_bps: float = 50.0
    max_mark_staleness_seconds: float = 180.0
    max_trade_value: float | None = None
    max_position_value: float | None = None
    max_position_size: dict[str, float] = {}
    kill_switch: bool = False
    reduce_only: bool = False
    allow_shorts: bool = True
    volatility_window: int = 20
    volatility_warn: float = 0.15
    volatility_reduce_only: float = 0.20
    volatility_kill: float = 0.25
    volatility_cooldown_s: float = 1800.0
    error_breaker_count: int = 5
    error_breaker_pause_s: float = 300.0


class RunConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything a run depends on besides the tape; stored whole in ``manifest.json``."""

    profile: str = "backtest"
    description: str = ""
    strategy: str = "perpsim.core.baseline:MACrossover"
    params: dict[str, object] = {}
    symbols: list[str] | None = None
    interval_s: float = 60.0
    seed: int = 0
    dry_run: bool = False
    max_cycles: int | None = None
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    trading_days: list[int] | None = None
    trading_start: str | None = None
    trading_end: str | None = None
    locked: list[str] = []
    venue: VenueConfig = msgspec.field(default_factory=VenueConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)


def check(cfg: RunConfig) -> RunConfig:
    """Range checks msgspec's types cannot express.

    Every value the run would otherwise crash on mid-replay (a traceback) or accept and
    then ignore (a limit or window that can never bind) is refused here, before a run
    directory exists.

    Raises:
        ConfigError: naming the key and the bad value.
    """
    for key in RunConfig.__struct_fields__:
        if key != "params":  # the strategy's own, checked by it
            _finite(key, getattr(cfg, key))
    if round(cfg.interval_s * _NS) < 1:
        _fail("interval_s", "be positive (at least 1e-9, the clock's resolution)", cfg.interval_s)
    # Negative seeds alias large ones (the generators keep the low 64 bits) and the run
    # catalog stores the seed as int64.
    if not 0 <= cfg.seed < 2**63:
        _fail("seed", "be from 0 to 2**63 - 1", cfg.seed)
    if cfg.max_cycles is not None and cfg.max_cycles < 1:
        _fail("max_cycles", "be at least 1 (omit it for no limit)", cfg.max_cycles)
    _check_symbols(cfg.symbols)
    _check_trading_window(cfg)
    if cfg.venue.starting_balance <= 0:
        raise ConfigError(f"venue.starting_balance must be positive, got {cfg.venue.starting_balance}")
    if cfg.venue.starting_balance >= (MAX_UNITS + 1) / UNITS_PER_CCY:
        raise ConfigError(
            f"venue.starting_balance must be below {(MAX_UNITS + 1) // UNITS_PER_CCY:,} (the ledger's range), "
            f"got {cfg.venue.starting_balance}"
        )
    check_venue(cfg.venue)
    _check_risk(cfg.risk)
    return cfg


def _fail(key: str, rule: str, value: object) -> NoReturn:
    raise ConfigError(f"{key} must {rule}, got {value!r}")


def _finite(key: str, value: object) -> None:
    """NaN passes every ``<`` range check and inf overflows the exact (Fraction) money maths."""
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(key, "be finite", value)
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _finite(f"{key}.{name}", getattr(value, name))
    elif isinstance(value, dict):
        for name, item in value.items():
            _finite(f"{key}[{name!r}]", item)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _finite(f"{key}[{i}]", item)


def _not_negative(key: str, value: float | None) -> None:
    if value is not None and value < 0:
        _fail(key, "not be negative", value)


def _leverage(key: str, value: float | None) -> None:
    """A leverage cap is a divisor of the buffer checks (0 would divide by zero) and the venue allows 20 at most."""
    if value is None:
        return
    if value <= 0:
        _fail(key, "be positive", value)
    if value > MAX_VENUE_LEVERAGE:
        raise ConfigError(f"{key} {value} exceeds the venue maximum {MAX_VENUE_LEVERAGE}")


def _check_symbols(symbols: list[str] | None) -> None:
    """An empty list would filter every row out: a run that replays nothing and looks fine."""
    if symbols is None:
        return
    if not symbols:
        _fail("symbols", "name at least one symbol (omit it for all the tape's symbols)", symbols)
    if any(not s.strip() for s in symbols):
        _fail("symbols", "be non-empty names", symbols)
    if len(set(symbols)) != len(symbols):
        _fail("symbols", "not repeat a symbol", symbols)


def _hhmm(key: str, value: str | None, *, end: bool) -> int | None:
    """Minutes since midnight of an "HH:MM" the bot can parse; 24:00 only closes a window."""
    if value is None:
        return None
    if end and value == "24:00":
        return 1440
    if not _HHMM.fullmatch(value):
        _fail(key, 'be "HH:MM" from 00:00 to ' + ("23:59 or 24:00" if end else "23:59"), value)
    return int(value[:2]) * 60 + int(value[3:])


def _check_trading_window(cfg: RunConfig) -> None:
    """A window that can never open would silence the bot for the whole run."""
    start = _hhmm("trading_start", cfg.trading_start, end=False)
    end = _hhmm("trading_end", cfg.trading_end, end=True)
    if (0 if start is None else start) == (1440 if end is None else end):
        raise ConfigError(
            f"trading_start {cfg.trading_start!r} and trading_end {cfg.trading_end!r} make an empty window"
        )
    days = cfg.trading_days
    if days is not None and (not days or any(not 0 <= d <= 6 for d in days)):
        _fail("trading_days", "be UTC weekdays from 0 (Monday) to 6 (Sunday), at least one", days)


def _check_risk(r: RiskConfig) -> None:
    """Negative limits and unordered thresholds would be accepted and then never bind as meant."""
    for key in ("max_leverage", "day_leverage_cap", "night_leverage_cap"):
        _leverage(f"risk.{key}", getattr(r, key))
    for symbol, cap in r.leverage_caps.items():
        _leverage(f"risk.leverage_caps[{symbol!r}]", cap)
    for key in (
        "min_liquidation_buffer_pct",
        "daily_loss_limit",
        "max_exposure_pct",
        "max_position_pct_per_symbol",
        "slippage_guard_bps",
        "max_mark_staleness_seconds",
        "max_position_value",
        "volatility_warn",
        "volatility_reduce_only",
        "volatility_kill",
        "volatility_cooldown_s",
        "error_breaker_pause_s",
    ):
        _not_negative(f"risk.{key}", getattr(r, key))
    for key in ("max_position_size", "max_notional_per_symbol"):
        for symbol, limit in getattr(r, key).items():
            _not_negative(f"risk.{key}[{symbol!r}]", limit)
    if r.max_trade_value is not None and r.max_trade_value <= 0:
        raise ConfigError(f"risk.max_trade_value must be positive, got {r.max_trade_value}")
    # The guard's level is how many thresholds the volatility reaches, so they must rise in order.
    if r.volatility_reduce_only < r.volatility_warn:
        _fail(
            "risk.volatility_reduce_only",
            f"not be below risk.volatility_warn ({r.volatility_warn})",
            r.volatility_reduce_only,
        )
    if r.volatility_kill < r.volatility_reduce_only:
        _fail(
            "risk.volatility_kill",
            f"not be below risk.volatility_reduce_only ({r.volatility_reduce_only})",
            r.volatility_kill,
        )
    if r.volatility_window < 2:
        _fail("risk.volatility_window", "be at least 2 (a sample stdev needs two returns)", r.volatility_window)
    if r.error_breaker_count < 1:
        _fail("risk.error_breaker_count", "be at least 1", r.error_breaker_count)
    start, end = r.day_hours_utc
    if not (0 <= start <= 23 and 0 <= end <= 24) or start == end:
        _fail(
            "risk.day_hours_utc",
            "be [start, end] UTC hours with start 0-23, end 0-24 and start != end",
            list(r.day_hours_utc),
        )


def load_config(data: dict[str, object]) -> RunConfig:
    """Decode a plain mapping (from TOML or a caller) into a checked :class:`RunConfig`."""
    try:
        cfg = msgspec.convert(data, type=RunConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config: {exc}") from exc
    return check(cfg)


def check_venue(v: VenueConfig) -> VenueConfig:
    """Range checks of the venue's terms.

    Raises:
        ConfigError: naming the ``venue.`` key and the bad value.
    """
    _finite("venue", v)
    # A maker rate may be negative (a rebate); a taker rate may not: no venue pays takers.
    for key in (
        "latency_ms",
        "response_latency_ms",
        "latency_jitter_ms",
        "slippage_bps",
        "liquidation_fee_bps",
        "taker_bps",
    ):
        if getattr(v, key) < 0:
            raise ConfigError(f"venue.{key} must not be negative, got {getattr(v, key)}")
    for i, tier in enumerate(v.fee_tiers):
        if tier.taker_bps < 0:
            raise ConfigError(f"venue.fee_tiers[{i}].taker_bps must not be negative, got {tier.taker_bps}")
    if v.cancel_latency_ms is not None and v.cancel_latency_ms < 0:
        raise ConfigError(f"venue.cancel_latency_ms must not be negative, got {v.cancel_latency_ms}")
    if v.funding_interval_s is not None and v.funding_interval_s <= 0:
        raise ConfigError(f"venue.funding_interval_s must be positive, got {v.funding_interval_s}")
    _leverage("venue.leverage", v.leverage)
    if v.funding == "schedule" and not v.funding_schedule:
        raise ConfigError("venue.funding = 'schedule' needs venue.funding_schedule (symbol = CSV path)")
    mins = [t.min_volume_30d for t in v.fee_tiers]
    if any(b <= a for a, b in itertools.pairwise(mins)):
        raise ConfigError(f"venue.fee_tiers must have strictly ascending min_volume_30d, got {mins}")
    if v.fee_tier is not None and not 0 <= v.fee_tier < len(v.fee_tiers):
        raise ConfigError(
            f"venue.fee_tier {v.fee_tier} is not an index into venue.fee_tiers ({len(v.fee_tiers)} tiers)"
        )
    return v
