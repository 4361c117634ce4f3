"""The PerpsBot's baseline strategy: a moving-average crossover on the mark window.

Written against the public Strategy API only. Decisions compare prices in exact
arithmetic on the marks' decimal values (issue 2, "Signal"):
``d = long*sum(S) - short*sum(L)``, ``e = short*long*mark*eps_bps/1e4``;
bullish when ``d_prev <= e < d_cur``, bearish when ``d_prev >= -e > d_cur``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, ClassVar

import msgspec

from perpsim.core.errors import ConfigError
from perpsim.core.instruments import exact
from perpsim.core.strategy import Context, Strategy

__all__ = ["MACrossover", "SymbolState", "crossover"]


class SymbolState(msgspec.Struct, kw_only=True):
    """Per-symbol memory: a pending confirmation and the trailing-stop reference."""

    pending: int = 0
    pending_left: int = 0
    ref: Fraction | None = None


def crossover(marks: list[Fraction], short: int, long: int, eps: Fraction) -> tuple[int, Fraction, Fraction]:
    """The cross signal at the newest mark: +1 bullish, -1 bearish, 0 none.

    Returns (signal, d_cur, e); needs ``long + 1`` marks (else signal 0).
    """
    if len(marks) < long + 1:
        return 0, Fraction(0), Fraction(0)
    # One common denominator turns the sums into integer arithmetic; still exact.
    window = marks[-long - 1 :]
    scale = math.lcm(*(m.denominator for m in window))
    ints = [m.numerator * (scale // m.denominator) for m in window]
    cur, prev = ints[1:], ints[:-1]
    d_cur = long * sum(cur[-short:]) - short * sum(cur)
    d_prev = long * sum(prev[-short:]) - short * sum(prev)
    e = short * long * eps * scale
    signal = 0
    if d_prev <= e < d_cur:
        signal = 1
    elif d_prev >= -e > d_cur:
        signal = -1
    return signal, Fraction(d_cur, scale), e / scale


class MACrossover(Strategy):
    """Moving-average crossover with confirmation bars and a trailing stop.

    Parameters: ``short`` (5), ``long`` (20), ``eps_bps`` (0), ``confirm`` (0),
    ``position_fraction`` (0.05), ``target_leverage`` (2), ``trailing_stop`` (0.01),
    ``enable_shorts`` (True), ``per_symbol`` (a mapping of symbol to overrides of
    ``short``/``long``, for the spot profile).
    """

    defaults: ClassVar[dict[str, Any]] = {
        "short": 5,
        "long": 20,
        "eps_bps": 0.0,
        "confirm": 0,
        "position_fraction": 0.05,
        "target_leverage": 2.0,
        "trailing_stop": 0.01,
        "enable_shorts": True,
        "per_symbol": {},
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        for key in ("short", "long"):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ConfigError(f"{key} must be a positive integer, got {p[key]!r}")
        if p["short"] >= p["long"]:
            raise ConfigError(f"short ({p['short']}) must be less than long ({p['long']})")
        if not isinstance(p["confirm"], int) or p["confirm"] < 0:
            raise ConfigError(f"confirm must be a non-negative integer, got {p['confirm']!r}")
        for key in ("position_fraction", "target_leverage", "trailing_stop", "eps_bps"):
            if not isinstance(p[key], int | float) or p[key] < 0:
                raise ConfigError(f"{key} must be a non-negative number, got {p[key]!r}")
        self.state: dict[str, SymbolState] = {}
        self._fraction = exact(float(p["position_fraction"])) * exact(float(p["target_leverage"]))
        self._trail = exact(float(p["trailing_stop"]))
        self._eps = exact(float(p["eps_bps"])) / 10_000

    def windows(self, symbol: str) -> tuple[int, int]:
        over = self.params["per_symbol"].get(symbol, {})
        return int(over.get("short", self.params["short"])), int(over.get("long", self.params["long"]))

    @property
    def window(self) -> int:
        longs = [self.params["long"], *(o.get("long", 0) for o in self.params["per_symbol"].values())]
        shorts = [self.params["short"], *(o.get("short", 0) for o in self.params["per_symbol"].values())]
        return max(*longs, *shorts) + 5

    def on_cycle(self, ctx: Context) -> None:
        equity = ctx.exact_equity()
        for symbol in ctx.symbols:
            self._decide(ctx, symbol, equity)

    def _decide(self, ctx: Context, symbol: str, equity: Fraction) -> None:
        st = self.state.setdefault(symbol, SymbolState())
        marks = ctx.exact_marks(symbol)
        mark = marks[-1]
        short, long = self.windows(symbol)
        signal, d, e = crossover(marks, short, long, mark * self._eps)
        signal = self._confirmed(st, signal, d, e)
        pos = ctx.exact_position(symbol)
        fmark = float(mark)
        if pos != 0:
            if (pos > 0 and signal < 0) or (pos < 0 and signal > 0):
                self._close(ctx, symbol, pos, "opposite_signal", fmark, st)
                return
            if st.ref is None:
                st.ref = mark
                ctx.decide(symbol, "HOLD", "trail_armed", fmark)
                return
            if pos > 0:
                st.ref = max(st.ref, mark)
                hit = mark <= st.ref * (1 - self._trail)
            else:
                st.ref = min(st.ref, mark)
                hit = mark >= st.ref * (1 + self._trail)
            if hit:
                self._close(ctx, symbol, pos, "trailing_stop", fmark, st)
            else:
                ctx.decide(symbol, "HOLD", "in_position", fmark)
            return
        st.ref = None
        if signal == 0:
            ctx.decide(symbol, "HOLD", "warming_up" if len(marks) < long + 1 else "no_signal", fmark)
            return
        if signal < 0 and not self.params["enable_shorts"]:
            ctx.decide(symbol, "HOLD", "shorts_disabled", fmark)
            return
        lot = exact(ctx.instrument(symbol).lot)
        lots = math.floor(equity * self._fraction / (mark * lot))
        if lots <= 0:
            ctx.decide(symbol, "HOLD", "zero_size", fmark)
            return
        side = "buy" if signal > 0 else "sell"
        reason = "bullish_cross" if signal > 0 else "bearish_cross"
        ctx.decide(symbol, side.upper(), reason, fmark)
        ctx.submit(symbol, side, lots * lot)

    def _confirmed(self, st: SymbolState, signal: int, d: Fraction, e: Fraction) -> int:
        """Apply ``confirm`` bars: a cross acts N cycles later if ``d`` stays beyond the threshold."""
        n = self.params["confirm"]
        if n == 0:
            return signal
        if st.pending:
            beyond = d > e if st.pending > 0 else d < -e
            if not beyond:
                st.pending = 0
            else:
                st.pending_left -= 1
                if st.pending_left == 0:
                    fire, st.pending = st.pending, 0
                    return fire
                return 0
        if signal:
            st.pending, st.pending_left = signal, n
        return 0

    def _close(self, ctx: Context, symbol: str, pos: Fraction, reason: str, mark: float, st: SymbolState) -> None:
        ctx.decide(symbol, "CLOSE", reason, mark)
        ctx.submit(symbol, "sell" if pos > 0 else "buy", abs(pos), reduce_only=True)
        st.ref = None
