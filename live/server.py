"""``perpsim serve``: a tape played as a Coinbase Advanced Trade websocket feed.

No machine here reaches the internet, so the live path is tested against this server:
the subscribe protocol (one channel per ``subscribe``, a ``subscriptions`` reply, a
level2 snapshot on subscribing), the envelope (``channel``, ``client_id``,
``timestamp``, ``sequence_num`` counting every message of the connection, ``events``)
and heartbeats every second, encoded by
:func:`perpsim.tapes.formats.coinbase.message_bodies` (the body of what
:func:`~perpsim.tapes.formats.coinbase.to_messages` sends) so the server and the client's
decoder cannot drift apart.

The tape plays once, on one timeline shared by every connection, like an exchange:
at ``--speed 1x`` (or ``Nx``) in tape time; at ``max`` as fast as the slowest client
reads (and paused while nobody is subscribed, so a reconnecting client misses only
what was sent while it was away). Timestamps are shifted to the present (``retime``),
so feed lag means something. ``status``, ``timer``, ``funding`` and ``mark`` rows are
not sent (Coinbase has no public message for them); the server makes its own
heartbeats. A level2 subscription gets a snapshot of the book as played so far.

Fault injection, seeded (``--seed``), per connection:

``--disconnect-every D``  close each connection D seconds after it opened
``--drop-rate P``         drop a message (its ``sequence_num`` is used: a gap)
``--gap-rate P``          skip a ``sequence_num`` before a message
``--malformed-rate P``    send a malformed message first (truncated JSON, garbage,
                          wrong types, an unknown channel)
``--huge-rate P``         send a message larger than any sane client limit first
``--stall D``             every ``--stall-every`` seconds, go silent for D seconds
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from perpsim.core.batch import Batch, batch_events
from perpsim.core.book import Book
from perpsim.core.events import BookLevel, BookReset, Flags, MarketEvent, Quote, Trade
from perpsim.core.instruments import BUILTIN
from perpsim.tapes.formats.coinbase import format_time, message_bodies, product_symbols
from perpsim.tapes.reader import open_tape

__all__ = ["Faults", "FeedServer", "ServerStats", "parse_speed"]

log = logging.getLogger("perpsim.live.server")

_EOM: Final = int(Flags.END_OF_MESSAGE)
_SNAP: Final = int(Flags.SNAPSHOT)
_SUBSCRIBABLE: Final = {
    "level2": "l2_data",
    "market_trades": "market_trades",
    "ticker": "ticker",
    "heartbeats": "heartbeats",
}
_SEQ_KEY: Final = b'"sequence_num":'
_UNSTAMPED: Final = b"1970-01-01T00:00:00.000000000Z"  # rendered first, overwritten as the frames leave
_STAMP_LEN: Final = len(_UNSTAMPED)
_COALESCE: Final = 16  # frames written together at most (see FeedServer._queue)
_TS_KEY: Final = b'"timestamp":"'


def parse_speed(text: str) -> float | None:
    """``max`` → None (as fast as clients read); ``1x``, ``10x``, ``0.5x`` or ``3`` → the factor.

    Raises:
        ValueError: not a positive factor.
    """
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        raise ValueError(f"expected max, a factor such as 1x or 0.5x, or a number; got {text!r}") from None
    if not value > 0:
        raise ValueError(f"speed must be positive, got {text!r}")
    return value


class Faults(msgspec.Struct, kw_only=True, frozen=True):
    """Injected faults; all off by default."""

    disconnect_every_s: float | None = None
    drop_rate: float = 0.0
    gap_rate: float = 0.0
    malformed_rate: float = 0.0
    huge_rate: float = 0.0
    huge_bytes: int = 2 * 2**20
    stall_s: float | None = None
    stall_every_s: float = 30.0
    seed: int = 0


class ServerStats(msgspec.Struct, kw_only=True):
    connections: int = 0
    subscriptions: int = 0
    messages: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    dropped: int = 0
    gaps: int = 0
    malformed: int = 0
    huge: int = 0
    disconnects: int = 0
    stalls: int = 0
    groups_played: int = 0
    tape_done: bool = False


class _Message(msgspec.Struct):
    """One encoded message with its envelope ``timestamp`` and ``sequence_num`` cut out.

    Both are filled in per connection at send time: the sequence is the connection's,
    and the timestamp, as Coinbase's, is when the message leaves the server.
    """

    channel: str
    products: frozenset[str]
    before_ts: bytes
    before_seq: bytes
    tail: bytes

    def render(self, seq: int, stamp: bytes) -> bytes:
        """The message with ``stamp`` (:func:`_stamp`) as its ``timestamp``."""
        return b'%b%b%b"sequence_num":%d,%b' % (
            self.before_ts,
            stamp,
            self.before_seq,
            seq,
            self.tail,
        )

    @classmethod
    def of(cls, channel: str, body: bytes, products: frozenset[str]) -> _Message:
        """The message of an encoded ``events`` array (:func:`message_bodies`), in the
        envelope :func:`~perpsim.tapes.formats.coinbase.to_messages` writes."""
        head = _HEADS.get(channel)
        if head is None:
            head = _HEADS[channel] = b'{"channel":%b,"client_id":"","timestamp":"' % msgspec.json.encode(channel)
        return cls(channel=channel, products=products, before_ts=head, before_seq=b'",', tail=b'"events":%b}' % body)


_HEADS: dict[str, bytes] = {}


def _text_frame_header(n: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``n`` bytes (RFC 6455 §5.2)."""
    if n < 126:
        return b"\x81%c" % n
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2)
    return b"\x81\x7f" + n.to_bytes(8)


