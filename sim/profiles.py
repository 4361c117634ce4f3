"""Profiles: TOML files shipped in the package, resolved into a checked RunConfig.

``backtest`` is the default for replay: the strategy and the venue alone. A user's
``--config FILE`` and command-line overrides are merged on top; keys a profile
lists under ``locked`` refuse overrides.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from perpsim.core.config import RunConfig, load_config
from perpsim.core.errors import ConfigError, InputError

__all__ = ["available", "load_profile", "merge", "resolve_config"]


def available() -> list[str]:
    """Names of the shipped profiles, sorted."""
    folder = resources.files("perpsim.sim") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped profile."""
    if name not in available():
        raise ConfigError(f"unknown profile {name!r}; choose from {', '.join(available())}")
    text = (resources.files("perpsim.sim") / "profiles" / f"{name}.toml").read_text()
    data = tomllib.loads(text)
    data.setdefault("profile", name)
    return data


def merge(
    base: dict[str, Any], over: dict[str, Any], locked: list[str], path: str = "", profile: str | None = None
) -> dict[str, Any]:
    """Deep-merge ``over`` into ``base``; a locked key (dotted path) may not change."""
    profile = profile or base.get("profile")
    out = dict(base)
    for key, value in over.items():
        dotted = f"{path}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("params",):
            out[key] = merge(out[key], value, locked, f"{dotted}.", profile)
            continue
        if key == "params" and isinstance(value, dict) and isinstance(out.get(key), dict):
            value = {**out[key], **value}
        if dotted in locked and out.get(key, value) != value:
            raise ConfigError(f"{dotted} is locked by profile {profile!r} and cannot be overridden")
        out[key] = value
    return out


def _read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: config file not found")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    for key, how in (("profile", "choose it with --profile"), ("locked", "only a shipped profile locks keys")):
        if key in data:
            raise ConfigError(f"{p}: {key!r} cannot be set in a config file ({how})")
    return data


def resolve_config(
    profile: str = "backtest",
    *,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Profile, then the user's file, then explicit overrides; validated once at the end."""
    data = load_profile(profile)
    locked = list(data.get("locked", []))
    user: dict[str, Any] = {}
    if config_file is not None:
        user = _read_config_file(config_file)
        data = merge(data, user, locked)
    if overrides:
        over = {k: v for k, v in overrides.items() if v is not None}
        if over.get("strategy", data.get("strategy")) != data.get("strategy"):
            # the profile's params belong to its own strategy; the user's file's are for this one
            data["params"] = dict(user.get("params") or {})
        data = merge(data, over, locked)
    data["locked"] = locked
    cfg = load_config(data)
    if not cfg.risk.enabled:
        _refuse_idle_risk_keys(profile, {**(user.get("risk") or {}), **((overrides or {}).get("risk") or {})})
    return cfg


def _refuse_idle_risk_keys(profile: str, given: dict[str, Any]) -> None:
    """A limit or guard the user sets while the risk layer is off would silently do nothing
    (a kill switch that does not stop trading): refuse it, naming the key."""
    idle = sorted(k for k in given if k != "enabled")
    if idle:
        raise ConfigError(
            f"risk.{idle[0]} has no effect: profile {profile!r} runs with risk.enabled = false "
            "(set risk.enabled = true, or use a PerpsBot profile such as prod)"
        )


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return msgspec.to_builtins(cfg)  # type: ignore[no-any-return]
