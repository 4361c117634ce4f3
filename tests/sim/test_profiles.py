"""Resolving a profile with a user's config file and overrides: what is refused, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsim.core.errors import ConfigError
from perpsim.sim.profiles import resolve_config


def _file(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "c.toml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_a_limit_set_while_the_risk_layer_is_off_is_refused_not_ignored(tmp_path: Path) -> None:
    idle = "risk.kill_switch has no effect: profile 'backtest' runs with risk.enabled = false"
    with pytest.raises(ConfigError, match=idle):
        resolve_config("backtest", config_file=_file(tmp_path, "[risk]\nkill_switch = true\n"))
    with pytest.raises(ConfigError, match=r"risk\.daily_loss_limit has no effect"):
        resolve_config("backtest", overrides={"risk": {"daily_loss_limit": 5.0}})
    on = resolve_config("backtest", config_file=_file(tmp_path, "[risk]\nenabled = true\nkill_switch = true\n"))
    assert on.risk.enabled and on.risk.kill_switch
    assert resolve_config("prod", overrides={"risk": {"kill_switch": True}}).risk.kill_switch
    assert not resolve_config("backtest", overrides={"risk": {"enabled": False}}).risk.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('profile = "backtest"\n', r"'profile' cannot be set in a config file \(choose it with --profile\)"),
        ('locked = ["interval_s"]\n', r"'locked' cannot be set in a config file"),
        (b"\xff\xfe", r"not valid TOML: 'utf-8' codec can't decode"),
    ],
)
def test_a_config_file_cannot_rename_the_profile_lock_keys_or_be_unreadable(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("canary", config_file=_file(tmp_path, text))


def test_a_strategy_given_with_a_config_file_keeps_the_files_params(tmp_path: Path) -> None:
    cfg = _file(tmp_path, "[params]\nn = 5\n")
    got = resolve_config("backtest", config_file=cfg, overrides={"strategy": "mymod:Mine"})
    assert (got.strategy, got.params) == ("mymod:Mine", {"n": 5})
    # without a file, the profile's own params (the baseline's) do not follow another strategy
    assert resolve_config("spot", overrides={"strategy": "mymod:Mine"}).params == {}
    assert resolve_config("spot").params  # spot's per-symbol windows, for its own strategy
