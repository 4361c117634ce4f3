"""The feed server's own framing of paced messages, and their stamps."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from perpsim.live.server import _UNSTAMPED, FeedServer, _text_frame_header
from perpsim.tapes.formats.coinbase import parse_time


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_headers_are_the_ones_websockets_writes(n: int) -> None:
    data = b"x" * n
    assert _text_frame_header(n) + data == Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


def test_paced_messages_arrive_as_valid_frames_in_sequence_stamped_as_they_leave(tape: Path) -> None:
    """Paced playback frames its messages itself and stamps them after rendering them."""

    async def main() -> tuple[int, list[dict[str, object]], int]:
        server = FeedServer(tape, port=0, speed=200.0, heartbeat_s=60.0)
        port = await server.start()
        got: list[dict[str, object]] = []
        try:
            async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                t0 = time.time_ns()
                for channel in ("ticker", "market_trades", "level2"):
                    await ws.send(
                        json.dumps({"type": "subscribe", "channel": channel, "product_ids": ["BTC-PERP-INTX"]})
                    )
                async with asyncio.timeout(10):
                    while len(got) < 400:
                        got.append(json.loads(await ws.recv()))
                t1 = time.time_ns()
        finally:
            await server.close()
        return t0, got, t1

    t0, got, t1 = asyncio.run(main())
    data = [m for m in got if m.get("channel") in ("ticker", "market_trades", "l2_data")]
    assert len(data) > 300
    seqs = [m["sequence_num"] for m in got if "sequence_num" in m]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost or reordered
    stamps = [parse_time(str(m["timestamp"])) for m in data]
    assert _UNSTAMPED.decode() not in {str(m["timestamp"]) for m in data}
    assert all(t0 <= s <= t1 for s in stamps)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) < len(stamps)  # some left together, in one write with one stamp
