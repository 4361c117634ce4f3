"""The live driver's per-message batch builder agrees with core's batch_from_events.

The driver builds each feed message's batch itself (cheaper); a column that differed
would make the live engine see something a replay of the recording does not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from perpsim.core.batch import Batch, batch_from_events
from perpsim.core.events import BookLevel, BookReset, Flags, Funding, MarketEvent, Quote, Status, Trade
from perpsim.live.driver import _message_batch

EOM = int(Flags.END_OF_MESSAGE)
SNAP = int(Flags.SNAPSHOT)


def _same(a: Batch, b: Batch) -> None:
    for f in Batch.__struct_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if f in ("symbols", "text"):
            assert x == y, f
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), f


MESSAGES: list[list[MarketEvent]] = [
    [Quote(ts=5, recv_ts=9, symbol="BTC-PERP", seq=3, flags=EOM, bid=1.5, bid_size=2.0, ask=1.6, ask_size=0.5)],
    [
        BookReset(ts=5, recv_ts=9, symbol="BTC-PERP", seq=7, flags=SNAP),
        BookLevel(ts=5, recv_ts=9, symbol="BTC-PERP", seq=7, flags=SNAP, price=10.0, size=1.0, side=1),
        BookLevel(ts=5, recv_ts=9, symbol="BTC-PERP", seq=7, flags=SNAP | EOM, price=11.0, size=0.0, side=-1),
    ],
    [
        Trade(ts=4, recv_ts=9, symbol="ETH-PERP", seq=None, price=3.0, size=0.1, side=-1),
        Trade(ts=5, recv_ts=9, symbol="BTC-PERP", seq=12, flags=EOM, price=10.5, size=0.2, side=1),
    ],
    [
        Status(ts=8, recv_ts=9, symbol="BTC-PERP", text="gap", seq=40),
        BookReset(ts=9, recv_ts=9, symbol="BTC-PERP", flags=0),
        Quote(ts=8, recv_ts=9, symbol="BTC-PERP", seq=40, flags=EOM, bid=math.nan, bid_size=0, ask=2, ask_size=1),
    ],
    [Funding(ts=1, recv_ts=2, symbol="BTC-PERP", rate=0.0001, next_ts=99, flags=EOM)],  # the general builder
]


@pytest.mark.parametrize("events", MESSAGES, ids=["quote", "snapshot", "trades", "gap-mixed", "funding"])
def test_message_batch_is_batch_from_events(events: list[MarketEvent]) -> None:
    _same(_message_batch(events), batch_from_events(events, clock="recv_ts"))


def test_message_batch_shared_constant_columns_are_read_only() -> None:
    b = _message_batch(MESSAGES[0])
    with pytest.raises(ValueError):
        b.price[0] = 1.0  # shared by every one-row batch: nobody may write it
