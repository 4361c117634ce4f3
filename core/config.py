"""Typed run configuration, validated on load (no ``getattr(config, "x", default)``).

A profile (TOML) decodes into :class:`RunConfig`; unknown keys and wrong types are
refused by msgspec with the key named, and :func:`check` adds range checks.
"""

from __future__ import annotations

import itertools
from typing import Literal

import msgspec

from perpsim.core.errors import ConfigError

MAX_VENUE_LEVERAGE = 20.0

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

    Raises:
        ConfigError: naming the key and the bad value.
    """
    if cfg.interval_s <= 0:
        raise ConfigError(f"interval_s must be positive, got {cfg.interval_s}")
    if cfg.venue.starting_balance <= 0:
        raise ConfigError(f"venue.starting_balance must be positive, got {cfg.venue.starting_balance}")
    check_venue(cfg.venue)
    r = cfg.risk
    if r.max_leverage > MAX_VENUE_LEVERAGE:
        raise ConfigError(f"risk.max_leverage {r.max_leverage} exceeds the venue maximum {MAX_VENUE_LEVERAGE}")
    for key in (
        "max_leverage",
        "min_liquidation_buffer_pct",
        "daily_loss_limit",
        "max_exposure_pct",
        "max_position_pct_per_symbol",
        "slippage_guard_bps",
        "max_mark_staleness_seconds",
    ):
        if getattr(r, key) < 0:
            raise ConfigError(f"risk.{key} must not be negative, got {getattr(r, key)}")
    if r.max_trade_value is not None and r.max_trade_value <= 0:
        raise ConfigError(f"risk.max_trade_value must be positive, got {r.max_trade_value}")
    return cfg


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
    for key in ("latency_ms", "response_latency_ms", "latency_jitter_ms", "slippage_bps", "liquidation_fee_bps"):
        if getattr(v, key) < 0:
            raise ConfigError(f"venue.{key} must not be negative, got {getattr(v, key)}")
    if v.cancel_latency_ms is not None and v.cancel_latency_ms < 0:
        raise ConfigError(f"venue.cancel_latency_ms must not be negative, got {v.cancel_latency_ms}")
    if v.funding_interval_s is not None and v.funding_interval_s <= 0:
        raise ConfigError(f"venue.funding_interval_s must be positive, got {v.funding_interval_s}")
    if v.leverage is not None and v.leverage <= 0:
        raise ConfigError(f"venue.leverage must be positive, got {v.leverage}")
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
