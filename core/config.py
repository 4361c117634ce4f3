"""Typed run configuration, validated on load (no ``getattr(config, "x", default)``).

A profile (TOML) decodes into :class:`RunConfig`; unknown keys and wrong types are
refused by msgspec with the key named, and :func:`check` adds range checks.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from perpsim.core.errors import ConfigError

MAX_VENUE_LEVERAGE = 20.0

__all__ = ["MAX_VENUE_LEVERAGE", "RiskConfig", "RunConfig", "VenueConfig", "check", "load_config"]


class VenueConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The simulated venue's terms. Realism features the tape cannot inform are off by default."""

    starting_balance: float = 100_000.0
    taker_bps: float = 4.0
    maker_bps: float = 2.0
    cap_to_top: bool = False
    slippage_bps: float = 0.0
    liquidation_fee_bps: float = 50.0
    stop_trigger: Literal["trade", "mark"] = "trade"
    queue: Literal["none", "risk_averse", "probabilistic"] = "none"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0


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