def _stamp(now_ns: int) -> bytes:
    """An envelope ``timestamp``: always :data:`_STAMP_LEN` bytes (years 1000-9999)."""
    return format_time(now_ns).encode()


def _split(raw: bytes, products: frozenset[str]) -> _Message:
    """Cut an encoded envelope ``{"channel":…,"client_id":…,"timestamp":"…","sequence_num":N,…}`` apart."""
    t = raw.index(_TS_KEY) + len(_TS_KEY)
    t_end = raw.index(b'"', t)
    i = raw.index(_SEQ_KEY, t_end)
    j = raw.index(b",", i + len(_SEQ_KEY))
    ch_end = raw.index(b'"', 12)
    return _Message(
        channel=raw[12:ch_end].decode(),
        products=products,
        before_ts=raw[:t],
        before_seq=raw[t_end:i],
        tail=raw[j + 1 :],
    )


def _events_in_slices(batch: Batch, rows: int) -> Iterator[MarketEvent]:
    """The batch's events, converted ``rows`` at a time (each conversion blocks the loop)."""
    n = len(batch)
    if n <= rows:
        yield from batch_events(batch)
        return
    for lo in range(0, n, rows):
        yield from batch_events(batch.rows(slice(lo, lo + rows)))


class _Conn:
    """One client connection: its subscriptions, sequence and fault dice."""

    def __init__(self, ws: ServerConnection, index: int, seed: int) -> None:
        self.ws = ws
        self.index = index
        self.seq = 0
        self.subs: dict[str, set[str]] = {}  # data channel → product ids ("*" for all)
        self.rng = random.Random(seed * 1_000_003 + index)
        self.queued: list[tuple[_Message, int]] = []  # (message, sequence_num) not yet sent
        self.subscribed = asyncio.Event()
        self.closed = False

    def wants(self, msg: _Message) -> bool:
        prods = self.subs.get(msg.channel)
        if prods is None:
            return False
        return "*" in prods or not msg.products or not prods.isdisjoint(msg.products)


