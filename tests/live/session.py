"""One in-process live session against an in-process feed server (both on one event loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from perpsim.live.driver import LiveDriver, LiveOptions, LiveResult
from perpsim.live.feed import FeedConfig
from perpsim.live.server import Faults, FeedServer, ServerStats
from perpsim.sim.profiles import resolve_config
from perpsim.sim.replay import replay
from perpsim.tapes.reader import open_tape

__all__ = ["Session", "replay_digest", "rows", "run_session"]

INTERVAL_S = 0.25


class Session(msgspec.Struct, kw_only=True):
    result: LiveResult
    server: ServerStats
    driver: Any


def run_session(
    tape: Path,
    tmp: Path,
    config_file: Path,
    *,
    faults: Faults | None = None,
    duration_s: float = 3.0,
    speed: float | None = 20.0,
    feed: dict[str, Any] | None = None,
    name: str = "s",
    warm_from: str | None = None,
) -> Session:
    """Serve ``tape`` and run the backtest bot live on it for ``duration_s``."""
    cfg = resolve_config(
        "backtest", config_file=config_file, overrides={"symbols": ["BTC-PERP"], "interval_s": INTERVAL_S}
    )

    async def main() -> Session:
        server = FeedServer(tape, port=0, speed=speed, faults=faults, heartbeat_s=0.2)
        port = await server.start()
        opts = LiveOptions(
            feed=FeedConfig(url=f"ws://127.0.0.1:{port}", symbols=("BTC-PERP",), seed=1, **(feed or {})),
            record_dir=tmp / f"{name}-rec",
            record_root=tmp,
            run_dir=tmp / f"{name}-run",
            duration_s=duration_s,
            flush_s=0.25,
            fsync=False,
            handle_signals=False,
            warm_from=warm_from,
        )
        driver = LiveDriver(cfg, opts)
        try:
            result = await driver.run()
        finally:
            await server.close()
        return Session(result=result, server=server.stats, driver=driver)

    return asyncio.run(main())


def replay_digest(s: Session, config_file: Path) -> str:
    r = replay(
        s.result.record_dir,
        profile="backtest",
        config=config_file,
        interval_s=INTERVAL_S,
    )
    assert not [w for w in r.warnings if "timer" in w], r.warnings
    return r.digest


def rows(record_dir: Path) -> list[tuple[str, str, str | None, int]]:
    """(kind, symbol, text, flags) of every recorded row, in order."""
    from perpsim.core.events import KIND_NAMES

    out: list[tuple[str, str, str | None, int]] = []
    for b in open_tape(record_dir).batches():
        for i in range(len(b)):
            out.append((KIND_NAMES[int(b.kind[i])], b.symbols[int(b.symbol[i])], b.text[i], int(b.flags[i])))
    return out
