"""Range checks of the run configuration: each bad value is one ConfigError naming the key.

Each refused case once crashed a replay with a traceback or was accepted and then never
bound (audit of ``core.config.check``); the accepted cases pin the boundaries that work.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from perpsim.core.config import RunConfig, VenueConfig, check_venue, load_config
from perpsim.core.errors import ConfigError
from perpsim.sim.profiles import available, resolve_config
from tests.helpers import cli, kinds, mark_tape, run

ON = {"enabled": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # crashed mid-run (ZeroDivisionError, ValueError) before
        ({"risk": {**ON, "volatility_window": 0}}, "risk.volatility_window must be at least 2"),
        (
            {"risk": {**ON, "volatility_window": 1}},
            "risk.volatility_window must be at least 2 (a sample stdev needs two returns), got 1",
        ),
        ({"risk": {**ON, "volatility_window": -3}}, "risk.volatility_window must be at least 2"),
        ({"trading_start": "9am"}, "trading_start must be \"HH:MM\" from 00:00 to 23:59, got '9am'"),
        ({"trading_end": "5pm"}, "trading_end must be \"HH:MM\" from 00:00 to 23:59 or 24:00, got '5pm'"),
        ({"risk": {"daily_loss_limit": float("nan")}}, "risk.daily_loss_limit must be finite, got nan"),
        ({"risk": {"daily_loss_limit": float("inf")}}, "risk.daily_loss_limit must be finite, got inf"),
        ({"risk": {"max_trade_value": float("inf")}}, "risk.max_trade_value must be finite"),
        ({"risk": {"leverage_caps": {"BTC-PERP": float("nan")}}}, "risk.leverage_caps['BTC-PERP'] must be finite"),
        ({"venue": {"taker_bps": float("nan")}}, "venue.taker_bps must be finite, got nan"),
        ({"venue": {"taker_bps": -4.0}}, "venue.taker_bps must not be negative, got -4.0"),
        (
            {"venue": {"fee_tiers": [{"maker_bps": -1.0, "taker_bps": -2.0}]}},
            "venue.fee_tiers[0].taker_bps must not be negative, got -2.0",
        ),
        ({"venue": {"starting_balance": float("inf")}}, "venue.starting_balance must be finite"),
        (
            {"venue": {"fee_tiers": [{"maker_bps": 1.0, "taker_bps": float("nan")}]}},
            "venue.fee_tiers[0].taker_bps must be finite",
        ),
        ({"interval_s": float("inf")}, "interval_s must be finite, got inf"),
        ({"interval_s": float("nan")}, "interval_s must be finite, got nan"),
        ({"interval_s": 1e-12}, "interval_s must be positive"),
        # accepted but meaningless before
        ({"risk": {"max_position_value": -1.0}}, "risk.max_position_value must not be negative, got -1.0"),
        ({"risk": {"max_position_size": {"BTC-PERP": -1.0}}}, "risk.max_position_size['BTC-PERP'] must not be"),
        ({"risk": {"max_notional_per_symbol": {"ETH-PERP": -5.0}}}, "risk.max_notional_per_symbol['ETH-PERP']"),
        ({"risk": {"leverage_caps": {"BTC-PERP": -2.0}}}, "risk.leverage_caps['BTC-PERP'] must be positive"),
        ({"risk": {"leverage_caps": {"BTC-PERP": 0.0}}}, "risk.leverage_caps['BTC-PERP'] must be positive"),
        ({"risk": {"leverage_caps": {"BTC-PERP": 21.0}}}, "risk.leverage_caps['BTC-PERP'] 21.0 exceeds the venue"),
        ({"risk": {"day_leverage_cap": 25.0}}, "risk.day_leverage_cap 25.0 exceeds the venue maximum 20.0"),
        ({"risk": {"night_leverage_cap": 25.0}}, "risk.night_leverage_cap 25.0 exceeds the venue maximum"),
        ({"risk": {"night_leverage_cap": -1.0}}, "risk.night_leverage_cap must be positive"),
        ({"risk": {"max_leverage": 0.0}}, "risk.max_leverage must be positive, got 0.0"),
        ({"venue": {"leverage": 25.0}}, "venue.leverage 25.0 exceeds the venue maximum 20.0"),
        ({"risk": {"volatility_warn": -0.1}}, "risk.volatility_warn must not be negative"),
        ({"risk": {"volatility_cooldown_s": -1.0}}, "risk.volatility_cooldown_s must not be negative"),
        ({"risk": {"error_breaker_pause_s": -1.0}}, "risk.error_breaker_pause_s must not be negative"),
        ({"risk": {"error_breaker_count": 0}}, "risk.error_breaker_count must be at least 1, got 0"),
        ({"risk": {"volatility_warn": 2.0}}, "risk.volatility_reduce_only must not be below risk.volatility_warn"),
        ({"risk": {"volatility_kill": 0.1}}, "risk.volatility_kill must not be below risk.volatility_reduce_only"),
        # windows that can never open
        ({"trading_days": [7, 9]}, "trading_days must be UTC weekdays from 0 (Monday) to 6 (Sunday)"),
        ({"trading_days": [-1]}, "trading_days must be UTC weekdays"),
        ({"trading_days": []}, "trading_days must be UTC weekdays from 0 (Monday) to 6 (Sunday), at least one"),
        ({"trading_start": "25:00"}, 'trading_start must be "HH:MM"'),
        ({"trading_start": "24:00"}, "trading_start must be \"HH:MM\" from 00:00 to 23:59, got '24:00'"),
        ({"trading_end": "12:60"}, 'trading_end must be "HH:MM"'),
        ({"trading_start": "٠٩:٠٠"}, 'trading_start must be "HH:MM"'),  # int() would read these digits
        ({"trading_start": "10:00", "trading_end": "10:00"}, "make an empty window"),
        ({"trading_end": "00:00"}, "trading_start None and trading_end '00:00' make an empty window"),
        ({"risk": {"day_hours_utc": [30, 40]}}, "risk.day_hours_utc must be [start, end] UTC hours"),
        ({"risk": {"day_hours_utc": [24, 6]}}, "risk.day_hours_utc must be"),
        ({"risk": {"day_hours_utc": [8, 8]}}, "risk.day_hours_utc must be"),
        ({"venue": {"starting_balance": 1e12}}, "venue.starting_balance must be below 92,233,720,368"),
        # run-level
        ({"max_cycles": 0}, "max_cycles must be at least 1 (omit it for no limit), got 0"),
        ({"max_cycles": -2}, "max_cycles must be at least 1"),
        ({"seed": -1}, "seed must be from 0 to 2**63 - 1, got -1"),
        ({"seed": 2**63}, "seed must be from 0 to 2**63 - 1, got 9223372036854775808"),
        ({"symbols": []}, "symbols must name at least one symbol"),
        ({"symbols": ["BTC-PERP", ""]}, "symbols must be non-empty names"),
        ({"symbols": [" "]}, "symbols must be non-empty names"),
        ({"symbols": ["BTC-PERP", "ETH-PERP", "BTC-PERP"]}, "symbols must not repeat a symbol"),
    ],
)
def test_bad_value_is_one_config_error_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_config(data)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "data",
    [
        {"risk": {**ON, "volatility_window": 2}},
        {"trading_start": "00:00", "trading_end": "24:00"},
        {"trading_start": "22:00", "trading_end": "00:00"},  # overnight to midnight
        {"trading_start": "00:00"},
        {"trading_days": [0, 6]},
        {"risk": {"day_hours_utc": [20, 8]}},  # wraps overnight
        {"risk": {"day_hours_utc": [0, 24]}},
        {"risk": {"leverage_caps": {"BTC-PERP": 20.0}, "day_leverage_cap": 20.0, "max_position_value": 0.0}},
        {"risk": {"max_position_size": {"BTC-PERP": 0.0}}},  # zero: reduce-only in that symbol
        {"risk": {"volatility_warn": 1.0, "volatility_reduce_only": 1.0, "volatility_kill": 1.0}},
        {"venue": {"leverage": 20.0, "maker_bps": -1.0}},  # a maker rebate
        {"max_cycles": 1, "seed": 2**63 - 1, "symbols": ["BTC-PERP", "ETH-PERP"]},
    ],
)
def test_boundary_values_are_accepted(data: dict[str, Any]) -> None:
    assert isinstance(load_config(data), RunConfig)


def test_every_shipped_profile_still_loads() -> None:
    for name in available():
        assert resolve_config(name).profile == name


def test_the_smallest_volatility_window_runs_the_guard() -> None:
    risk = {**ON, "volatility_window": 2, "volatility_warn": 0.0, "volatility_reduce_only": 1e9, "volatility_kill": 1e9}
    r = run(mark_tape([100.0, 101.0, 100.5, 102.0]), profile="prod", overrides={"risk": risk})
    assert not kinds(r, "error")
    assert [e["reason"] for e in kinds(r, "guard")].count("volatility_warn") == 1


def test_check_venue_refuses_nan_for_direct_callers() -> None:
    # SimVenue calls check_venue on configs built in Python, never through load_config
    with pytest.raises(ConfigError, match=r"venue\.latency_ms must be finite, got nan"):
        check_venue(VenueConfig(latency_ms=float("nan")))


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[risk]\nvolatility_window = 1\n", "risk.volatility_window must be at least 2"),
        ('trading_start = "9am"\n', "trading_start must be"),
        ("[risk]\ndaily_loss_limit = nan\n", "risk.daily_loss_limit must be finite, got nan"),
        ("[risk]\nmax_position_value = -1.0\n", "risk.max_position_value must not be negative"),
        ("max_cycles = 0\n", "max_cycles must be at least 1"),
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    code, _, err = cli("replay", "--profile", "prod", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert err.startswith("perpsim: ") and needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
