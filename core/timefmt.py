"""Parsing and printing of times and durations (pure functions; no clock is read)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from perpsim.core.errors import InputError

__all__ = ["fmt_ns", "parse_duration_ns", "parse_time_ns"]

_UNITS: Final = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_FRACTION = re.compile(r"([T ]\d{2}:\d{2}:\d{2})[.,](\d+)")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h|d)?\s*$")


def parse_duration_ns(text: str, *, what: str = "duration") -> int:
    """``"60s"``, ``"5m"``, ``"48h"``, ``"1.5h"`` or a bare number of seconds, in ns.

    Raises:
        InputError: naming the option and the text.
    """
    m = _DUR.match(str(text))
    if not m:
        raise InputError(f"{what}: cannot read {text!r} as a duration (try 60s, 5m, 48h)")
    value, unit = m.group(1), m.group(2) or "s"
    ns = round(float(value) * _UNITS[unit])
    if ns <= 0:
        raise InputError(f"{what}: must be positive, got {text!r}")
    return ns


def parse_time_ns(text: str, *, what: str = "time") -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or integer ns since the epoch.

    Fractions of a second keep all nine digits (``datetime`` keeps six): tapes are in
    nanoseconds, and a window must be able to fall between two rows a nanosecond apart.
    """
    s = str(text).strip()
    if re.fullmatch(r"-?\d{12,}", s):
        return int(s)
    frac_ns = 0
    m = _FRACTION.search(s)
    if m is not None:
        if len(m.group(2)) > 9:
            raise InputError(f"{what}: {text!r} is finer than a nanosecond")
        frac_ns = int(m.group(2).ljust(9, "0"))
        s = s[: m.end(1)] + s[m.end() :]
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{what}: cannot read {text!r} as a time (ISO 8601 or integer ns)") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(seconds=1) * 10**9 + frac_ns


def fmt_ns(ns: int | None) -> str:
    """UTC ISO-8601 with milliseconds, for people."""
    if ns is None:
        return "-"
    dt = datetime.fromtimestamp(ns // 10**9, tz=UTC)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{(ns % 10**9) // 10**6:03d}Z"
