"""Market events (what a tape row or a feed message means) and run events (what a run emits).

Market events are frozen, tagged, keyword-only Structs: nothing mutates them after
dispatch. Tape codes are IntEnums so the hot path compares small integers.
Run events are flat records, one per row of ``events.parquet`` (DESIGN.md §9); the
digest is SHA-256 over their msgpack encoding, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import Final

import msgspec

__all__ = [
    "BOOK",
    "BOOK_RESET",
    "FUNDING",
    "KIND_NAMES",
    "MARK",
    "QUOTE",
    "STATUS",
    "TIMER",
    "TRADE",
    "BookLevel",
    "BookReset",
    "Flags",
    "Funding",
    "Kind",
    "Mark",
    "MarketEvent",
    "Quote",
    "RunEvent",
    "Side",
    "Status",
    "TimerFired",
    "Trade",
    "kind_code",
    "split_messages",
]


class Kind(IntEnum):
    """Tape row kinds (DESIGN.md §4); the value is the code used on the hot path."""

    TRADE = 0
    QUOTE = 1
    BOOK = 2
    BOOK_RESET = 3
    FUNDING = 4
    MARK = 5
    STATUS = 6
    TIMER = 7


KIND_NAMES: Final[tuple[str, ...]] = tuple(k.name.lower() for k in Kind)
# The codes as plain ints, for the hot paths: numpy compares an int8 array with an
# IntEnum member ten times slower than with an int (benchmarks/README.md, session 13).
TRADE, QUOTE, BOOK, BOOK_RESET, FUNDING, MARK, STATUS, TIMER = (int(k) for k in Kind)
_KIND_BY_NAME: Final[dict[str, Kind]] = {name: Kind(i) for i, name in enumerate(KIND_NAMES)}


def split_messages(events: Iterable[MarketEvent]) -> Iterator[list[MarketEvent]]:
    """Group rows into the venue messages they came in (END_OF_MESSAGE ends one)."""
    cur: list[MarketEvent] = []
    for ev in events:
        cur.append(ev)
        if ev.flags & Flags.END_OF_MESSAGE:
            yield cur
            cur = []
    if cur:
        yield cur


def kind_code(name: str) -> Kind:
    """Map a tape ``kind`` string to its code.

    Raises:
        KeyError: for an unknown kind; validation reports it with file and row first.
    """
    return _KIND_BY_NAME[name]


class Side(IntEnum):
    """+1 buy aggressor / bid, -1 sell aggressor / ask, 0 none."""

    BUY = 1
    NONE = 0
    SELL = -1


class Flags(IntEnum):
    """Bits of the tape ``flags`` column."""

    END_OF_MESSAGE = 1
    SNAPSHOT = 2


class _Market(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    ts: int
    recv_ts: int
    symbol: str
    seq: int | None = None
    flags: int = 0


class Trade(_Market, tag="trade", frozen=True):
    price: float
    size: float
    side: int = 0


class Quote(_Market, tag="quote", frozen=True):
    bid: float
    bid_size: float
    ask: float
    ask_size: float


class BookLevel(_Market, tag="book", frozen=True):
    price: float
    size: float
    side: int


class BookReset(_Market, tag="book_reset", frozen=True):
    pass


class Funding(_Market, tag="funding", frozen=True):
    rate: float
    next_ts: int | None = None


class Mark(_Market, tag="mark", frozen=True):
    price: float


class Status(_Market, tag="status", frozen=True):
    text: str


class TimerFired(_Market, tag="timer", frozen=True):
    """A recorded timer firing: ``recv_ts`` is when it fired, ``next_ts`` its deadline."""

    text: str
    next_ts: int


MarketEvent = Trade | Quote | BookLevel | BookReset | Funding | Mark | Status | TimerFired


class RunEvent(msgspec.Struct, frozen=True, kw_only=True, array_like=True, omit_defaults=False):
    """One row of ``events.parquet``.

    ``amount`` and ``cash_after`` are integer ledger units (1e-8 of the settlement
    currency); ``fee`` is the fee in the same units for a fill.
    """

    ts: int
    recv_ts: int
    seq: int
    kind: str
    symbol: str | None = None
    order_id: int | None = None
    client_id: str | None = None
    side: str | None = None
    qty: float | None = None
    price: float | None = None
    liquidity: str | None = None
    fee: int | None = None
    amount: int | None = None
    cash_after: int | None = None
    position_after: float | None = None
    reason: str | None = None
    text: str | None = None
