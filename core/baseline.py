"""The PerpsBot's baseline strategy: a moving-average crossover on the mark window.

Written against the public Strategy API only. Decisions compare prices in exact
arithmetic on the marks' decimal values (issue 2, "Signal"):
``d = long*sum(S) - short*sum(L)``, ``e = short*long*mark*eps_bps/1e4``;
bullish when ``d_prev <= e < d_cur``, bearish when ``d_prev >= -e > d_cur``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple, cast

import msgspec

from perpsim.core.errors import ConfigError
from perpsim.core.instruments import exact
from perpsim.core.memo import register_memo
from perpsim.core.strategy import Context, Strategy

__all__ = ["Cross", "MACrossover", "SymbolState", "crossover"]


class SymbolState(msgspec.Struct, kw_only=True):
    """Per-symbol memory: a pending confirmation and the trailing-stop reference."""

    pending: int = 0
    pending_left: int = 0
    ref: Fraction | None = None


class Cross(NamedTuple):
    """A crossover reading: ``signal`` (+1, -1, 0) and ``d``, ``e`` scaled by ``scale``."""

    signal: int
    d_scaled: int
    e_scaled: Fraction | int
    scale: int

    @property
    def d(self) -> Fraction:
        return Fraction(self.d_scaled, self.scale)

    @property
    def e(self) -> Fraction:
        return Fraction(self.e_scaled) / self.scale


_SCALE = 10**12


# _scaled's answers. A dict rather than lru_cache: mapping its __getitem__ over a window
# costs a third of calling a cached function per mark. Cleared when full.
_SCALED: dict[float, int | None] = {}
_SCALED_MAX = 1 << 16
register_memo(_SCALED.clear)


def _scaled(x: float) -> int | None:
    """``x`` as an exact integer count of 1e-12, or None when its decimal is finer."""
    f = exact(x) * _SCALE
    out = f.numerator if f.denominator == 1 else None
    if len(_SCALED) >= _SCALED_MAX:
        _SCALED.clear()
    _SCALED[x] = out
    return out


def _integers(window: Sequence[float | Fraction]) -> tuple[list[int], int]:
    """The window as integers on one common scale: exact, and fast to sum."""
    if type(window[0]) is float:
        floats = cast(Sequence[float], window)  # a Fraction among them raises below
        try:
            ints = list(map(_SCALED.__getitem__, floats))
        except KeyError:  # a mark not seen yet
            try:
                ints = [_SCALED[m] if m in _SCALED else _scaled(m) for m in floats]
            except ValueError:  # a Fraction among floats
                ints = [None]
        if None not in ints:
            return ints, _SCALE  # type: ignore[return-value]
    fracs = [m if isinstance(m, Fraction) else exact(m) for m in window]
    scale = math.lcm(*(f.denominator for f in fracs))
    return [f.numerator * (scale // f.denominator) for f in fracs], scale


def crossover(marks: Sequence[float | Fraction], short: int, long: int, eps: Fraction) -> Cross:
    """The cross signal at the newest mark, from the last ``long + 1`` marks (else no signal).

    ``eps`` is in price units (``mark * eps_bps / 1e4``).
    """
    if len(marks) < long + 1:
        return Cross(0, 0, 0, 1)
    ints, scale = _integers(marks[-long - 1 :])
    # The current window is ints[1:], the previous ints[:-1]: sums without the copies.
    total, tail = sum(ints), sum(ints[-short:])
    d_cur = long * tail - short * (total - ints[0])
    d_prev = long * (tail - ints[-1] + ints[-short - 1]) - short * (total - ints[-1])
    e = short * long * eps * scale if eps else 0
    if d_prev <= e < d_cur:
        return Cross(1, d_cur, e, scale)
    if d_prev >= -e > d_cur:
        return Cross(-1, d_cur, e, scale)
    return Cross(0, d_cur, e, scale)


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
        return int(max(*longs, *shorts)) + 5

    def on_cycle(self, ctx: Context) -> None:
        equity = ctx.exact_equity()
        for symbol in ctx.symbols:
            self._decide(ctx, symbol, equity)

    def _decide(self, ctx: Context, symbol: str, equity: Fraction) -> None:
        st = self.state.setdefault(symbol, SymbolState())
        marks = ctx.marks(symbol)
        fmark = marks[-1]
        mark = exact(fmark)
        short, long = self.windows(symbol)
        cross = crossover(marks, short, long, mark * self._eps if self._eps else self._eps)
        signal = self._confirmed(st, cross)
        pos = ctx.exact_position(symbol)
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

    def _confirmed(self, st: SymbolState, cross: Cross) -> int:
        """Apply ``confirm`` bars: a cross acts N cycles later if ``d`` stays beyond the threshold."""
        n = self.params["confirm"]
        signal, d, e = cross.signal, cross.d_scaled, cross.e_scaled
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
