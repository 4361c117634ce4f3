"""CoinbaseFeed's receive path against a scripted websockets server.

The feed handles each message inside the connection's ``data_received`` (not through
``recv()``); these pin what that must keep: order, fragmented messages, and a failing
sink ending the connection (and the feed reconnecting) rather than the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from perpsim.core.events import BookLevel, Flags, MarketEvent, Quote
from perpsim.live.clock import LiveClock
from perpsim.live.feed import _DISPATCH_ROWS, CoinbaseFeed, FeedConfig


def _ticker(seq: int, bid: float, ask: float | None = None, product: str = "BTC-PERP-INTX") -> str:
    return json.dumps(
        {
            "channel": "ticker",
            "client_id": "",
            "timestamp": "2024-10-04T07:13:31.5Z",
            "sequence_num": seq,
            "events": [
                {
                    "type": "update",
                    "tickers": [
                        {
                            "type": "ticker",
                            "product_id": product,
                            "best_bid": str(bid),
                            "best_bid_quantity": "1",
                            "best_ask": str(bid + 1 if ask is None else ask),
                            "best_ask_quantity": "1",
                        }
                    ],
                }
            ],
        }
    )


Script = Callable[[ServerConnection, int], Awaitable[None]]


Got = list[tuple[int, list[MarketEvent]]]  # (connection count, events) per sink call


def _run(
    script: Script, until: Callable[[Got, CoinbaseFeed], bool], *, sink_raises: bool = False
) -> tuple[Got, CoinbaseFeed]:
    """Serve ``script`` (called per connection with its index) to a feed until ``until`` holds.

    ``sink_raises``: the sink raises on its first call.
    """
    got: Got = []

    async def main() -> tuple[Got, CoinbaseFeed]:
        conns = 0

        async def handler(ws: ServerConnection) -> None:
            nonlocal conns
            conns += 1
            await script(ws, conns)
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            feed: CoinbaseFeed

            def sink(events: list[MarketEvent], recv_ts: int) -> None:
                got.append((feed.stats.connects, events))
                if sink_raises and len(got) == 1:
                    raise RuntimeError("sink failed")

            feed = CoinbaseFeed(
                FeedConfig(url=f"ws://127.0.0.1:{port}", symbols=("BTC-PERP",), backoff_base_s=0.01),
                clock=LiveClock(),
                on_events=sink,
            )
            task = asyncio.get_running_loop().create_task(feed.run())
            for _ in range(500):
                await asyncio.sleep(0.01)
                if until(got, feed):
                    break
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return got, feed

    return asyncio.run(main())


async def _read_subscribes(ws: ServerConnection) -> list[Any]:
    return [json.loads(await ws.recv()) for _ in range(4)]


def _bids(got: Got) -> list[float]:
    return [e.bid for _, evs in got for e in evs if isinstance(e, Quote)]


def test_fragmented_messages_arrive_whole_and_in_order() -> None:
    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        await ws.send(_ticker(0, 100.0))
        text = _ticker(1, 101.0)
        await ws.send([text[:10], text[10:50], text[50:]])  # one message in three frames
        await ws.send(_ticker(2, 102.0))

    got, feed = _run(script, lambda got, _: len(_bids(got)) >= 3)
    assert _bids(got) == [100.0, 101.0, 102.0]
    assert feed.stats.malformed == 0 and feed.stats.gaps == 0


def test_a_failing_sink_closes_the_connection_and_the_feed_reconnects() -> None:
    async def script(ws: ServerConnection, index: int) -> None:
        await _read_subscribes(ws)
        await ws.send(_ticker(0, 100.0 + index))
        await asyncio.sleep(0.05)  # a read of its own: one sink call per message
        await ws.send(_ticker(1, 200.0 + index))

    def until(got: Got, feed: CoinbaseFeed) -> bool:
        return 200.0 + 2 in _bids(got)  # the second connection's last message

    got, feed = _run(script, until, sink_raises=True)
    assert feed.stats.disconnects == 1 and feed.stats.reconnects == 1
    bids = _bids(got)
    # The first message's sink call raised: the rest of that connection was not delivered.
    assert 200.0 + 1 not in bids
    assert bids[-2:] == [100.0 + 2, 200.0 + 2]
    assert "sink failed" in feed.stats.last_error


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A server frame (unmasked), with the 7-, 16- or 64-bit length form its size needs."""
    b0, n = (0x80 if fin else 0) | opcode, len(payload)
    if n < 126:
        return bytes([b0, n]) + payload
    if n < 1 << 16:
        return bytes([b0, 126]) + n.to_bytes(2, "big") + payload
    return bytes([b0, 127]) + n.to_bytes(8, "big") + payload