class FeedServer:
    """Serve one tape to any number of clients; ``await start()``, then ``await close()``.

    Args:
        tape: a tape file or folder.
        host, port: where to listen (port 0: a free one; read :attr:`port`).
        speed: tape-time factor (1.0 real time), None for as fast as clients read.
        faults: what to break, and the seed.
        heartbeat_s: the heartbeat period (wall time).
        retime: shift timestamps to the present (keeps feed lag meaningful).
    """

    def __init__(
        self,
        tape: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = None,
        faults: Faults | None = None,
        heartbeat_s: float = 1.0,
        retime: bool = True,
        subscribe_timeout_s: float = 5.0,
    ) -> None:
        self.tape = open_tape(tape)
        self.host = host
        self.port = port
        self.speed = speed
        self.faults = faults or Faults()
        self.heartbeat_s = heartbeat_s
        self.retime = retime
        self.subscribe_timeout_s = subscribe_timeout_s
        self.stats = ServerStats()
        instruments = {**BUILTIN, **self.tape.instruments}
        self._pmap = {sym: pid for pid, sym in product_symbols(instruments).items()}
        self._conns: list[_Conn] = []
        self._unflushed: dict[_Conn, None] = {}
        self._books: dict[str, Book] = {}
        self._book_ts: dict[str, int] = {}
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._has_clients = asyncio.Event()
        self._stalled_until = 0.0
        self._hb_counter = 0
        self._conn_index = 0
        self._source: Generator[list[MarketEvent], None, None] | None = None
        f = self.faults
        self._any_fault = bool(f.malformed_rate or f.huge_rate or f.drop_rate or f.gap_rate)
        self.done = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; playback starts with the first subscription. Returns the port."""
        self._server = await serve(
            self._handler, self.host, self.port, max_size=2**20, compression=None, ping_interval=None
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._play()), loop.create_task(self._heartbeats())]
        return self.port

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._source is not None:
            # Close the tape reader now: a Parquet reader left to the interpreter's final
            # garbage collection can hang the exit.
            self._source.close()
            self._source = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- connections --------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        self._conn_index += 1
        conn = _Conn(ws, self._conn_index, self.faults.seed)
        self.stats.connections += 1
        self._conns.append(conn)
        killer: asyncio.Task[None] | None = None
        if self.faults.disconnect_every_s:
            killer = asyncio.get_running_loop().create_task(self._kill_after(conn, self.faults.disconnect_every_s))
        try:
            reader = asyncio.ensure_future(self._read(conn))
            try:
                await asyncio.wait_for(asyncio.shield(conn.subscribed.wait()), self.subscribe_timeout_s)
            except TimeoutError:
                # Coinbase closes a connection that has not subscribed within 5 s.
                await ws.close(1008, "no subscription within 5 s")
            await reader
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._unflushed.pop(conn, None)
            if killer is not None:
                killer.cancel()
            self._conns.remove(conn)
            if not any(c.subs for c in self._conns):
                self._has_clients.clear()

    async def _kill_after(self, conn: _Conn, delay: float) -> None:
        await asyncio.sleep(delay)
        if not conn.closed:
            self.stats.disconnects += 1
            with contextlib.suppress(Exception):
                await conn.ws.close(1011, "injected disconnect")

    async def _read(self, conn: _Conn) -> None:
        async for raw in conn.ws:
            try:
                req = json.loads(raw)
                kind, channel = req["type"], req["channel"]
                products = [str(p) for p in req.get("product_ids") or []]
            except (ValueError, KeyError, TypeError):
                await conn.ws.send(json.dumps({"type": "error", "message": "Failure to parse subscription"}))
                continue
            data_ch = _SUBSCRIBABLE.get(channel)
            if kind not in ("subscribe", "unsubscribe") or data_ch is None:
                await conn.ws.send(json.dumps({"type": "error", "message": f"Failure to subscribe to {channel!r}"}))
                continue
            if kind == "subscribe":
                conn.subs.setdefault(data_ch, set()).update(products or ["*"])
            else:
                subs = conn.subs.get(data_ch)
                if subs is not None:
                    subs.difference_update(products or ["*"])
                    if not subs:
                        del conn.subs[data_ch]
            await self._send_raw(conn, self._subscriptions_msg(conn))
            if kind == "subscribe" and data_ch == "l2_data":
                for pid in products:
                    await self._send_snapshot(conn, pid)
            if conn.subs:
                self.stats.subscriptions += 1
                conn.subscribed.set()
                self._has_clients.set()

    def _subscriptions_msg(self, conn: _Conn) -> bytes:
        back = {v: k for k, v in _SUBSCRIBABLE.items()}
        subs = {back[ch]: sorted(p) if ch != "heartbeats" else ["heartbeats"] for ch, p in sorted(conn.subs.items())}
        env = {
            "channel": "subscriptions",
            "client_id": "",
            "timestamp": format_time(time.time_ns()),
            "sequence_num": conn.seq,
            "events": [{"subscriptions": subs}],
        }
        conn.seq += 1
        return json.dumps(env, separators=(",", ":")).encode()

    async def _send_snapshot(self, conn: _Conn, pid: str) -> None:
        sym = next((s for s, p in self._pmap.items() if p == pid), pid)
        book = self._books.get(sym)
        t = self._now_ts()
        rows: list[MarketEvent] = [BookReset(ts=t, recv_ts=t, symbol=sym, flags=_SNAP)]
        if book is not None:
            for side in (1, -1):
                for px, sz in book.levels(side):
                    rows.append(BookLevel(ts=t, recv_ts=t, symbol=sym, price=px, size=sz, side=side, flags=_SNAP))
        rows[-1] = msgspec.structs.replace(rows[-1], flags=rows[-1].flags | _EOM)
        for channel, body in message_bodies(rows, self._pmap):
            self.stats.snapshots += 1
            await self._send(conn, _Message.of(channel, body, frozenset((pid,))), faults=False)

    # -- sending ------------------------------------------------------------------------------

    async def _send_raw(self, conn: _Conn, data: bytes) -> None:
        self._flush_conn(conn)
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(data, text=True)

    async def _send(self, conn: _Conn, msg: _Message, *, faults: bool = True) -> None:
        """Send ``msg`` with the connection's next ``sequence_num``, faults applied."""
        if conn.closed:
            return
        f, rng, st = self.faults, conn.rng, self.stats
        if self.speed is not None and not (faults and self._any_fault):
            # Paced and fault-free: nothing to wait for, so no awaits (the common case of
            # a rehearsal or a benchmark, and most of what serving a message costs).
            st.messages += 1
            self._queue(conn, msg)
            return
        try:
            if faults:
                if f.malformed_rate and rng.random() < f.malformed_rate:
                    st.malformed += 1
                    await self._write(conn, self._malformed(conn))
                if f.huge_rate and rng.random() < f.huge_rate:
                    st.huge += 1
                    await self._write(conn, b'{"channel":"status","padding":"' + b"x" * f.huge_bytes + b'"}')
                if f.drop_rate and rng.random() < f.drop_rate:
                    st.dropped += 1
                    conn.seq += 1
                    return
                if f.gap_rate and rng.random() < f.gap_rate:
                    st.gaps += 1
                    conn.seq += 1
            data = msg.render(conn.seq, _stamp(time.time_ns()))
            conn.seq += 1
            st.messages += 1
            await self._write(conn, data)
        except ConnectionClosed:
            conn.closed = True

    def _queue(self, conn: _Conn, msg: _Message) -> None:
        """Send ``msg`` with the next ``sequence_num``, in one write with the others due now.

        One socket write per message costs a system call here and a wake-up, a read and
        a loop iteration in the client, which is most of what a message costs the client
        at 10,000 messages/s. Messages queued while playback runs without waiting go out
        together when it next waits (or after ``_COALESCE`` of them), stamped as they
        leave, as Coinbase stamps them. Every other send flushes the queue first, so
        the order is the ``sequence_num`` order.
        """
        conn.queued.append((msg, conn.seq))
        conn.seq += 1
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed[conn] = None
        if len(conn.queued) >= _COALESCE:
            self._flush_conn(conn)

    def _flush(self) -> None:
        for conn in list(self._unflushed):
            self._flush_conn(conn)

    def _flush_conn(self, conn: _Conn) -> None:
        self._unflushed.pop(conn, None)
        queued, conn.queued = conn.queued, []
        if not queued:
            return
        ws = conn.ws
        if ws.protocol.state is not State.OPEN or ws.send_in_progress is not None:
            now = _stamp(time.time_ns())
            for msg, seq in queued:  # closing, or busy: as broadcast handles it
                broadcast([ws], msg.render(seq, now), text=True)
            return
        # Framed here (unmasked text frames, as websockets frames them) so that the stamp
        # can be taken after the rendering and patched in: the messages leave at ``now``.
        out = bytearray()
        stamps = []
        for msg, seq in queued:
            data = msg.render(seq, _UNSTAMPED)
            out += _text_frame_header(len(data))
            stamps.append(len(out) + len(msg.before_ts))
            out += data
        now = _stamp(time.time_ns())
        for at in stamps:
            out[at : at + _STAMP_LEN] = now
        ws.transport.write(out)

    async def _write(self, conn: _Conn, data: bytes) -> None:
        """Paced playback writes without waiting (an exchange does not wait for a slow
        client); ``max`` waits for the client to read (backpressure is the pace)."""
        self._flush_conn(conn)
        if self.speed is None:
            await conn.ws.send(data, text=True)
        else:
            broadcast([conn.ws], data, text=True)

    def _malformed(self, conn: _Conn) -> bytes:
        variant = conn.rng.randrange(5)
        ts = format_time(self._now_ts())
        if variant == 0:  # truncated JSON
            return b'{"channel":"market_trades","client_id":"","timestamp":"' + ts.encode() + b'","sequ'
        if variant == 1:  # not JSON at all
            return b"\x00\x01 not json \xff"
        if variant == 2:  # wrong types in a supported channel
            return json.dumps(
                {
                    "channel": "market_trades",
                    "client_id": "",
                    "timestamp": ts,
                    "sequence_num": conn.seq,
                    "events": [{"type": "update", "trades": [{"product_id": "BTC-PERP-INTX", "price": "abc"}]}],
                }
            ).encode()
        if variant == 3:  # events of the wrong shape
            return json.dumps(
                {"channel": "l2_data", "client_id": "", "timestamp": ts, "sequence_num": conn.seq, "events": "nope"}
            ).encode()
        # an unknown channel, well formed: it uses a sequence number, as Coinbase's would
        data = json.dumps(
            {
                "channel": "futures_balance_summary",
                "client_id": "",
                "timestamp": ts,
                "sequence_num": conn.seq,
                "events": [],
            }
        ).encode()
        conn.seq += 1
        return data

    async def _broadcast(self, msg: _Message) -> None:
        for conn in list(self._conns):
            if conn.wants(msg):
                await self._send(conn, msg)

    # -- playback -------------------------------------------------------------------------------

    def _now_ts(self) -> int:
        return time.time_ns()

    def _groups(self) -> Generator[list[MarketEvent], None, None]:
        """The tape's streamable rows, one list per venue message (END_OF_MESSAGE)."""
        group: list[MarketEvent] = []
        # Parquet is decoded in large batches on a reader thread (small ones cost several
        # times more per row), and turned into events a small slice at a time: converting
        # blocks the loop, and whatever falls due meanwhile leaves in a burst that the
        # client then queues (the latency benchmark's tail).
        for batch in self.tape.batches(batch_rows=8192, prefetch=1):
            for ev in _events_in_slices(batch, 128):
                t = type(ev)
                if t is Trade or t is Quote or t is BookLevel or t is BookReset:
                    group.append(ev)
                if ev.flags & _EOM and group:
                    yield group
                    group = []
        if group:
            yield group

    async def _stall_point(self, loop: asyncio.AbstractEventLoop, next_stall: list[float]) -> float:
        """Go silent if a stall is due; returns how long playback was paused."""
        f = self.faults
        if not f.stall_s or loop.time() < next_stall[0]:
            return 0.0
        self.stats.stalls += 1
        self._stalled_until = loop.time() + f.stall_s
        await asyncio.sleep(f.stall_s)
        next_stall[0] = loop.time() + f.stall_every_s
        return f.stall_s

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        await self._has_clients.wait()
        next_stall = [loop.time() + self.faults.stall_every_s]
        wall0 = loop.time()
        wall0_ns = time.time_ns()
        tape0: int | None = None
        speed = self.speed
        self._source = self._groups()
        async for group in self._timed(self._source):
            t = group[-1].ts
            if tape0 is None:
                tape0 = group[0].ts
            paused = await self._stall_point(loop, next_stall)
            if speed is None and not self._has_clients.is_set():
                since = loop.time()
                await self._has_clients.wait()
                paused += loop.time() - since
            if paused:
                wall0 += paused  # the timeline moves on after a pause, as an exchange's would
                wall0_ns += round(paused * 1e9)
            if speed is not None:
                target = wall0 + (t - tape0) / 1e9 / speed
                delay = target - loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
            if self.retime:
                shift = self._shift(speed, tape0, wall0_ns)
                group = [msgspec.structs.replace(ev, ts=shift(ev.ts)) for ev in group]
            self._apply_books(group)
            products = frozenset(self._pmap.get(ev.symbol, ev.symbol) for ev in group)
            for channel, body in message_bodies(group, self._pmap):
                await self._broadcast(_Message.of(channel, body, products))
            self.stats.groups_played += 1
        self.stats.tape_done = True
        self.done.set()

    @staticmethod
    def _shift(speed: float | None, tape0: int, wall0_ns: int) -> Any:
        if speed is None:
            offset = wall0_ns - tape0
            return lambda ts: ts + offset
        return lambda ts: wall0_ns + round((ts - tape0) / speed)

    @staticmethod
    async def _timed(groups: Iterator[list[MarketEvent]]) -> AsyncIterator[list[MarketEvent]]:
        """The groups, yielding to the loop now and then so heartbeats and readers run."""
        for n, g in enumerate(groups, 1):
            yield g
            if n % 64 == 0:
                await asyncio.sleep(0)

    def _apply_books(self, group: list[MarketEvent]) -> None:
        for ev in group:
            t = type(ev)
            if t is BookReset:
                self._books[ev.symbol] = Book(ev.symbol)
            elif t is BookLevel:
                book = self._books.get(ev.symbol)
                if book is None:
                    book = self._books[ev.symbol] = Book(ev.symbol)
                book.apply(ev.side, ev.price, ev.size)

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if loop.time() < self._stalled_until:
                continue
            self._hb_counter += 1
            now = time.time_ns()
            env = {
                "channel": "heartbeats",
                "client_id": "",
                "timestamp": format_time(now),
                "sequence_num": 0,
                "events": [
                    {"current_time": format_time(now, go=True) + " m=+1.0", "heartbeat_counter": self._hb_counter}
                ],
            }
            msg = _split(json.dumps(env, separators=(",", ":")).encode(), frozenset())
            self.stats.heartbeats += 1
            await self._broadcast(msg)
