"""Synthetic tapes: seeded, realistic market data for tests, demos and soak runs.

Prices follow a geometric random walk whose volatility switches between market-wide
regimes (a continuous-time Markov chain: calm 30%, normal 60%, stressed 120%
annualized). Trades and quotes arrive as Poisson processes; trades hit the prevailing
bid or ask, quotes are never crossed, every price is on tick and every size on lot.
Funding settles every ``funding_interval_s`` (aligned to the epoch) with an AR(1)
rate around 1e-5 that turns negative now and then. A :class:`Shock` bends the path
by a given percentage over a given span (a "crash" tape). With ``l2`` the tape also
carries a level-2 book (snapshot, then absolute-size updates) whose top always equals
the quotes.

Everything is vectorized numpy: a million rows take a second or two. The same
arguments give a byte-identical file: one generator per purpose and symbol, derived
from the seed and the symbol's name, and no wall-clock time anywhere.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from perpsim.core.errors import InputError
from perpsim.core.events import KIND_NAMES, Flags, Kind
from perpsim.core.instruments import BUILTIN, Instrument
from perpsim.tapes.schema import DEFAULT_CODEC, ROW_GROUP_ROWS, SCHEMA, TapeMeta
from perpsim.tapes.writer import write_table

__all__ = ["DEFAULT_START_NS", "Shock", "default_instrument", "parse_shock", "synth"]

DEFAULT_START_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z

_YEAR_NS = 365.25 * 86400 * 1e9
_MIN_NS = 60 * 10**9
# Volatility regimes: annualized vol, mean stay in minutes, and where the chain goes next.
_REGIME_VOL = np.array([0.30, 0.60, 1.20])
_REGIME_STAY_MIN = np.array([240.0, 90.0, 25.0])
_REGIME_NEXT = np.array([[0.0, 0.85, 0.15], [0.65, 0.0, 0.35], [0.25, 0.75, 0.0]])
# Median notionals (quote currency): a trade, a top-of-book level, a deeper level.
_TRADE_NOTIONAL = 2_000.0
_TOP_NOTIONAL = 40_000.0
_DEEP_NOTIONAL = 120_000.0
_DEPTH = 10  # book levels per side: the top plus _DEPTH - 1 on a coarser grid
_DEEP_SPACING = 2e-4  # deeper levels about 2 bp apart
# Funding: AR(1) around _FUNDING_MEAN; stationary sd ~3e-5, so about a third negative.
_FUNDING_MEAN = 1e-5
_FUNDING_PHI = 0.85
_FUNDING_SD = 1.5e-5

# Bounds of the arguments (the CLI help repeats them). A kind's expected rows per symbol are
# capped so a typo in a rate or the marks interval fails at once instead of exhausting memory;
# the shock's rise is capped so prices stay exact tick multiples in float64.
_MAX_ROWS = 10**8
_MAX_SHOCK_PCT = 10_000.0
_MAX_SHOCK_HOURS = 10**6  # the shock's span stays an int64 of ns
_MAX_NS = 2**63 - 1  # 2262-04-11T23:47:16Z: the last time an int64 ns clock holds

_START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
_DEFAULT_TERMS = {"BTC": (0.1, 0.0001), "ETH": (0.01, 0.001), "SOL": (0.01, 0.01)}


class Shock(msgspec.Struct, frozen=True, kw_only=True):
    """Move the price by ``pct`` percent over ``over_hours``, starting ``at_hours`` in.

    ``Shock(at_hours=2, pct=-30, over_hours=1)`` is a 30% crash in the third hour. The
    move is added to the random walk (linear in log price), so noise continues.
    """

    at_hours: float
    pct: float
    over_hours: float = 1.0


def parse_shock(text: str) -> Shock:
    """Parse ``AT_H:PCT:OVER_H`` (e.g. ``2:-30:1``) as the CLI's ``--shock`` takes it.

    Raises:
        InputError: the text is not three finite numbers separated by colons.
    """
    parts = text.split(":")
    try:
        at, pct, over = (float(p) for p in parts)
    except ValueError as e:
        raise InputError(f"--shock {text!r}: expected AT_HOURS:PCT:OVER_HOURS, e.g. 2:-30:1") from e
    if not all(map(math.isfinite, (at, pct, over))):
        raise InputError(f"--shock {text!r}: AT_HOURS, PCT and OVER_HOURS must be finite numbers")
    return Shock(at_hours=at, pct=pct, over_hours=over)


def _base(symbol: str) -> str:
    return symbol.split("-")[0].split("USD")[0].upper()


def _start_price(symbol: str) -> float:
    return _START_PRICES.get(_base(symbol), 100.0)


def default_instrument(symbol: str) -> Instrument:
    """The synthetic tape's instrument: the built-in one, else per-coin defaults."""
    if symbol in BUILTIN:
        return BUILTIN[symbol]
    tick, lot = _DEFAULT_TERMS.get(_base(symbol), (0.01, 0.01))
    return Instrument(symbol=symbol, tick=tick, lot=lot)


