"""The Coinbase Advanced Trade feed client: connect, subscribe, stamp, normalize, survive.

The client owns the socket, the subscriptions, the backoff and the deadlines (STYLE.md,
"Drivers hold the engine"); it hands each message's market events to the driver through
one callback, synchronously, right after stamping it, so nothing runs between a
message's arrival stamp and its dispatch (DESIGN.md §3: the stamp is the clock value of
every row normalized from the message).

Faults, and what the engine sees of them (all as rows, so a replay sees the same):

- **sequence gap** (``sequence_num`` jumps): the normalizer's ``status`` ``gap`` rows,
  then a ``book_reset`` per symbol, and a level2 resubscribe; the symbol's ``book`` rows
  are dropped until the new snapshot arrives, so the book is never used stale.
- **stale** (no message for ``stale_after_s``): the connection is closed and reopened.
- **disconnect** (closed, refused, stale, too-large message): ``status`` ``disconnect``
  and ``book_reset`` rows per symbol; then reconnect with exponential backoff and
  jitter (base 0.25 s, cap 30 s, seeded), resubscribe, ``status`` ``reconnect`` rows.
- **malformed message** (bad JSON, wrong types, bad numbers): counted, logged with a
  sample (rate-limited), skipped. Unknown channels are counted as ignored.
- **crossed quote** (bid > ask, which a tape may not hold): counted as invalid, skipped.
- **a product not subscribed to** (a feed may send one anyway): counted, logged once,
  skipped; the engine sees, and the recording holds, the session's symbols only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from perpsim.core.errors import InputError
from perpsim.core.events import BookLevel, BookReset, Flags, MarketEvent, Quote, Status
from perpsim.core.instruments import BUILTIN, Instrument
from perpsim.live.clock import LiveClock
from perpsim.tapes.formats.coinbase import ALL_SYMBOLS, MalformedMessage, Normalizer, VenueError

__all__ = [
    "CHANNELS",
    "DEFAULT_URL",
    "Backoff",
    "CoinbaseFeed",
    "FeedConfig",
    "FeedState",
    "FeedStats",
    "check_url",
    "product_ids",
]

log = logging.getLogger("perpsim.live.feed")

DEFAULT_URL: Final = "wss://advanced-trade-ws.coinbase.com"
CHANNELS: Final = ("heartbeats", "ticker", "market_trades", "level2")
"""Subscribed channels, one per subscribe message as Coinbase requires."""

_EOM: Final = int(Flags.END_OF_MESSAGE)
_SNAP: Final = int(Flags.SNAPSHOT)

EventSink = Callable[[list[MarketEvent], int], None]
"""``on_events(events, recv_ts)``: the driver's dispatch, called once per socket read
(with the rows of every message the read carried; a long read in parts of about
``_DISPATCH_ROWS`` rows) and for status rows."""


class FeedState(StrEnum):
    """Where the connection is; exported in ``/health`` and the status line."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LIVE = "live"
    STALE = "stale"
    BACKOFF = "backoff"
    CLOSED = "closed"


class FeedConfig(msgspec.Struct, kw_only=True, frozen=True):
    """How to reach and watch the feed.

    ``stale_after_s``: Coinbase sends a heartbeat every second, so silence this long
    means the connection is dead even if TCP has not noticed. ``max_size``: the largest
    message accepted (level2 snapshots are the big ones); a larger one closes the
    connection (code 1009) and counts as a disconnect.
    """

    url: str = DEFAULT_URL
    symbols: tuple[str, ...] = ("BTC-PERP",)
    stale_after_s: float = 10.0
    open_timeout_s: float = 10.0
    max_size: int = 16 * 2**20
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    resync_timeout_s: float = 10.0
    seed: int = 0
    jwt: str | None = None


class FeedStats(msgspec.Struct, kw_only=True):
    """Counters the driver exports as metrics; read them, never reset them."""

    messages: int = 0
    bytes: int = 0
    events: int = 0
    malformed: int = 0
    venue_errors: int = 0
    invalid: int = 0
    gaps: int = 0
    resyncs: int = 0
    book_dropped: int = 0
    unsubscribed: int = 0
    connects: int = 0
    reconnects: int = 0
    disconnects: int = 0
    stale: int = 0
    last_recv_ns: int = 0
    last_lag_ns: int | None = None
    last_error: str = ""


