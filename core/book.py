"""An L2 order book per symbol, rebuilt from tape ``book``/``book_reset`` rows (DESIGN.md §4-5).

The engine keeps one :class:`Book` per symbol when the tape carries depth; the simulated
venue later walks it to price market orders. Rows carry the *absolute* size at a price
level (0 deletes), so applying a row never depends on the previous size.

Layout, chosen for the hot path: each side is a sorted list of keys plus a dict from key to
size. Keys are arranged so the best level is always the *last* list element (bids ascending
by price, asks ascending by negated price): best-price access is O(1), and the inserts and
deletes that dominate real feeds (near the touch) move only a few list slots.

A fast-forward replay (core/fastpath.py) does not apply rows one by one: it stages them
(:meth:`Book.stage`), and the book settles them, last size per level, at its next read or
:meth:`Book.apply`. Between two reads a busy feed updates the same levels many times, and
most books are read rarely (a market order's walk), so most of those updates are never
applied.

No I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any, Final

import numpy as np

from perpsim.core.errors import InputError
from perpsim.core.instruments import exact

__all__ = ["ASK", "BID", "Book", "next_same"]

BID: Final = 1
ASK: Final = -1


# Staged rows are merged (each level's last row) once this many wait: a book that is
# never read holds its distinct levels and at most this many rows, 4 MB, whatever the
# tape's length; a tape of many symbols whose books nobody reads holds that per symbol.
_COMPACT_ROWS: Final = 1 << 18


def next_same(levels: Any) -> Any:
    """For each row of ``levels`` (float64, never 0 or NaN), the index of the next row
    with the same level, or ``len(levels)`` if none: the rows ``lo:hi`` that are their
    level's last are then those whose next row is at or past ``hi``, with no sort."""
    n = len(levels)
    bits = levels.view(np.int64)  # one integer per level: sorts faster than the floats
    order = np.argsort(bits, kind="stable")
    same = bits[order[1:]] == bits[order[:-1]]
    nxt = np.full(n, n, dtype=np.int64)
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def _distinct(part: list[Any]) -> tuple[Any, Any]:
    """One staged range's levels, each once, with the size of its last row."""
    levels, sizes, nxt, lo, hi = part
    if nxt is None:  # merged rows: one per level already
        return levels[lo:hi], sizes[lo:hi]
    keep = nxt[lo:hi] >= hi
    return levels[lo:hi][keep], sizes[lo:hi][keep]


def _last_rows(staged: list[list[Any]]) -> tuple[Any, Any]:
    """The staged rows' distinct levels, each with the size of its last row."""
    if len(staged) == 1:
        return _distinct(staged[0])
    levels, sizes = (np.concatenate(col) for col in zip(*map(_distinct, staged), strict=True))
    bits = levels.view(np.int64)
    order = np.argsort(bits, kind="stable")
    ordered = bits[order]
    last = np.empty(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=last[:-1])
    last[-1:] = True
    keep = order[last]
    return levels[keep], sizes[keep]


