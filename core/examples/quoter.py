"""A limit-order example: quote both sides at the touch, inventory-limited (issue 4 item 9).

Every ``requote_ms`` of clock time, for each symbol, the quoter wants a post-only GTC
bid at the best bid and a post-only GTC ask at the best ask (``offset_ticks`` ticks
further away when set), each of ``size``. An order already resting at the wanted
price is kept, so it keeps its place in the queue; any other is cancelled and
replaced. The side that would take the position beyond ``max_inventory`` is not
quoted (and the other side's size is capped), and when the position reaches
``max_inventory`` it unwinds ``unwind_fraction`` of it with a reduce-only market
order (a taker fill). The best bid/ask come from the L2 book when the symbol has one,
else from the quote.

Run it on the bundled real L2 tape with the queue model on::

    perpsim replay tapes/samples/btcusdt_20240808.parquet \\
        --strategy perpsim.core.examples.quoter:Quoter --config quoter.toml

    # quoter.toml
    [venue]
    queue = "risk_averse"

or from Python: ``perpsim.replay(path, strategy=Quoter, params={"symbols": ["BTCUSDT"]},
overrides={"venue": {"queue": "risk_averse"}})``.

Orders sent but not yet acknowledged (with venue latency on) are tracked from the
``on_order`` notifications, so the quoter never stacks duplicates while they travel.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, ClassVar

from perpsim.core.book import Book
from perpsim.core.instruments import exact
from perpsim.core.strategy import Context, Strategy

__all__ = ["Quoter"]

_FINAL = ("rejected", "cancelled", "expired")


class Quoter(Strategy):
    """Two-sided post-only quoting at the touch with an inventory limit.

    Parameters: ``symbols`` (default: the symbols of the last cycle), ``size`` (0.01,
    base units or contracts), ``max_inventory`` (0.05), ``requote_ms`` (1000),
    ``offset_ticks`` (0), ``unwind_fraction`` (0.5; 0 disables unwinding).
    """

    defaults: ClassVar[dict[str, Any]] = {
        "symbols": [],
        "size": 0.01,
        "max_inventory": 0.05,
        "requote_ms": 1000,
        "offset_ticks": 0,
        "unwind_fraction": 0.5,
    }

    def on_start(self, ctx: Context) -> None:
        self.pending: dict[int, tuple[str, str, float]] = {}  # sent, not yet acknowledged
        self.cancelling: set[int] = set()
        self.quotes_sent = 0
        self.unwinds = 0
        ctx.every(round(self.params["requote_ms"] * 1_000_000), lambda now: self.requote(ctx))

    def on_order(self, ctx: Context, update: Any) -> None:
        if update.status == "accepted" or update.status in _FINAL:
            self.pending.pop(update.order_id, None)
        if update.status in _FINAL or update.status == "cancel_rejected":
            self.cancelling.discard(update.order_id)

    def on_fill(self, ctx: Context, fill: Any) -> None:
        self.pending.pop(fill.order_id, None)

    def requote(self, ctx: Context) -> None:
        for symbol in self.params["symbols"] or ctx.symbols:
            self._quote_symbol(ctx, symbol)

    def _touch(self, ctx: Context, symbol: str) -> tuple[float, float] | None:
        book = ctx.book(symbol)
        if isinstance(book, Book) and not book.empty:
            bb, ba = book.best_bid(), book.best_ask()
            if bb is None or ba is None:
                return None
            return bb[0], ba[0]
        q = ctx.quote(symbol)
        return None if q is None else (q.bid, q.ask)

    def _quote_symbol(self, ctx: Context, symbol: str) -> None:
        touch = self._touch(ctx, symbol)
        if touch is None:
            return
        inst = ctx.instrument(symbol)
        lot = exact(inst.lot)
        tick = exact(inst.tick) if inst.tick is not None else Fraction(0)
        off = tick * int(self.params["offset_ticks"])
        want_px = {"buy": float(exact(touch[0]) - off), "sell": float(exact(touch[1]) + off)}
        pos = ctx.exact_position(symbol)
        cap = exact(float(self.params["max_inventory"]))
        size = exact(float(self.params["size"]))
        room = {"buy": cap - pos, "sell": cap + pos}
        want_qty = {s: math.floor(min(size, r) / lot) * lot if r > 0 else Fraction(0) for s, r in room.items()}

        have: dict[str, list[tuple[int, float]]] = {"buy": [], "sell": []}
        for o in ctx.open_orders(symbol):
            if o.type == "limit" and not o.reduce_only:
                have[o.side_name].append((o.order_id, o.price or 0.0))
        for oid, (sym, side, px) in self.pending.items():
            if sym == symbol:
                have[side].append((oid, px))
        for side in ("buy", "sell"):
            keep = False
            for oid, px in have[side]:
                if want_qty[side] > 0 and px == want_px[side] and not keep:
                    keep = True
                elif oid not in self.cancelling and oid not in self.pending and ctx.cancel(oid):
                    self.cancelling.add(oid)
            if not keep and want_qty[side] > 0:
                oid = ctx.submit(symbol, side, want_qty[side], type="limit", price=want_px[side], post_only=True)
                self.pending[oid] = (symbol, side, want_px[side])
                self.quotes_sent += 1
        frac = exact(float(self.params["unwind_fraction"]))
        if frac > 0 and abs(pos) >= cap:
            qty = math.floor(abs(pos) * frac / lot) * lot
            if qty > 0:
                ctx.submit(symbol, "sell" if pos > 0 else "buy", qty, type="market", reduce_only=True)
                self.unwinds += 1