def check_url(url: str, option: str = "--url") -> None:
    """Refuse a URL the feed could never connect to, before a session records anything.

    Raises:
        InputError: not ``ws://`` or ``wss://`` with a host, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InputError(f"{option} {url}: not a websocket URL (ws://HOST:PORT or wss://HOST)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InputError(f"{option} {url}: {e}") from None


class Backoff:
    """Exponential backoff with jitter: attempt k waits ``min(cap, base * 2**k)`` x U(0.5, 1).

    Seeded, so a test's delays are reproducible; :meth:`reset` after a healthy connection.
    """

    def __init__(self, base_s: float = 0.25, cap_s: float = 30.0, seed: int = 0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = random.Random(seed)

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the attempt count."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def reset(self) -> None:
        self.attempt = 0


def product_ids(symbols: Sequence[str], instruments: Mapping[str, Instrument] | None = None) -> dict[str, str]:
    """Tape symbol → Coinbase product id through the instrument table (``BTC-PERP`` → ``BTC-PERP-INTX``).

    A symbol with no ``product_id`` is sent as it is (a spot product such as ``BTC-USD``).
    """
    table = {**BUILTIN, **(instruments or {})}
    out: dict[str, str] = {}
    for s in symbols:
        ins = table.get(s)
        out[s] = ins.product_id if ins is not None and ins.product_id else s
    return out


_DISPATCH_ROWS: Final = 16
"""A read's rows are dispatched when it ends, or as soon as this many are waiting: a
burst of a hundred messages in one read (a server catching up) would otherwise hold its
first message until the last is normalized. Measured at 10,000 messages/s (about 12
messages and 19 rows a read): p99 0.82 ms against 0.92 ms with one dispatch per read,
the mean of six alternating pairs of runs."""

_OWN_FRAME_MAX: Final = 1 << 16  # larger frames (book snapshots) arrive over many reads: websockets' parser


class _FeedConnection(ClientConnection):
    """A websockets client connection that hands each data message to ``on_message`` at once.

    websockets queues a message and wakes the task awaiting ``recv()``: a future, a task
    switch and a loop iteration per message, about as much CPU as decoding and
    dispatching it, and at 10,000 messages/s the queue it builds up while the loop is
    busy is the socket-to-engine latency (issue 5). Here every message of a socket read
    is handled inside ``data_received``, in order.

    A frame that is a whole text or binary message (FIN set, no extension bits, not
    masked, within ``max_size``: what an exchange sends all day) is cut out of the
    bytes here, at a frame boundary of websockets' parser, with nothing in its buffer
    and no fragmented message under way. Everything else (the handshake, pings, close,
    fragments, a frame over ``max_size``) goes to websockets' own parser, and the bytes
    after it too until that parser is back at a frame boundary; websockets' frame
    parser, a generator with a Frame object per frame, cost about a fifth of a
    message's CPU. A callback that raises closes the connection (1011) and the error is
    kept in :attr:`failure`.
    """

    on_message: Callable[[bytes], None] | None = None
    on_read_end: Callable[[], None] | None = None  # after the messages of one socket read
    failure: BaseException | None = None
    _fragments: list[bytes] | None = None
    _partial: bytes = b""  # the start of a frame cut short by the end of a read

    def data_received(self, data: bytes) -> None:
        if self.on_message is None or self.response is None:
            super().data_received(data)  # the handshake, or not ours yet
            return
        try:
            self._receive(data)
        finally:
            end = self.on_read_end
            if end is not None:
                self._call(end)

    def _receive(self, data: bytes) -> None:
        proto = self.protocol
        if self._partial:
            data, self._partial = self._partial + data, b""
        limit = proto.max_message_size
        pos, n = 0, len(data)
        while pos < n:
            if proto.reader.buffer or proto.current_size is not None or proto.state is not State.OPEN:
                break  # websockets is inside a frame or a fragmented message, or closing
            if n - pos < 2:
                self._partial = data[pos:]
                return
            b0, size = data[pos], data[pos + 1]
            if (b0 != 0x81 and b0 != 0x82) or size & 0x80:
                break  # a control frame, a fragment, extension bits, a mask: websockets'
            start = pos + (2 if size < 126 else 4 if size == 126 else 10)
            if start > n:
                self._partial = data[pos:]
                return
            if size == 126:
                size = int.from_bytes(data[pos + 2 : pos + 4])
            elif size == 127:
                size = int.from_bytes(data[pos + 2 : pos + 10])
            if size > _OWN_FRAME_MAX or (limit is not None and size > limit):
                break  # websockets' buffer takes a large frame in pieces; over max_size it closes (1009)
            end = start + size
            if end > n:
                self._partial = data[pos:]
                return
            self._deliver(data[start:end])
            pos = end
        if pos < n:
            super().data_received(data[pos:] if pos else data)

    def _deliver(self, data: bytes) -> None:
        cb = self.on_message
        if cb is not None:
            self._call(cb, data)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self.failure is not None:
            return
        try:
            fn(*args)
        except Exception as exc:  # the loop's data_received must not raise
            self.failure = exc
            self.protocol.fail(1011, "client error")
            self.send_data()

    def process_event(self, event: Event) -> None:
        cb = self.on_message
        if cb is None or self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake response, or not ours yet
            return
        op = event.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if not event.fin:
                self._fragments = [bytes(event.data)]
                return
            data = event.data
        elif op is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol rejects a stray continuation before we see one
            self._fragments.append(bytes(event.data))
            if not event.fin:
                return
            data, self._fragments = b"".join(self._fragments), None
        else:
            super().process_event(event)  # ping, pong, close
            return
        self._deliver(data if type(data) is bytes else bytes(data))


class CoinbaseFeed:
    """One logical feed over as many connections as it takes; :meth:`run` until cancelled.

    Args:
        config: the URL, symbols and limits.
        clock: stamps each message once on arrival.
        on_events: called with each message's events (possibly with gap, reset or
            status rows added) and its stamp; must not block.
        instruments: the instrument table used to name products.
    """

    def __init__(
        self,
        config: FeedConfig,
        *,
        clock: LiveClock,
        on_events: EventSink,
        instruments: Mapping[str, Instrument] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_events = on_events
        self.products = product_ids(config.symbols, instruments)
        self.normalizer = Normalizer({p: s for s, p in self.products.items()}, instruments=instruments)
        # rows the engine may see: the subscribed symbols' and the feed-wide ones (heartbeats)
        self._wanted = frozenset((*self.products, ALL_SYMBOLS))
        self.state = FeedState.IDLE
        self.stats = FeedStats()
        self.backoff = Backoff(config.backoff_base_s, config.backoff_cap_s, config.seed)
        self._ws: ClientConnection | None = None
        self._awaiting: dict[str, None] = {}  # symbols whose book waits for a snapshot
        self._resync_sent_ns = 0
        self._ever_connected = False
        self._malformed_logged = 0
        self._healthy = 0  # messages on this connection, up to 10
        self._tasks: set[asyncio.Task[None]] = set()
        self._read_ts: int | None = None  # the stamp of the socket read being handled
        self._batch: list[MarketEvent] = []  # its rows so far

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and pump messages forever, reconnecting on every failure."""
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as e:
                    self._lost(f"{type(e).__name__}: {e}")
                except InvalidURI:
                    raise
                except Exception as e:  # keep the feed alive; the error is in the log
                    log.exception("feed: unexpected error")
                    self._lost(f"{type(e).__name__}: {e}")
                self.state = FeedState.BACKOFF
                await asyncio.sleep(self.backoff.next_delay())
        finally:
            self.state = FeedState.CLOSED
            ws, self._ws = self._ws, None
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)

    async def _session(self) -> None:
        cfg = self.config
        self.state = FeedState.CONNECTING
        ws = await connect(
            cfg.url,
            open_timeout=cfg.open_timeout_s,
            max_size=cfg.max_size,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=1,
            compression=None,  # Coinbase does not compress; deflate would cost CPU on both ends
            create_connection=_FeedConnection,
        )
        assert isinstance(ws, _FeedConnection)
        self._ws = ws
        early: list[bytes] = []  # messages that arrive while we subscribe, handled in order after
        ws.on_message = early.append
        try:
            self.normalizer.reset()
            # Coinbase closes a connection that has not subscribed within 5 s: do it now.
            for channel in CHANNELS:
                await ws.send(self._subscribe_msg("subscribe", channel))
            self.stats.connects += 1
            if self._ever_connected:
                self.stats.reconnects += 1
                self._status("reconnect")
            self._ever_connected = True
            self._awaiting = dict.fromkeys(self.products)
            self._resync_sent_ns = self.clock.stamp()
            self.state = FeedState.LIVE
            self.stats.last_recv_ns = self.clock.stamp()
            self._healthy = 0
            for raw in early:
                self._on_message(raw)
            self._end_read()
            ws.on_message, ws.on_read_end = self._on_message, self._end_read
            watchdog = asyncio.get_running_loop().create_task(self._watchdog(ws))
            try:
                await ws.wait_closed()  # messages arrive through _on_message meanwhile
            finally:
                watchdog.cancel()
            if ws.failure is not None:
                raise ws.failure
            if self.state is FeedState.STALE:
                raise TimeoutError(f"no message for {cfg.stale_after_s:g} s (stale)")
            raise ws.close_exc
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Close a connection that has been silent for ``stale_after_s`` (it is dead).

        A separate task rather than a timeout around every ``recv``: arming a timer per
        message costs more than the rest of the receive path.
        """
        limit = int(self.config.stale_after_s * 1e9)
        period = min(1.0, self.config.stale_after_s / 4)
        while True:
            await asyncio.sleep(period)
            if self.clock.stamp() - self.stats.last_recv_ns > limit:
                self.stats.stale += 1
                self.state = FeedState.STALE
                await ws.close(1001, "stale")
                return

    def _subscribe_msg(self, kind: str, channel: str) -> bytes:
        msg: dict[str, Any] = {"type": kind, "channel": channel}
        if channel != "heartbeats":
            msg["product_ids"] = list(self.products.values())
        if self.config.jwt:
            msg["jwt"] = self.config.jwt
        return msgspec.json.encode(msg)

    # -- messages ---------------------------------------------------------------------

    def _on_message(self, raw: bytes | str) -> None:
        """Normalize one message; its rows wait for the end of the socket read (:meth:`_end_read`).

        Every message of one read is stamped with the read's arrival (taken at its first
        message): they arrived together, and a stamp per message would also count the
        time spent on the messages before it.
        """
        st = self.stats
        recv_ts = self._read_ts
        if recv_ts is None:
            recv_ts = self._read_ts = st.last_recv_ns = self.clock.stamp()
        st.messages += 1
        st.bytes += len(raw)
        gaps_before = self.normalizer.gaps
        try:
            events = self.normalizer.feed(raw, recv_ts)
        except VenueError as e:
            st.venue_errors += 1
            st.last_error = str(e)
            log.warning("feed: %s", e)
            return
        except MalformedMessage as e:
            st.malformed += 1
            if self._malformed_logged < 20 or st.malformed % 1000 == 0:
                self._malformed_logged += 1
                sample = bytes(raw[:200]) if isinstance(raw, bytes | bytearray) else raw[:200].encode()
                log.warning("feed: malformed message #%d skipped: %s; sample %r", st.malformed, e, sample)
            if not e.rows:
                return
            events = e.rows  # a gap it revealed or opened: the book still resyncs
        else:
            self._healthy += 1
        if self._healthy == 10:
            self.backoff.reset()  # a connection that works resets the backoff
        if self._awaiting and recv_ts - self._resync_sent_ns > self.config.resync_timeout_s * 1e9:
            self._schedule_resync()  # no snapshot came: ask again
        if not events:
            return
        if self.normalizer.gaps != gaps_before:
            st.gaps += 1
            events = self._after_gap(events, recv_ts)
        events = self._filter(events)
        if events:
            last = events[-1]
            if type(last) is not Status:
                st.last_lag_ns = recv_ts - last.ts
            st.events += len(events)
            batch = self._batch
            batch += events
            if len(batch) >= _DISPATCH_ROWS:
                self._batch = []
                self.on_events(batch, recv_ts)

    def _end_read(self) -> None:
        """Dispatch the rows of one socket read not yet dispatched, at its stamp."""
        events, recv_ts = self._batch, self._read_ts
        self._read_ts = None
        if events:
            assert recv_ts is not None
            self._batch = []
            self.on_events(events, recv_ts)

    def _after_gap(self, events: list[MarketEvent], recv_ts: int) -> list[MarketEvent]:
        """Gap rows first, then a book reset per symbol; the book waits for a new snapshot."""
        n_gap = 0
        while n_gap < len(events) and type(events[n_gap]) is Status and events[n_gap].text == "gap":
            n_gap += 1
        resets = [BookReset(ts=recv_ts, recv_ts=recv_ts, symbol=s, flags=0) for s in self.products]
        self._awaiting.update(dict.fromkeys(self.products))
        self._schedule_resync()
        return [*events[:n_gap], *resets, *events[n_gap:]]

    def _filter(self, events: list[MarketEvent]) -> list[MarketEvent]:
        """Drop rows of products the session did not subscribe to (a feed may send them; the
        engine would trade them, and a replay for the session's symbols would not), book rows
        of symbols awaiting a snapshot, and crossed quotes."""
        awaiting, wanted = self._awaiting, self._wanted
        if not awaiting:  # the common case: only a crossed quote or another product can go
            for ev in events:
                if (type(ev) is Quote and ev.bid > ev.ask) or ev.symbol not in wanted:
                    break
            else:
                return events
        out = events
        for i, ev in enumerate(events):
            t = type(ev)
            drop = False
            if ev.symbol not in wanted:
                drop = True
                self.stats.unsubscribed += 1
                if self.stats.unsubscribed == 1:
                    log.warning("feed: rows for %s, which this session did not subscribe to, are dropped", ev.symbol)
            elif t is BookLevel:
                drop = ev.symbol in awaiting and not ev.flags & _SNAP
                self.stats.book_dropped += drop
            elif t is BookReset and ev.flags & _SNAP:
                awaiting.pop(ev.symbol, None)
            elif t is Quote and ev.bid > ev.ask:
                self.stats.invalid += 1
                drop = True
            if drop:
                if out is events:
                    out = events[:i]
            elif out is not events:
                out.append(ev)
        last = events[-1].flags & _EOM
        if out and last and not out[-1].flags & _EOM:  # the message's end went with a dropped row
            out[-1] = msgspec.structs.replace(out[-1], flags=out[-1].flags | _EOM)
        return out

    def _schedule_resync(self) -> None:
        """Resubscribe level2 so Coinbase sends a fresh snapshot (DESIGN: book resync)."""
        ws = self._ws
        if ws is None:
            return
        now = self.clock.stamp()
        if now - self._resync_sent_ns < 0.5e9 and self.stats.resyncs:
            return  # one resync in flight is enough
        self._resync_sent_ns = now
        self.stats.resyncs += 1
        task = asyncio.get_running_loop().create_task(self._resubscribe_level2(ws))
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _resubscribe_level2(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._subscribe_msg("unsubscribe", "level2"))
            await ws.send(self._subscribe_msg("subscribe", "level2"))

    # -- faults -----------------------------------------------------------------------

    def _lost(self, why: str) -> None:
        """The connection is gone: tell the engine (status rows) and forget the books."""
        st = self.stats
        st.last_error = why
        if not self._ever_connected:
            log.warning("feed: cannot connect to %s: %s", self.config.url, why)
            return
        if self.state in (FeedState.LIVE, FeedState.STALE):
            st.disconnects += 1
            log.warning("feed: disconnected: %s", why)
            t = self.clock.stamp()
            rows: list[MarketEvent] = []
            syms = list(self.products)
            for i, s in enumerate(syms):
                rows.append(BookReset(ts=t, recv_ts=t, symbol=s, flags=0))
                rows.append(
                    Status(ts=t, recv_ts=t, symbol=s, text="disconnect", flags=_EOM if i == len(syms) - 1 else 0)
                )
            self._awaiting = dict.fromkeys(self.products)
            self.on_events(rows, t)

    def _status(self, text: str) -> None:
        t = self.clock.stamp()
        syms = list(self.products)
        rows: list[MarketEvent] = [
            Status(ts=t, recv_ts=t, symbol=s, text=text, flags=_EOM if i == len(syms) - 1 else 0)
            for i, s in enumerate(syms)
        ]
        self.on_events(rows, t)