def _decimals(step: float) -> int:
    exp = Decimal(repr(step)).normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def _symbol_key(symbol: str) -> int:
    # crc32, not hash(): stable under any PYTHONHASHSEED.
    return zlib.crc32(symbol.encode())


def _poisson_times(rng: np.random.Generator, per_min: float, start: int, span: int) -> Any:
    n = int(rng.poisson(per_min * span / _MIN_NS)) if per_min > 0 else 0
    return np.sort(rng.integers(0, span, n, dtype=np.int64)) + start


def _regimes(seed: int, start: int, span: int) -> tuple[Any, Any]:
    """Market-wide vol regime segments: (segment start times, annualized vols)."""
    rng = _rng(seed, 0)
    t, state = 0, int(rng.choice(3, p=[0.5, 0.4, 0.1]))
    starts, vols = [], []
    while t < span:  # one step per regime segment (a few per hour), not per row
        starts.append(start + t)
        vols.append(_REGIME_VOL[state])
        t += max(1, int(rng.exponential(_REGIME_STAY_MIN[state]) * _MIN_NS))
        state = int(rng.choice(3, p=_REGIME_NEXT[state]))
    return np.array(starts, np.int64), np.array(vols)


def _aligned(start: int, end: int, interval_ns: int, *, include_end: bool) -> Any:
    """Multiples of ``interval_ns`` in (start, end] or [start, end)."""
    if include_end:
        first = (start // interval_ns + 1) * interval_ns
        return np.arange(first, end + 1, interval_ns, dtype=np.int64)
    first = -(-start // interval_ns) * interval_ns
    return np.arange(first, end, interval_ns, dtype=np.int64)


def _hash_unit(level: Any, salt: int) -> Any:
    """A uniform [0, 1) per integer level (splitmix64), so a level keeps its size."""
    x = level.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


class _Rows:
    """Column arrays for one symbol, concatenated later; floats use NaN for null."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def add(self, n: int, **cols: Any) -> None:
        if n:
            self.parts.append({"n": n, **cols})

    def build(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        floats = ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate")
        ints = {"ts": 0, "kind": 0, "side": 0, "next_ts": 0, "seq": -1, "flags": 0, "ev": 0, "sub": 0}
        for name in floats:
            out[name] = np.concatenate([p[name] if name in p else np.full(p["n"], np.nan) for p in self.parts])
        for name, fill in ints.items():
            out[name] = np.concatenate(
                [np.broadcast_to(np.asarray(p.get(name, fill), np.int64), p["n"]) for p in self.parts]
            )
        return out


class _Snap:
    """Prices in integer ticks and sizes in integer lots → clean decimal floats."""

    def __init__(self, ins: Instrument, price: float) -> None:
        self.tick = ins.tick if ins.tick else 10.0 ** (np.floor(np.log10(price)) - 4)
        self.lot = ins.lot
        self.tick_dec = _decimals(self.tick)
        self.lot_dec = _decimals(self.lot)
        self.ins = ins

    def price(self, ticks: Any) -> Any:
        return np.round(ticks * self.tick, self.tick_dec)

    def size(self, notional: Any, price: Any) -> Any:
        ins = self.ins
        qty = notional / ins.contract_size if ins.kind == "inverse" else notional / (price * ins.contract_size)
        lots = np.maximum(1.0, np.rint(qty / self.lot))
        return np.round(lots * self.lot, self.lot_dec)


def _symbol(
    k: int,
    symbol: str,
    ins: Instrument,
    *,
    seed: int,
    start: int,
    span: int,
    regimes: tuple[Any, Any],
    trades_per_min: float,
    quotes_per_min: float,
    funding_interval_s: int,
    mark_interval_s: float | None,
    shock: Shock | None,
    l2: bool,
) -> dict[str, Any]:
    """All rows of one symbol, with (ev, sub) keys that order rows sharing a timestamp."""
    key = _symbol_key(symbol)
    p0 = _start_price(symbol)
    snap = _Snap(ins, p0)
    end = start + span

    # Event times: an opening quote at start, then Poisson quotes and trades, marks.
    q_t = np.concatenate([[start], _poisson_times(_rng(seed, key, 1), quotes_per_min, start, span)])
    t_t = _poisson_times(_rng(seed, key, 2), trades_per_min, start, span)
    m_t = (
        _aligned(start, end, int(mark_interval_s * 1e9), include_end=False)
        if mark_interval_s
        else np.zeros(0, np.int64)
    )
    times = np.concatenate([q_t, t_t, m_t])
    kinds = np.concatenate(
        [
            np.full(len(q_t), Kind.QUOTE, np.int64),
            np.full(len(t_t), Kind.TRADE, np.int64),
            np.full(len(m_t), Kind.MARK, np.int64),
        ]
    )
    order = np.argsort(times, kind="stable")
    times, kinds = times[order], kinds[order]
    n = len(times)

    # Geometric random walk with regime-switching vol (martingale: -sigma^2/2 drift).
    rng = _rng(seed, key, 3)
    seg_start, seg_vol = regimes
    sigma = seg_vol[np.searchsorted(seg_start, times, "right") - 1]
    dt = np.diff(times, prepend=start) / _YEAR_NS
    log_p = np.log(p0) + np.cumsum(sigma * np.sqrt(dt) * rng.standard_normal(n) - 0.5 * sigma**2 * dt)
    if shock is not None:
        t0 = start + int(shock.at_hours * 3600e9)
        width = max(1, int(shock.over_hours * 3600e9))
        log_p += np.log1p(shock.pct / 100.0) * np.clip((times - t0) / width, 0.0, 1.0)
    mid = np.exp(log_p) / snap.tick  # in ticks

    # Top of book: spread 1..~5 ticks, never crossed; sizes lognormal in notional.
    spread = rng.geometric(0.6, n).astype(np.int64)
    bid_t = np.floor(mid - spread / 2).astype(np.int64)
    bid_t = np.maximum(bid_t, 1)
    ask_t = bid_t + spread
    bid_px, ask_px = snap.price(bid_t), snap.price(ask_t)

    rows = _Rows()
    ev = np.arange(n, dtype=np.int64)
    seq = np.cumsum(kinds != Kind.MARK)  # the venue's per-symbol update id

    is_q = kinds == Kind.QUOTE
    nq = int(is_q.sum())
    q_bid_size = snap.size(_TOP_NOTIONAL * rng.lognormal(0.0, 0.8, nq), bid_px[is_q])
    q_ask_size = snap.size(_TOP_NOTIONAL * rng.lognormal(0.0, 0.8, nq), ask_px[is_q])
    rows.add(
        nq,
        ts=times[is_q],
        kind=Kind.QUOTE,
        bid=bid_px[is_q],
        bid_size=q_bid_size,
        ask=ask_px[is_q],
        ask_size=q_ask_size,
        seq=seq[is_q],
        flags=Flags.END_OF_MESSAGE,
        ev=ev[is_q],
        sub=_DEPTH * 4 + 2,  # after this quote's book update rows
    )

    is_t = kinds == Kind.TRADE
    nt = int(is_t.sum())
    side = np.where(rng.random(nt) < 0.5, 1, -1)
    t_px = np.where(side > 0, ask_px[is_t], bid_px[is_t])
    rows.add(
        nt,
        ts=times[is_t],
        kind=Kind.TRADE,
        price=t_px,
        size=snap.size(_TRADE_NOTIONAL * rng.lognormal(0.0, 1.2, nt), t_px),
        side=side,
        seq=seq[is_t],
        flags=Flags.END_OF_MESSAGE,
        ev=ev[is_t],
    )

    is_m = kinds == Kind.MARK
    rows.add(
        int(is_m.sum()),
        ts=times[is_m],
        kind=Kind.MARK,
        price=snap.price(np.maximum(np.rint(mid[is_m]), 1)),  # floored at one tick, like the quotes
        flags=Flags.END_OF_MESSAGE,
        ev=ev[is_m],
    )

    # Funding settlements at epoch-aligned multiples of the interval in (start, end].
    f_t = _aligned(start, end, funding_interval_s * 10**9, include_end=True)
    if len(f_t):
        frng = _rng(seed, key, 4)
        noise = frng.normal(0.0, _FUNDING_SD, len(f_t))
        rate = np.empty(len(f_t))
        r = _FUNDING_MEAN + noise[0] / np.sqrt(1 - _FUNDING_PHI**2)
        for i in range(len(f_t)):  # one step per settlement (hourly), not per row
            if i:
                r = _FUNDING_MEAN + _FUNDING_PHI * (r - _FUNDING_MEAN) + noise[i]
            rate[i] = r
        rows.add(
            len(f_t),
            ts=f_t,
            kind=Kind.FUNDING,
            rate=np.round(rate, 8),
            next_ts=f_t + funding_interval_s * 10**9,
            flags=Flags.END_OF_MESSAGE,
            ev=n + np.arange(len(f_t)),
        )

    if l2:
        q_idx = np.flatnonzero(is_q)
        g = max(1, round(p0 * _DEEP_SPACING / snap.tick))
        _book(
            rows,
            snap,
            g,
            (seed * 1_000_003 + key * 2) % 2**63,
            times[q_idx],
            ev[q_idx],
            (bid_t[q_idx], ask_t[q_idx]),
            (q_bid_size, q_ask_size),
            seq[q_idx],
        )

    out = rows.build()
    out["sym"] = np.full(len(out["ts"]), k, np.int64)
    return out


def _book(
    rows: _Rows,
    snap: _Snap,
    g: int,
    salt: int,
    q_ts: Any,
    q_ev: Any,
    tops: tuple[Any, Any],
    sizes: tuple[Any, Any],
    q_seq: Any,
) -> None:
    """Level-2 rows whose best bid/ask equal the quotes after every message.

    Each side holds its top (the quote's price and size) plus ``_DEPTH - 1`` deeper
    levels on a grid of ``g`` ticks (about 2 bp) just beyond the top; a deeper level's
    size is a fixed function of its price. Between two quotes the rows are the set
    difference of the two books: deletes (size 0) first, then new or changed levels,
    so the book is right at the end of each message (flags bit 0).
    """
    bid_t, ask_t = tops
    bid_size, ask_size = sizes
    d = _DEPTH - 1
    salt_b, salt_a = salt + 1, salt + 2

    def deep_size(level: Any, salt: int) -> Any:
        u = _hash_unit(level, salt)
        notional = _DEEP_NOTIONAL * np.exp(1.5 * (2.0 * u - 1.0))
        return snap.size(notional, snap.price(level * g))

    # Anchors: the nearest grid level strictly beyond the top.
    b_anchor = (bid_t - 1) // g
    a_anchor = ask_t // g + 1
    j = np.arange(d)

    # Snapshot at the first quote: reset, then bids and asks (flags bit 1).
    b_lv = b_anchor[0] - j
    a_lv = a_anchor[0] + j
    snap_px = np.concatenate([[bid_t[0]], b_lv * g, [ask_t[0]], a_lv * g])
    snap_sz = np.concatenate([[bid_size[0]], deep_size(b_lv, salt_b), [ask_size[0]], deep_size(a_lv, salt_a)])
    snap_side = np.concatenate([np.ones(d + 1, np.int64), -np.ones(d + 1, np.int64)])
    ns = len(snap_px)
    flags = np.full(ns, Flags.SNAPSHOT, np.int64)
    flags[-1] |= Flags.END_OF_MESSAGE
    rows.add(1, ts=q_ts[:1], kind=Kind.BOOK_RESET, flags=Flags.SNAPSHOT, ev=-1, sub=0, seq=q_seq[:1])
    rows.add(
        ns,
        ts=np.full(ns, q_ts[0]),
        kind=Kind.BOOK,
        price=snap.price(snap_px),
        size=snap_sz,
        side=snap_side,
        flags=flags,
        ev=-1,
        sub=1 + np.arange(ns),
        seq=np.full(ns, q_seq[0]),
    )
    if len(q_ts) < 2:
        return

    # Updates for quote i (i >= 1), built as (quote, group, order) tagged pieces.
    pieces: list[tuple[Any, Any, Any, Any, Any, Any]] = []  # (quote, grp, ord, px, size, side)
    i = np.arange(1, len(q_ts))

    def top(top_t: Any, size: Any, side: int, order: int) -> None:
        prev, cur = top_t[:-1], top_t[1:]
        moved = prev != cur
        pieces.append((i[moved], 0, order, prev[moved], np.zeros(int(moved.sum())), side))
        pieces.append((i, 1, order, cur, size[1:], side))

    def deep(anchor: Any, side: int, salt: int, order: int) -> None:
        prev, cur = anchor[:-1], anchor[1:]
        m = cur - prev
        c = np.minimum(np.abs(m), d)
        rep = np.repeat(np.arange(len(m)), c)
        t = np.arange(len(rep)) - np.repeat(np.cumsum(c) - c, c)  # 0..c-1 within each quote
        up = (m > 0)[rep]
        p, q = prev[rep], cur[rep]
        if side > 0:  # bids: levels anchor - 0..d-1
            dele = np.where(up, p - (d - 1) + t, p - t)
            ins = np.where(up, q - t, q - (d - 1) + t)
        else:  # asks: levels anchor + 0..d-1
            dele = np.where(up, p + t, p + (d - 1) - t)
            ins = np.where(up, q + (d - 1) - t, q + t)
        pieces.append((i[rep], 0, order + 1, dele * g, np.zeros(len(rep)), side))
        pieces.append((i[rep], 1, order + 1, ins * g, deep_size(ins, salt), side))

    top(bid_t, bid_size, 1, 0)
    deep(b_anchor, 1, salt_b, 0)
    top(ask_t, ask_size, -1, 2)
    deep(a_anchor, -1, salt_a, 2)

    qi = np.concatenate([p[0] for p in pieces])
    grp = np.concatenate([np.full(len(p[0]), p[1]) for p in pieces])
    ordr = np.concatenate([np.full(len(p[0]), p[2]) for p in pieces])
    px = np.concatenate([p[3] for p in pieces])
    sz = np.concatenate([p[4] for p in pieces])
    side = np.concatenate([np.full(len(p[0]), p[5]) for p in pieces])
    within = np.arange(len(qi))
    o = np.lexsort((within, ordr, grp, qi))
    qi, px, sz, side = qi[o], px[o], sz[o], side[o]
    nb = len(qi)
    # Position within each quote's message, and its last row.
    first = np.searchsorted(qi, qi, "left")
    sub = np.arange(nb) - first
    last = np.ones(nb, bool)
    last[:-1] = qi[1:] != qi[:-1]
    rows.add(
        nb,
        ts=q_ts[qi],
        kind=Kind.BOOK,
        price=snap.price(px),
        size=sz,
        side=side,
        flags=np.where(last, Flags.END_OF_MESSAGE, 0),
        ev=q_ev[qi],
        sub=sub,
        seq=q_seq[qi],
    )


def _null_float(v: Any) -> pa.Array:
    return pa.array(v, pa.float64(), mask=np.isnan(v))


def synth(
    *,
    hours: float,
    symbols: Sequence[str],
    seed: int,
    out: str | Path,
    trades_per_min: float = 30,
    quotes_per_min: float = 60,
    start_ns: int = DEFAULT_START_NS,
    funding_interval_s: int = 3600,
    shock: Shock | None = None,
    l2: bool = False,
    mark_interval_s: float | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    codec: str = DEFAULT_CODEC,
) -> Path:
    """Generate a seeded synthetic tape and write it to ``out``.

    Args:
        hours: tape length.
        symbols: e.g. ``["BTC-PERP", "ETH-PERP"]``; instruments come from the built-in
            table, else per-coin defaults, and are stored in the metadata.
        seed: any non-negative integer; the same arguments give the same bytes.
        out: the Parquet file to write.
        trades_per_min, quotes_per_min: Poisson rates per symbol.
        start_ns: the first row's time (default 2024-01-01T00:00Z).
        funding_interval_s: funding settles at multiples of this (epoch-aligned).
        shock: an extra move of ``pct`` percent over a span, e.g. a crash.
        l2: also write a level-2 book: a snapshot, then level updates.
        mark_interval_s: also write ``mark`` rows at this period (none by default).
        row_group_rows: rows per Parquet row group.
        codec: ``lz4`` or ``zstd`` (:class:`~perpsim.tapes.writer.TapeWriter`).

    Returns:
        The path written.

    Raises:
        InputError: an argument out of range.
        TapeError: an unknown codec.
    """
    start = int(start_ns)
    _check_args(hours, symbols, seed, start, trades_per_min, quotes_per_min, funding_interval_s, mark_interval_s, shock)
    span = round(hours * 3600e9)
    regimes = _regimes(seed, start, span)
    instruments = {
        s: msgspec.structs.replace(default_instrument(s), funding_interval_s=funding_interval_s) for s in symbols
    }
    parts = [
        _symbol(
            k,
            s,
            instruments[s],
            seed=seed,
            start=start,
            span=span,
            regimes=regimes,
            trades_per_min=trades_per_min,
            quotes_per_min=quotes_per_min,
            funding_interval_s=funding_interval_s,
            mark_interval_s=mark_interval_s,
            shock=shock,
            l2=l2,
        )
        for k, s in enumerate(symbols)
    ]
    cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    # Ties: time, then symbol order, then event order, then position in the message.
    o = np.lexsort((cols["sub"], cols["ev"], cols["sym"], cols["ts"]))
    cols = {name: v[o] for name, v in cols.items()}
    table = _table(cols, list(symbols))
    source = f"synth:seed={seed},hours={hours:g},symbols={'+'.join(symbols)}"
    if shock is not None:
        source += f",shock={shock.at_hours:g}:{shock.pct:g}:{shock.over_hours:g}"
    if l2:
        source += ",l2"
    meta = TapeMeta(clock="ts", source=source, instruments=instruments)
    return write_table(table, out, meta, row_group_rows=row_group_rows, codec=codec)


def _table(cols: dict[str, Any], symbols: list[str]) -> pa.Table:
    kind = cols["kind"]
    has_side = (kind == Kind.TRADE) | (kind == Kind.BOOK)
    arrays = {
        "ts": pa.array(cols["ts"], pa.int64()),
        "recv_ts": pa.array(cols["ts"], pa.int64()),
        "kind": pa.DictionaryArray.from_arrays(pa.array(kind.astype(np.int8)), pa.array(KIND_NAMES, pa.string())),
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(cols["sym"].astype(np.int32)), pa.array(symbols, pa.string())
        ),
        "side": pa.array(cols["side"].astype(np.int8), pa.int8(), mask=~has_side),
        "next_ts": pa.array(cols["next_ts"], pa.int64(), mask=kind != Kind.FUNDING),
        "text": pa.nulls(len(kind), pa.string()),
        "seq": pa.array(cols["seq"], pa.int64(), mask=cols["seq"] < 0),
        "flags": pa.array(cols["flags"].astype(np.uint8), pa.uint8()),
    }
    for name in ("price", "size", "bid", "bid_size", "ask", "ask_size", "rate"):
        arrays[name] = _null_float(cols[name])
    return pa.Table.from_arrays([arrays[f.name] for f in SCHEMA], schema=SCHEMA)


def _check_args(
    hours: float,
    symbols: Sequence[str],
    seed: int,
    start: int,
    trades_per_min: float,
    quotes_per_min: float,
    funding_interval_s: int,
    mark_interval_s: float | None,
    shock: Shock | None,
) -> None:
    """Refuse arguments the generator would crash on or turn into garbage (NaN, inf,
    a span of no nanosecond, times past int64, rows beyond memory), naming the argument."""
    if not (hours > 0 and math.isfinite(hours)):
        raise InputError(f"synth: hours must be > 0 and finite, not {hours:g}")
    span = round(hours * 3600e9)
    if span < 1:
        raise InputError(f"synth: hours {hours:g} is shorter than 1 ns")
    if not symbols:
        raise InputError("synth: give at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise InputError(f"synth: symbols repeat: {', '.join(symbols)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"synth: seed must be a non-negative integer, not {seed!r}")
    if funding_interval_s <= 0:
        raise InputError(f"synth: funding_interval_s must be > 0, not {funding_interval_s}")
    if not -_MAX_NS <= start <= _MAX_NS - span - funding_interval_s * 10**9:  # the last next_ts fits
        raise InputError(
            f"synth: a {hours:g}h tape from start_ns {start} (funding every {funding_interval_s}s) "
            "ends after 2262-04-11, the last time an int64 ns clock holds"
        )
    minutes = span / _MIN_NS
    for name, rate in (("trades_per_min", trades_per_min), ("quotes_per_min", quotes_per_min)):
        if not (rate >= 0 and math.isfinite(rate)):
            raise InputError(f"synth: {name} must be finite and >= 0, not {rate:g}")
        _check_rows(name, rate, rate * minutes, hours)
    if mark_interval_s is not None:
        if not (1e-9 <= mark_interval_s <= span / 1e9):  # also refuses NaN
            raise InputError(
                f"synth: mark_interval_s must be finite, at least 1 ns and at most the tape's length "
                f"({span / 1e9:g} s), not {mark_interval_s:g}"
            )
        _check_rows("mark_interval_s", mark_interval_s, span / (mark_interval_s * 1e9), hours)
    if shock is not None:
        if not -100 < shock.pct <= _MAX_SHOCK_PCT:
            raise InputError(f"synth: shock pct must be > -100 and <= {_MAX_SHOCK_PCT:g}, not {shock.pct:g}")
        if not 0 <= shock.over_hours <= _MAX_SHOCK_HOURS:
            raise InputError(
                f"synth: shock over_hours must be >= 0 and <= {_MAX_SHOCK_HOURS:g}, not {shock.over_hours:g}"
            )
        if not 0 <= shock.at_hours < hours:
            raise InputError(
                f"synth: shock at {shock.at_hours:g}h over {shock.over_hours:g}h is outside the {hours:g}h tape"
            )


def _check_rows(name: str, value: float, rows: float, hours: float) -> None:
    if rows > _MAX_ROWS:
        raise InputError(
            f"synth: {name} {value:g} gives about {rows:.2g} rows per symbol in {hours:g}h (at most {_MAX_ROWS:.0e})"
        )
