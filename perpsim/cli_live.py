"""``perpsim live`` and ``perpsim serve`` (DESIGN.md §9).

``perpsim live --canary`` runs the PerpsBot on Coinbase Advanced Trade with paper fills,
records the tape and writes a run directory; ``perpsim serve TAPE`` plays a tape as a
Coinbase feed on loopback, for tests and rehearsals. Both stop cleanly on SIGINT and
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from perpsim.core.errors import ConfigError, InputError
from perpsim.core.timefmt import parse_duration_ns

__all__ = ["live", "serve"]

_DEFAULT_URL = "wss://advanced-trade-ws.coinbase.com"


def _seconds(text: str | None, what: str) -> float | None:
    return None if text is None else parse_duration_ns(text, what=what) / 1e9


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("perpsim")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _StatusLine:
    """One line on a terminal, rewritten in place: feed state, lag, events/s, position, PnL."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, doc: dict[str, Any]) -> None:
        if not self.enabled:
            return
        lag = "-" if doc.get("lag_ms") is None else f"{doc['lag_ms']:.1f}ms"
        pos = ", ".join(f"{s} {q:g}" for s, q in doc.get("positions", {}).items()) or "flat"
        line = (
            f"{doc['feed']:<10} lag {lag:>9}  {doc['events_per_s']:>8.1f} ev/s  "
            f"gaps {doc['gaps']}  reconnects {doc['reconnects']}  pos {pos}  "
            f"PnL {doc['pnl']:+.2f}  equity {doc['equity']:.2f}  cycles {doc['cycles']}"
        )
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@click.command()
@click.option("--canary", is_flag=True, help="The canary profile (BTC-PERP, 1,000 USD paper, tight caps).")
@click.option("--profile", help="Profile name (see `perpsim profiles`); default canary.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML file merged over the profile.")
@click.option("--url", default=_DEFAULT_URL, show_default=True, help="The Advanced Trade websocket URL.")
@click.option("--symbols", help="Comma-separated symbols (default: the profile's, else BTC-PERP).")
@click.option("--interval", help="Cycle interval override, e.g. 5s (profiles may lock it).")
@click.option(
    "--record",
    "record_dir",
    type=click.Path(path_type=Path),
    help="Recording folder (default ./recordings/<UTC start>/).",
)
@click.option("--warm-from", help="Replay the tail of this recording first (TAPE, or auto: the latest).")
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics and /health on this port (0: any free port)."
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for the metrics endpoint.")
@click.option("--duration", help="Stop after this long, e.g. 10m (default: until SIGINT/SIGTERM).")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Run directory (default ./runs/<UTC start>-live-<profile>/)."
)
@click.option(
    "--journal",
    is_flag=True,
    help="Record the open segment as an append-only Arrow journal (flushes cost only the new rows); "
    "the default rewrites it as complete Parquet at each flush.",
)
@click.option("--stale-after", default="10s", show_default=True, help="Reconnect after this long without a message.")
@click.option(
    "--max-message-size",
    default=16 * 2**20,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest message accepted, bytes (a larger one closes the connection, which reconnects).",
)
@click.option("--shutdown-timeout", default="5s", show_default=True, help="Bound on a clean shutdown.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the reconnect jitter.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def live(
    canary: bool,
    profile: str | None,
    config_file: Path | None,
    url: str,
    symbols: str | None,
    interval: str | None,
    record_dir: Path | None,
    warm_from: str | None,
    metrics_port: int | None,
    metrics_host: str,
    duration: str | None,
    out: Path | None,
    journal: bool,
    stale_after: str,
    max_message_size: int,
    shutdown_timeout: str,
    seed: int,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run the bot on the live Coinbase Advanced Trade feed with paper fills.

    Everything the engine sees is recorded as a tape; `perpsim replay` of the recording
    reproduces the session's events exactly (same digest). Stop with Ctrl-C or SIGTERM.
    """
    import msgspec

    from perpsim.live.driver import LiveDriver, LiveOptions
    from perpsim.live.feed import FeedConfig, check_url
    from perpsim.sim.profiles import resolve_config
    from perpsim.sim.runs import check_unused

    if canary and profile not in (None, "canary"):
        raise ConfigError(f"--canary and --profile {profile} contradict each other")
    check_url(url)
    if out is not None:
        check_unused(out)
    if record_dir is not None:  # a second session there would extend the first's recording
        check_unused(record_dir, "--record")
    name = "canary" if canary or profile is None else profile
    over: dict[str, Any] = {}
    if symbols:
        over["symbols"] = [s.strip() for s in symbols.split(",") if s.strip()]
    if interval:
        over["interval_s"] = parse_duration_ns(interval, what="--interval") / 1e9
    cfg = resolve_config(name, config_file=config_file, overrides=over)
    feed_syms = tuple(cfg.symbols or over.get("symbols") or ["BTC-PERP"])
    opts = LiveOptions(
        feed=FeedConfig(
            url=url,
            symbols=feed_syms,
            stale_after_s=_seconds(stale_after, "--stale-after") or 10.0,
            max_size=max_message_size,
            seed=seed,
        ),
        record_dir=record_dir,
        record_root=record_dir.parent if record_dir is not None else Path("recordings"),
        run_dir=out,
        warm_from=warm_from,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        duration_s=_seconds(duration, "--duration"),
        shutdown_timeout_s=_seconds(shutdown_timeout, "--shutdown-timeout") or 5.0,
        journal=journal,
    )
    _setup_logging(verbose)
    status = _StatusLine()
    driver = LiveDriver(cfg, opts, on_status=status)
    log = logging.getLogger("perpsim.live")
    log.info("live: %s profile %s, symbols %s → %s", url, name, ",".join(feed_syms), driver.record_dir)
    try:
        result = driver.run_sync()
    finally:
        status.done()
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps({**result.summary, "digest": result.digest, "run_dir": str(result.run_dir)}, indent=2))
    else:
        from rich.console import Console

        from perpsim.cli import print_summary

        s = result.summary
        if "rows" not in s:  # an error left state no summary can hold
            click.echo(f"live ({name}) → {result.run_dir}: {s['stop_reason']}")
            sys.exit(1)
        print_summary(s, Console(), title=f"live ({name}) → {result.run_dir}")
        feed = s["feed"]
        click.echo(
            f"recorded {s['recorder']['rows_written'] if s['recorder'] else 0:,} rows to {result.record_dir}; "
            f"{feed['messages']:,} messages, {feed['gaps']} gaps, {feed['reconnects']} reconnects, "
            f"{feed['malformed']} malformed"
        )
    if result.status == "error":
        sys.exit(1)
    feed_stats = result.summary["feed"]
    if feed_stats["connects"] == 0:  # as `soak --live`: a feed never reached is bad input
        why = f" (last: {feed_stats['last_error']})" if feed_stats["last_error"] else ""
        raise InputError(f"live: the feed at {url} never connected during the session{why}")
    del msgspec


@click.command()
@click.argument("tape", type=click.Path(path_type=Path))
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="TCP port (0: any free port)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--speed", default="1x", show_default=True, help="max, 1x, or Nx (tape time factor).")
@click.option("--disconnect-every", help="Close each connection after this long, e.g. 30s.")
@click.option("--drop-rate", type=float, default=0.0, help="Probability of dropping a message (a gap).")
@click.option("--gap-rate", type=float, default=0.0, help="Probability of skipping a sequence number.")
@click.option("--malformed-rate", type=float, default=0.0, help="Probability of a malformed message first.")
@click.option("--huge-rate", type=float, default=0.0, help="Probability of an oversized message first.")
@click.option(
    "--huge-bytes", type=click.IntRange(min=1), default=2 * 2**20, show_default=True, help="Oversized message, bytes."
)
@click.option("--stall", help="Go silent this long, e.g. 15s, every --stall-every.")
@click.option("--stall-every", default="60s", show_default=True, help="Period of --stall.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault dice.")
@click.option("--no-retime", is_flag=True, help="Send the tape's own timestamps (default: shifted to now).")
@click.option("--exit-at-end", is_flag=True, help="Exit when the tape has been played (after --linger).")
@click.option("--linger", default="1s", show_default=True, help="With --exit-at-end: wait this long after the tape.")
def serve(
    tape: Path,
    port: int,
    host: str,
    speed: str,
    disconnect_every: str | None,
    drop_rate: float,
    gap_rate: float,
    malformed_rate: float,
    huge_rate: float,
    huge_bytes: int,
    stall: str | None,
    stall_every: str,
    seed: int,
    no_retime: bool,
    exit_at_end: bool,
    linger: str,
) -> None:
    """Serve TAPE as a Coinbase Advanced Trade websocket feed (for tests and rehearsals).

    Prints `ws://HOST:PORT` on the first line of standard output once listening, and
    a JSON line of statistics when stopped (SIGINT/SIGTERM).
    """
    import msgspec

    from perpsim.live.server import Faults, FeedServer, parse_speed

    try:
        factor = parse_speed(speed)
    except ValueError as e:
        raise InputError(f"--speed: {e}") from None
    for opt, v in (
        ("--drop-rate", drop_rate),
        ("--gap-rate", gap_rate),
        ("--malformed-rate", malformed_rate),
        ("--huge-rate", huge_rate),
    ):
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{opt}: a probability in [0, 1], got {v}")
    faults = Faults(
        disconnect_every_s=_seconds(disconnect_every, "--disconnect-every"),
        drop_rate=drop_rate,
        gap_rate=gap_rate,
        malformed_rate=malformed_rate,
        huge_rate=huge_rate,
        huge_bytes=huge_bytes,
        stall_s=_seconds(stall, "--stall"),
        stall_every_s=_seconds(stall_every, "--stall-every") or 60.0,
        seed=seed,
    )
    linger_s = _seconds(linger, "--linger") or 0.0

    async def main() -> dict[str, Any]:
        server = FeedServer(tape, host=host, port=port, speed=factor, faults=faults, retime=not no_retime)
        try:
            bound = await server.start()
        except OSError as e:
            raise InputError(f"--host {host} --port {port}: cannot listen ({e.strerror or e})") from None
        click.echo(f"ws://{host}:{bound}", nl=True)
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        waits = [asyncio.ensure_future(stop.wait())]
        if exit_at_end:
            waits.append(asyncio.ensure_future(server.done.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if server.done.is_set() and not stop.is_set():
            await asyncio.sleep(linger_s)
        for w in waits:
            w.cancel()
        await server.close()
        return msgspec.to_builtins(server.stats)  # type: ignore[no-any-return]

    stats = asyncio.run(main())
    click.echo(json.dumps(stats))
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is closed; skip the interpreter's final garbage collection, which was
    # seen to hang after a long, fast playback (in a native destructor, not our code).
    os._exit(0)


if __name__ == "__main__":  # until the main group registers these: python -m perpsim.cli_live live|serve
    from perpsim.cli import main, perpsim_cli

    for _cmd in (live, serve):
        if _cmd.name not in perpsim_cli.commands:
            perpsim_cli.add_command(_cmd)
    main()
