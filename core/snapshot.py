"""Save and restore an engine's state, so a live bot restarts warm (DESIGN.md §5).

What is saved, from the engine's public attributes only: the paper ledger (cash,
totals, positions with exact entries), the mark windows, the cycle count, the guards'
state (day start equity — the day's PnL —, reduce-only and kill switch, breakers) when
the PerpsBot runs, and the strategy's state.

The strategy's state is taken from ``strategy.snapshot_state()`` (any msgspec-encodable
value) and given back to ``strategy.restore_state(value)`` when the strategy defines
them; otherwise its instance attributes other than ``params`` are pickled. A snapshot
is a local file written by this program for this program, like a run directory; do not
restore one from an untrusted source.

Open orders are not saved (the canary uses market and IOC orders, which never rest).

Use :func:`snapshot` then :func:`encode` to save, and :func:`decode` then :func:`restore`
to load. Core does no I/O: the driver writes the bytes.
"""

from __future__ import annotations

import pickle
from fractions import Fraction
from typing import Any

import msgspec

from perpsim.core.engine import Engine
from perpsim.core.errors import InputError
from perpsim.core.guards import GuardState
from perpsim.core.ledger import Position

__all__ = ["SNAPSHOT_VERSION", "EngineSnapshot", "LedgerState", "decode", "encode", "restore", "snapshot"]

SNAPSHOT_VERSION = 1


class PositionState(msgspec.Struct, kw_only=True, frozen=True):
    """One position; exact values as ``"numerator/denominator"`` strings."""

    qty: str
    entry: str
    contract_size: str
    opened_ns: int


class LedgerState(msgspec.Struct, kw_only=True, frozen=True):
    """The paper ledger in integer units (1e-8 of the settlement currency)."""

    cash_start: int
    cash: int
    realized: int
    fees: int
    funding: int
    positions: dict[str, PositionState]


class EngineSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    """Everything :func:`restore` puts back; ``taken_ns`` is the engine clock's value."""

    version: int = SNAPSHOT_VERSION
    taken_ns: int
    profile: str
    strategy: str
    cycles: int
    ledger: LedgerState
    windows: dict[str, list[float]]
    window_ts: dict[str, int]
    guards: GuardState | None = None
    strategy_state: bytes | None = None
    strategy_state_format: str = "none"  # "msgpack" (snapshot_state) or "pickle"


def _frac(s: str) -> Fraction:
    return Fraction(s)


def snapshot(engine: Engine) -> EngineSnapshot:
    """Capture the engine's restorable state now."""
    led = engine.ledger
    positions = {
        sym: PositionState(
            qty=str(p.qty), entry=str(p.entry), contract_size=str(p.contract_size), opened_ns=p.opened_ns
        )
        for sym, p in sorted(led.positions.items())
    }
    m = engine.market
    windows = {name: list(m.windows[sid]) for name, sid in sorted(m.ids.items()) if m.windows[sid]}
    window_ts = {name: m.window_ts[sid] for name, sid in sorted(m.ids.items()) if m.window_ts[sid]}
    st_bytes, st_fmt = _strategy_state(engine.strategy)
    bot = engine.bot
    return EngineSnapshot(
        taken_ns=engine.clock.now_ns(),
        profile=engine.config.profile,
        strategy=engine.config.strategy,
        cycles=engine.cycles,
        ledger=LedgerState(
            cash_start=led.cash_start,
            cash=led.cash,
            realized=led.realized,
            fees=led.fees,
            funding=led.funding,
            positions=positions,
        ),
        windows=windows,
        window_ts=window_ts,
        guards=None if bot is None else msgspec.structs.replace(bot.guards.state),
        strategy_state=st_bytes,
        strategy_state_format=st_fmt,
    )


def _strategy_state(strategy: object) -> tuple[bytes | None, str]:
    get = getattr(strategy, "snapshot_state", None)
    if callable(get):
        return msgspec.msgpack.encode(get()), "msgpack"
    attrs = {k: v for k, v in vars(strategy).items() if k != "params"}
    if not attrs:
        return None, "none"
    return pickle.dumps(attrs, protocol=pickle.HIGHEST_PROTOCOL), "pickle"


def restore(engine: Engine, snap: EngineSnapshot) -> None:
    """Put a snapshot's state into ``engine`` (after construction, before or after a warm-up).

    Raises:
        InputError: the snapshot was taken under another strategy or profile, or has
            an unknown version; restoring it would mix two bots' states.
    """
    if snap.version != SNAPSHOT_VERSION:
        raise InputError(f"snapshot version {snap.version} is not {SNAPSHOT_VERSION}; start cold instead")
    if snap.strategy != engine.config.strategy or snap.profile != engine.config.profile:
        raise InputError(
            f"snapshot of strategy {snap.strategy!r} under profile {snap.profile!r} cannot be restored into "
            f"{engine.config.strategy!r} under {engine.config.profile!r}"
        )
    led = engine.ledger
    s = snap.ledger
    led.cash_start, led.cash, led.realized, led.fees, led.funding = s.cash_start, s.cash, s.realized, s.fees, s.funding
    led.positions.clear()
    for sym, p in s.positions.items():
        led.positions[sym] = Position(
            qty=_frac(p.qty), entry=_frac(p.entry), contract_size=_frac(p.contract_size), opened_ns=p.opened_ns
        )
    m = engine.market
    for name, marks in snap.windows.items():
        sid = m.ids.get(name)
        if sid is None:
            continue  # a symbol this run does not trade
        w = m.windows[sid]
        w.clear()
        w.extend(marks)
        m.window_ts[sid] = snap.window_ts.get(name, 0)
    engine.cycles = snap.cycles
    if snap.guards is not None and engine.bot is not None:
        target = engine.bot.guards.state
        for field in target.__struct_fields__:  # in place: the pre-trade checks hold this object
            setattr(target, field, getattr(snap.guards, field))
        # a snapshot from before liq_breached existed: a symbol held reduce-only below the
        # volatility reduce-only level was held by the liquidation buffer, the only other guard
        for symbol in target.reduce_only_symbols:
            if symbol not in target.liq_breached and target.vol_level.get(symbol, 0) < 2:
                target.liq_breached.append(symbol)
    _restore_strategy(engine.strategy, snap)


def _restore_strategy(strategy: object, snap: EngineSnapshot) -> None:
    data = snap.strategy_state
    if data is None:
        return
    if snap.strategy_state_format == "msgpack":
        put = getattr(strategy, "restore_state", None)
        if not callable(put):
            raise InputError(f"snapshot holds {type(strategy).__name__} state but it has no restore_state()")
        put(msgspec.msgpack.decode(data))
    elif snap.strategy_state_format == "pickle":
        attrs: dict[str, Any] = pickle.loads(data)
        vars(strategy).update(attrs)


def encode(snap: EngineSnapshot) -> bytes:
    """The snapshot as msgpack bytes (write them next to the run's outputs)."""
    return msgspec.msgpack.encode(snap)


def decode(data: bytes) -> EngineSnapshot:
    """Read :func:`encode`'s bytes.

    Raises:
        InputError: the bytes are not a snapshot.
    """
    try:
        return msgspec.msgpack.decode(data, type=EngineSnapshot)
    except msgspec.MsgspecError as e:
        raise InputError(f"not an engine snapshot: {e}") from e