class Book:
    """Price levels of one symbol's order book.

    Attributes:
        symbol: the symbol, only used in error messages.
        version: changes with every :meth:`apply`, :meth:`reset` and staged level; cache
            derived values (mid, imbalance) against it.
    """

    __slots__ = ("_ak", "_asz", "_bk", "_bsz", "_staged", "_staged_rows", "_version", "symbol")

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self._version = 0
        self._staged: list[list[Any]] = []  # [levels, sizes, next_same, lo, hi] not yet applied, in order
        self._staged_rows = 0
        self._bk: list[float] = []  # bid prices, ascending: best bid is the last element
        self._bsz: dict[float, float] = {}
        self._ak: list[float] = []  # negated ask prices, ascending: best ask is the last element
        self._asz: dict[float, float] = {}

    @property
    def version(self) -> int:
        if self._staged:
            self._settle()
        return self._version

    def reset(self) -> None:
        """Drop every level (a ``book_reset`` row, or a gap that invalidates the book)."""
        self._staged.clear()
        self._staged_rows = 0
        self._bk.clear()
        self._bsz.clear()
        self._ak.clear()
        self._asz.clear()
        self._version += 1

    def apply(self, side: int, price: float, size: float) -> None:
        """Set the absolute size of one level; ``size == 0`` removes it.

        Removing a level the book does not hold is a no-op: venues (Binance) send deletes
        for levels outside the snapshot's depth.

        Args:
            side: +1 bid, -1 ask.
            price: the level's price.
            size: the new absolute size at that price.

        Raises:
            InputError: for a negative size or a side other than +1/-1.
        """
        if self._staged:
            self._settle()
        if side == 1:
            keys, sizes, k = self._bk, self._bsz, price
        elif side == -1:
            keys, sizes, k = self._ak, self._asz, -price
        else:
            raise InputError(f"book {self.symbol!r}: side {side!r} at price {price!r} is not +1 or -1")
        self._version += 1
        if size > 0.0:
            if k not in sizes:
                insort(keys, k)
            sizes[k] = size
        elif size == 0.0:
            if k in sizes:
                del sizes[k]
                del keys[bisect_left(keys, k)]
        else:
            raise InputError(f"book {self.symbol!r}: negative size {size!r} at price {price!r} side {side}")

    def stage(self, levels: Any, sizes: Any, nxt: Any, lo: int = 0, hi: int | None = None) -> None:
        """Queue rows ``lo:hi`` for the next read, as :meth:`apply` would take them in order.

        The arrays are kept, not copied (a batch's, which nothing changes), and a range
        that continues the last one staged from the same arrays extends it: the runs
        that one decode feeds share the arrays and ``nxt``, so a read finds each level's
        last row with one comparison instead of a sort of its own.

        Args:
            levels: rows' ``price * side`` (asks negated), float64.
            sizes: rows' sizes, >= 0 (not checked: callers pass validated rows).
            nxt: :func:`next_same` of ``levels``.
        """
        hi = len(levels) if hi is None else hi
        if lo >= hi:
            return
        staged = self._staged
        if staged and staged[-1][0] is levels and staged[-1][4] == lo:
            staged[-1][4] = hi
        else:
            staged.append([levels, sizes, nxt, lo, hi])
        self._staged_rows += hi - lo
        if self._staged_rows >= _COMPACT_ROWS:
            levels, sizes = _last_rows(staged)
            self._staged = [[levels, sizes, None, 0, len(levels)]]
            self._staged_rows = len(levels)

    def _settle(self) -> None:
        """Apply the staged rows: each level's last size, one sort per side that changed."""
        levels, sizes = _last_rows(self._staged)
        self._staged = []
        self._staged_rows = 0
        self._version += len(levels)
        put = sizes > 0.0
        for keys, held, mine in ((self._bk, self._bsz, levels > 0.0), (self._ak, self._asz, levels < 0.0)):
            up = mine & put
            changed = levels[up].tolist()
            new = [k for k in changed if k not in held]
            held.update(zip(changed, sizes[up].tolist(), strict=True))
            dropped = [k for k in levels[mine ^ up].tolist() if k in held]
            for k in dropped:
                del held[k]
            if dropped:
                keys[:] = filter(held.__contains__, keys)
            if new:
                keys += new
                keys.sort()

    @property
    def empty(self) -> bool:
        """True when neither side has a level."""
        if self._staged:
            self._settle()
        return not self._bk and not self._ak

    def best_bid(self) -> tuple[float, float] | None:
        """The highest bid as ``(price, size)``, or None when there are no bids."""
        if self._staged:
            self._settle()
        if not self._bk:
            return None
        p = self._bk[-1]
        return p, self._bsz[p]

    def best_ask(self) -> tuple[float, float] | None:
        """The lowest ask as ``(price, size)``, or None when there are no asks."""
        if self._staged:
            self._settle()
        if not self._ak:
            return None
        k = self._ak[-1]
        return -k, self._asz[k]

    def levels(self, side: int, n: int | None = None) -> list[tuple[float, float]]:
        """The best ``n`` levels of one side (all when ``n`` is None), best first.

        Args:
            side: +1 bids, -1 asks.
            n: how many levels at most.
        """
        if self._staged:
            self._settle()
        if side == 1:
            keys = self._bk if n is None else self._bk[-n:] if n > 0 else []
            sz = self._bsz
            return [(p, sz[p]) for p in reversed(keys)]
        keys = self._ak if n is None else self._ak[-n:] if n > 0 else []
        sz = self._asz
        return [(-k, sz[k]) for k in reversed(keys)]

    def size_at(self, side: int, price: float) -> float:
        """The size resting at ``price`` on one side (+1 bids, -1 asks); 0.0 when no level."""
        if self._staged:
            self._settle()
        if side == 1:
            return self._bsz.get(price, 0.0)
        return self._asz.get(-price, 0.0)

    def depth(self, side: int) -> int:
        """The number of price levels on one side (+1 bids, -1 asks)."""
        if self._staged:
            self._settle()
        return len(self._bk) if side == 1 else len(self._ak)

    def walk(self, side_taken: int, qty: float) -> list[tuple[float, float]]:
        """The levels a market order of ``qty`` would consume, best first.

        The last level is partial when the order ends inside it. Quantities are summed
        exactly on their decimal values (DESIGN.md §5), so ``walk(-1, 0.3)`` over asks of
        0.1 and 0.2 returns 0.1 and 0.2, not 0.19999999999999998.

        Args:
            side_taken: the side being consumed: -1 asks (a buy order lifts them),
                +1 bids (a sell order hits them).
            qty: the order's size, > 0.

        Returns:
            ``[(price, qty_at_price), ...]``; the quantities sum to less than ``qty`` when
            the book is too thin. The caller decides what to do with the rest.
        """
        if self._staged:
            self._settle()
        out: list[tuple[float, float]] = []
        if qty <= 0:
            return out
        remaining = exact(qty)
        if side_taken == 1:
            keys, sizes, sign = self._bk, self._bsz, 1.0
        else:
            keys, sizes, sign = self._ak, self._asz, -1.0
        for i in range(len(keys) - 1, -1, -1):
            k = keys[i]
            s = sizes[k]
            es = exact(s)
            if es >= remaining:
                out.append((sign * k, float(remaining)))
                return out
            out.append((sign * k, s))
            remaining -= es
        return out

    def __repr__(self) -> str:
        return (
            f"Book({self.symbol!r}, bids={self.depth(BID)}, asks={self.depth(ASK)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )
