"""Queue position of resting limit orders (issue 4 item 3).

Our orders are not in the tape, so where they stand in a price level's queue is a
model. Three choices (``venue.queue``):

``none`` (default)
    No queue: a resting order fills, whole, as soon as a trade prints at or through
    its price (any aggressor), or the opposite side of the book (or quote) reaches it.

``risk_averse``
    On arrival the order joins the back of the visible size at its price
    (``ahead`` = that size). A trade at its price by the opposite aggressor (a sell
    hitting our bid's level; side 0 counts as opposite) takes ``ahead`` first: the
    excess fills us (partially, capped at the trade's size, floored to the lot).
    A decrease of the visible size not explained by those trades is assumed to be
    cancellations *behind* us: ``ahead`` only falls when the level shrinks below it
    (``ahead = min(ahead, visible)``). This is hftbacktest's ``RiskAverseQueueModel``.

``probabilistic``
    As ``risk_averse``, but a decrease ``d`` not explained by trades comes from in
    front of us with probability ``ahead / (ahead + behind)`` (a cancellation is
    equally likely anywhere in the queue), drawn from the model's own
    generator seeded by the run's seed (:mod:`perpsim.core.rng`); otherwise from behind (any part
    of ``d`` larger than what is behind must come from in front).

In every model a trade strictly through the price (a sell below our bid), or the
opposite side of the book reaching our price, fills the whole remainder: the
level was consumed. A trade at our price by the *same*-side aggressor moves no
queue (it implies a crossed tape). Our own orders do not queue behind one another.

The visible size at a price comes from the L2 book when the symbol has one, else
from the top-of-book quote when the price is the touch (0 when the price improves
on it); elsewhere it is unknown, and an order that joined there learns its place
when the level first becomes visible (until then only trades through fill it).

Every change of ``ahead`` is a ``queue`` run event naming the tape row that caused
it, so a run can be audited; none are emitted with ``queue = "none"``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import msgspec

from perpsim.core.rng import seeded

__all__ = ["QueueModel", "QueueState"]

_ZERO: Final = Fraction(0)


class QueueState(msgspec.Struct, kw_only=True):
    """One resting order's place: size ``ahead`` of it and the level size last seen.

    ``None`` means unknown (the level was not visible when the order joined).
    ``traded`` is the volume traded at the level since the level was last seen,
    so the next level update does not count it twice.
    """

    ahead: Fraction | None
    level: Fraction | None
    traded: Fraction = _ZERO


class QueueModel:
    """Joins orders to queues and advances them; ``kind`` is the config's ``venue.queue``."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self.enabled = kind != "none"
        self._rng = seeded(seed, "queue")

    def join(self, visible: Fraction | None) -> QueueState:
        """A new resting order's state: behind everything visible at its price."""
        return QueueState(ahead=visible, level=visible)

    def on_trade(self, st: QueueState, size: Fraction) -> Fraction:
        """A trade of ``size`` at the order's price by the opposite aggressor.

        Returns:
            The volume that reached the order (0 while the queue ahead absorbs it).
        """
        if st.ahead is None:
            return _ZERO
        st.traded += size
        if size <= st.ahead:
            st.ahead -= size
            return _ZERO
        excess = size - st.ahead
        st.ahead = _ZERO
        return excess

    def on_level(self, st: QueueState, visible: Fraction | None) -> None:
        """The visible size at the order's price is now ``visible`` (None: not visible)."""
        if visible is None:
            return
        prev = st.level
        st.level = visible
        if prev is None or st.ahead is None:
            if st.ahead is None:
                st.ahead = visible  # first sight of the level: join behind it
            st.traded = _ZERO
            return
        traded, st.traded = st.traded, _ZERO
        change = prev - visible - traded  # the part of the decrease trades do not explain
        ahead = st.ahead
        if change > 0 and self.kind == "probabilistic":
            behind = max(prev - traded - ahead, _ZERO)
            total = ahead + behind
            if total > 0 and float(self._rng.random()) < ahead / total:
                ahead = max(ahead - change, _ZERO)
            elif change > behind:
                ahead = max(ahead - (change - behind), _ZERO)
        st.ahead = min(ahead, visible)