def _padded(seq: int, bid: float, size: int) -> bytes:
    """A ticker of about ``size`` bytes whose padding is full of b"\\x81x": read from the
    middle, that looks like the header of a text frame."""
    doc = json.loads(_ticker(seq, bid))
    doc["client_id"] = "\u0101x" * ((size - len(_ticker(seq, bid))) // 3)  # ā is b"\\xc4\\x81"
    return json.dumps(doc, ensure_ascii=False).encode()


def test_frames_cut_anywhere_and_mixed_with_pings_fragments_and_large_frames_arrive_in_order() -> None:
    """The client cuts whole-message frames out of the bytes itself and leaves the rest to
    websockets: a stream cut into reads at every awkward place (inside a header, inside
    a 16- or 64-bit length, inside a payload) must come out as the same messages."""
    fragmented = _ticker(3, 103.0).encode()
    stream = b"".join(
        [
            _frame(_ticker(0, 100.0).encode()),
            _frame(b"hi", opcode=0x9),  # a ping: websockets answers it
            _frame(_padded(1, 101.0, 1_000)),  # 16-bit length
            _frame(_padded(2, 102.0, 70_000)),  # 64-bit length, over the client's own frame limit
            _frame(fragmented[:40], fin=False),
            _frame(fragmented[40:], opcode=0x0),
            _frame(_ticker(4, 104.0).encode()),
            _frame(_ticker(5, 105.0).encode()),
        ]
    )

    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        sizes, pos, k = (1, 2, 3, 7, 64, 1000, 40_000), 0, 0
        while pos < len(stream):
            piece = stream[pos : pos + sizes[k % len(sizes)]]
            ws.transport.write(piece)  # one read each on the client (the pause lets it read)
            pos, k = pos + len(piece), k + 1
            await asyncio.sleep(0.002)

    got, feed = _run(script, lambda got, _: len(_bids(got)) >= 6)
    assert _bids(got) == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    assert feed.stats.malformed == 0 and feed.stats.gaps == 0 and feed.stats.disconnects == 0


def test_a_long_read_is_dispatched_in_parts_of_at_most_dispatch_rows_at_one_stamp() -> None:
    """A burst (a server catching up) arrives in one socket read; its first messages must
    not wait for the last to be normalized, and every part keeps the read's one stamp."""
    n = 3 * _DISPATCH_ROWS + 5

    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        ws.transport.write(b"".join(_frame(_ticker(i, 100.0 + i).encode()) for i in range(n)))

    got, _ = _run(script, lambda got, _: len(_bids(got)) >= n)
    assert _bids(got) == [100.0 + i for i in range(n)]
    sizes = [len(evs) for _, evs in got]
    assert max(sizes) == _DISPATCH_ROWS  # one ticker, one row
    stamps = [{e.recv_ts for e in evs} for _, evs in got]
    assert all(len(s) == 1 for s in stamps)
    assert len({s.pop() for s in stamps}) < len(got)  # parts of one read share its stamp


def test_crossed_quotes_are_dropped_and_counted_and_the_rest_keep_their_order() -> None:
    crossed = {2, 4}

    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        for i in range(7):
            await ws.send(_ticker(i, 100.0 + i, ask=99.0 + i if i in crossed else None))

    got, feed = _run(script, lambda _, feed: feed.stats.messages >= 7)
    assert _bids(got) == [100.0 + i for i in range(7) if i not in crossed]
    assert feed.stats.invalid == len(crossed)


def test_rows_of_products_not_subscribed_to_are_dropped_and_counted() -> None:
    # the session subscribed to BTC-PERP; a feed sending ETH-PERP-INTX and DOGE-USD as well
    # would have the engine trade them, and a replay for BTC-PERP would not
    others = {1: "ETH-PERP-INTX", 3: "DOGE-USD", 4: "ETH-PERP-INTX"}

    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        for i in range(6):
            await ws.send(_ticker(i, 100.0 + i, product=others.get(i, "BTC-PERP-INTX")))

    got, feed = _run(script, lambda _, feed: feed.stats.messages >= 6)
    assert _bids(got) == [100.0 + i for i in range(6) if i not in others]
    assert {e.symbol for _, evs in got for e in evs} == {"BTC-PERP"}
    assert feed.stats.unsubscribed == len(others)


def _l2(seq: int, kind: str, price: str, products: tuple[str, ...] = ("BTC-PERP-INTX",)) -> str:
    update = {"side": "bid", "event_time": "2024-10-04T07:13:31Z", "price_level": price, "new_quantity": "1"}
    return json.dumps(
        {
            "channel": "l2_data",
            "client_id": "",
            "timestamp": "2024-10-04T07:13:31.5Z",
            "sequence_num": seq,
            "events": [{"type": kind, "product_id": p, "updates": [update]} for p in products],
        }
    )


def test_a_message_whose_last_row_is_dropped_still_ends_on_the_last_row_kept() -> None:
    # one l2 message for BTC, then ETH (not subscribed): the ETH row carried the message's
    # end, which the engine waits for before the venue sees the book change
    both = ("BTC-PERP-INTX", "ETH-PERP-INTX")

    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        for msg in (_l2(0, "snapshot", "100"), _l2(1, "update", "99", both)):
            await ws.send(msg)

    got, _feed = _run(script, lambda _, feed: feed.stats.messages >= 2)
    (level,) = [e for _, evs in got for e in evs if isinstance(e, BookLevel) and e.price == 99.0]
    assert level.symbol == "BTC-PERP" and level.flags & Flags.END_OF_MESSAGE


def test_a_book_update_dropped_as_malformed_resyncs_the_book_like_a_gap() -> None:
    async def script(ws: ServerConnection, _: int) -> None:
        await _read_subscribes(ws)
        for msg in (_l2(0, "snapshot", "100"), _l2(1, "update", "-5"), _l2(2, "update", "99"), _ticker(3, 98.0)):
            await ws.send(msg)

    got, feed = _run(script, lambda _, feed: feed.stats.messages >= 4)
    rows = [e for _, evs in got for e in evs]
    kinds = [(type(e).__name__, getattr(e, "text", None)) for e in rows]
    assert (feed.stats.malformed, feed.stats.gaps) == (1, 1)
    # the snapshot's reset and level, then the gap and a reset; the update after it waits for a snapshot
    assert kinds == [("BookReset", None), ("BookLevel", None), ("Status", "gap"), ("BookReset", None), ("Quote", None)]
    assert rows[2].seq == 1
