"""Binance USD-M websocket recordings → tape rows (DESIGN.md §4).

Input: text (optionally gzip), one line per message, ``<local_recv_ns> <json>``, where the
JSON is Binance's combined-stream envelope ``{"stream": ..., "data": {...}}`` (a bare
event is accepted too), plus REST depth snapshot lines
``{"lastUpdateId", "E", "T", "bids", "asks"}`` (the layout of hftbacktest's recorder).

Row mapping:

- ``trade`` → ``trade``: ``m`` true means the buyer was the maker, so the aggressor sold
  (side -1); ``seq`` is the trade id ``t``. Trades whose ``X`` is not ``MARKET``
  (insurance fund, ADL) are not market prints and are counted as ignored.
- ``bookTicker`` → ``quote``; ``seq`` is its update id ``u``.
- REST snapshot → ``book_reset`` + one ``book`` row per level, all flagged SNAPSHOT;
  ``seq`` is ``lastUpdateId``.
- ``depthUpdate`` → one ``book`` row per changed level (bids then asks, absolute sizes,
  0 deletes); ``seq`` is ``u``. Every row of one message shares ``ts`` and ``recv_ts``
  and the last carries END_OF_MESSAGE.

Book synchronisation follows Binance's documented procedure for a local order book:
diffs that arrive before the snapshot are buffered; once it arrives, diffs with
``u < lastUpdateId`` are dropped, the first applied diff must have
``U <= lastUpdateId <= u``, and after that each diff's ``pu`` must equal the previous
``u``. A break writes a ``status`` row ``gap``: the symbol's book is stale until the next
``book_reset``, which the converter writes when a later snapshot arrives (diffs after the
gap are buffered for it, and the same rule is applied again). A snapshot arriving while the
book is in sync is redundant and ignored (counted).

Ordering key (DESIGN.md §3): the tape's clock is ``recv_ts``, the local receive stamp,
because it is the order in which the recorder saw the streams and it never runs backwards
in file order, whereas the exchange time ``E`` (kept as ``ts``, ms → ns) is not monotonic
across streams. Diffs buffered before a snapshot are written right after the snapshot
rows and stamped with the snapshot's ``recv_ts``: that is the moment they became usable,
and it keeps the book rows in apply order. Should a recording's stamps go backwards, the
rows are stably sorted by ``recv_ts`` and the report counts the lines concerned.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Final

import msgspec

from perpsim.core.errors import TapeError
from perpsim.core.events import BOOK, Flags, Kind
from perpsim.tapes.formats import ConvertReport, RowBuffer

__all__ = ["MAX_BUFFERED_DIFFS", "BinanceConverter", "convert_binance"]

MAX_BUFFERED_DIFFS: Final = 10_000
"""Diffs kept while waiting for a snapshot; older ones are dropped (and counted)."""

_MS: Final = 1_000_000
_INF: Final = math.inf
_EOM: Final = int(Flags.END_OF_MESSAGE)
_SNAP: Final = int(Flags.SNAPSHOT)


class _Depth(msgspec.Struct, tag_field="e", tag="depthUpdate"):
    E: int
    s: str
    U: int
    u: int
    pu: int
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]
    T: int | None = None


class _BookTicker(msgspec.Struct, tag_field="e", tag="bookTicker"):
    u: int
    s: str
    b: float
    B: float
    a: float
    A: float
    E: int
    T: int | None = None


class _Trade(msgspec.Struct, tag_field="e", tag="trade"):
    E: int
    s: str
    t: int
    p: float
    q: float
    m: bool
    T: int | None = None
    X: str = "MARKET"


_Event = _Depth | _BookTicker | _Trade


class _Envelope(msgspec.Struct):
    stream: str
    data: _Event


class _Snapshot(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    E: int | None = None
    T: int | None = None


class _Unknown(msgspec.Struct):
    """Just enough of a well-formed message of a type the tape does not carry."""

    e: str


class _UnknownEnvelope(msgspec.Struct):
    stream: str
    data: _Unknown


# strict=False: Binance sends prices and sizes as strings ("61800.20").
_DEC_ENV: Final[msgspec.json.Decoder[_Envelope]] = msgspec.json.Decoder(_Envelope, strict=False)
_DEC_BARE: Final[msgspec.json.Decoder[_Depth | _BookTicker | _Trade]] = msgspec.json.Decoder(_Event, strict=False)
_DEC_SNAP: Final[msgspec.json.Decoder[_Snapshot]] = msgspec.json.Decoder(_Snapshot, strict=False)
_DEC_UNKNOWN_ENV: Final[msgspec.json.Decoder[_UnknownEnvelope]] = msgspec.json.Decoder(_UnknownEnvelope)
_DEC_UNKNOWN: Final[msgspec.json.Decoder[_Unknown]] = msgspec.json.Decoder(_Unknown)


class _Sync:
    """Per-symbol book synchronisation state (the Binance local-book procedure)."""

    WAIT: Final = 0  # no usable book: buffer diffs until a snapshot arrives
    SYNCING: Final = 1  # snapshot written: waiting for the diff that bridges lastUpdateId
    SYNCED: Final = 2  # each diff's pu must equal the previous u

    def __init__(self) -> None:
        self.state = self.WAIT
        self.last_id = 0  # lastUpdateId while SYNCING, the last applied u while SYNCED
        self.pending: list[tuple[int, _Depth]] = []  # (recv_ts, diff) while WAIT


def _check_values(ev: _Depth | _BookTicker | _Trade) -> str | None:
    """Why a decoded message's numbers are unusable (NaN, ≤ 0 prices, negative sizes), or None."""
    if isinstance(ev, _BookTicker):
        if not (0.0 < ev.b < _INF and 0.0 < ev.a < _INF and 0.0 <= ev.B < _INF and 0.0 <= ev.A < _INF):
            return f"bookTicker: bid {ev.b!r} x {ev.B!r} / ask {ev.a!r} x {ev.A!r} are not valid prices and sizes"
    elif isinstance(ev, _Trade):
        if not (0.0 < ev.p < _INF and 0.0 < ev.q < _INF):
            return f"trade {ev.t}: price {ev.p!r} and size {ev.q!r} must be positive numbers"
    else:
        for name, levels in (("b", ev.b), ("a", ev.a)):
            for i, (price, size) in enumerate(levels):
                if not (0.0 < price < _INF and 0.0 <= size < _INF):
                    return f"depthUpdate u {ev.u}: level {price!r} x {size!r} is not valid - at `$.data.{name}[{i}]`"
    return None


class BinanceConverter:
    """Feed recording lines in file order; collect tape rows and a report.

    Args:
        source: the input's name, for messages and the report.
        symbol: the tape symbol for every row (a single-symbol recording); None keeps
            Binance's ``s``.
        strict: raise at the first malformed line instead of skipping it.

    Use :meth:`feed_line` for each line, then :meth:`finish`; or call
    :func:`convert_binance` for a file.
    """

    def __init__(self, source: str = "<lines>", *, symbol: str | None = None, strict: bool = False) -> None:
        self.source = source
        self.symbol = symbol
        self.strict = strict
        self.rows = RowBuffer()
        self.report = ConvertReport(kind="binance", source=source, clock="recv_ts")
        self._sync: dict[str, _Sync] = {}
        self._symbols_seen: list[str] = []  # symbols with depth diffs, first-seen order
        self._any_symbols: dict[str, None] = {}  # symbols on any stream, first-seen order
        self._unattributed: tuple[_Snapshot, int] | None = None
        self._last_recv: int | None = None
        self._lineno = 0
        for c in (
            "depth_diffs",
            "diffs_applied",
            "diffs_stale",
            "diffs_buffered",
            "diffs_unsynced",
            "snapshots",
            "snapshots_ignored",
            "recv_ts_backwards",
        ):
            self.report.counters[c] = 0

    # -- input -------------------------------------------------------------------------

    def feed_line(self, line: bytes, lineno: int) -> None:
        """Convert one recording line (with or without its newline).

        Raises:
            TapeError: with ``strict``, for a malformed line (the message names the line).
        """
        line = line.strip()
        if not line:
            return
        rep = self.report
        rep.lines_read += 1
        self._lineno = lineno
        stamp, sep, js = line.partition(b" ")
        if not sep:
            self._bad(lineno, "expected '<recv_ns> <json>', found no space")
            return
        try:
            recv_ts = int(stamp)
        except ValueError:
            self._bad(lineno, f"receive stamp {stamp[:40].decode(errors='replace')!r} is not an integer")
            return
        ev: _Depth | _BookTicker | _Trade | _Snapshot | None
        try:
            ev = _DEC_ENV.decode(js).data
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            ev = self._decode_other(js, exc, lineno, recv_ts)
            if ev is None:
                return
        if isinstance(ev, _Snapshot):
            self._note_recv(recv_ts)
            self._on_snapshot(ev, recv_ts, lineno)
            return
        bad = _check_values(ev)
        if bad:
            self._bad(lineno, bad)
            return
        self._note_recv(recv_ts)
        if ev.s not in self._any_symbols:
            self._any_symbols[ev.s] = None
        if isinstance(ev, _BookTicker):
            self.rows.add(
                Kind.QUOTE,
                ev.E * _MS,
                recv_ts,
                self.symbol or ev.s,
                bid=ev.b,
                bid_size=ev.B,
                ask=ev.a,
                ask_size=ev.A,
                seq=ev.u,
                flags=_EOM,
            )
        elif isinstance(ev, _Trade):
            if ev.X != "MARKET":
                rep.ignore(f"trade X={ev.X}")
                return
            self.rows.add(
                Kind.TRADE,
                ev.E * _MS,
                recv_ts,
                self.symbol or ev.s,
                price=ev.p,
                size=ev.q,
                side=-1 if ev.m else 1,
                seq=ev.t,
                flags=_EOM,
            )
        else:
            rep.counters["depth_diffs"] += 1
            symbol = self.symbol or ev.s
            if self._unattributed is not None:
                # The held snapshot is this book's; it becomes usable now, before this diff.
                snap, _ = self._unattributed
                self._unattributed = None
                self._state(symbol)
                self._apply_snapshot(symbol, snap, recv_ts)
            self._on_diff(symbol, ev, recv_ts)

    def _note_recv(self, recv_ts: int) -> None:
        if self._last_recv is not None and recv_ts < self._last_recv:
            self.report.counters["recv_ts_backwards"] += 1
        self._last_recv = recv_ts

    def finish(self) -> ConvertReport:
        """Account for diffs still waiting for a snapshot; returns the report (rows not yet set)."""
        for sync in self._sync.values():
            self.report.counters["diffs_unsynced"] += len(sync.pending)
            sync.pending.clear()
        if self._unattributed is not None:
            _, lineno = self._unattributed
            self._unattributed = None
            self._bad(lineno, "depth snapshot, but no depth diff names its symbol; pass --symbol")
        self.report.rows = self.rows.counts()
        return self.report

    # -- decoding helpers ----------------------------------------------------------------

    def _decode_other(
        self, js: bytes, exc: Exception, lineno: int, recv_ts: int
    ) -> _Depth | _BookTicker | _Trade | _Snapshot | None:
        """A line that is not an enveloped supported event: snapshot, bare event, or other."""
        if b'"lastUpdateId"' in js:
            try:
                return _DEC_SNAP.decode(js)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc2:
                self._bad(lineno, f"depth snapshot: {exc2}")
                return None
        if not js.lstrip().startswith(b'{"stream"'):
            try:
                return _DEC_BARE.decode(js)
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
        # Well-formed, but a stream the tape does not carry (markPrice, aggTrade, ...)?
        for dec in (_DEC_UNKNOWN_ENV, _DEC_UNKNOWN):
            try:
                unknown = dec.decode(js)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue
            e = unknown.data.e if isinstance(unknown, _UnknownEnvelope) else unknown.e
            if e not in ("depthUpdate", "bookTicker", "trade"):
                self.report.ignore(e)
                if self._last_recv is None or recv_ts >= self._last_recv:
                    self._last_recv = recv_ts
                return None
        self._bad(lineno, str(exc))
        return None

    def _bad(self, lineno: int, reason: str) -> None:
        if self.strict:
            raise TapeError(f"{self.source} line {lineno}: {reason}")
        self.report.skip(lineno, reason)

    # -- book synchronisation --------------------------------------------------------------

    def _state(self, symbol: str) -> _Sync:
        sync = self._sync.get(symbol)
        if sync is None:
            sync = self._sync[symbol] = _Sync()
            self._symbols_seen.append(symbol)
        return sync

    def _on_snapshot(self, snap: _Snapshot, recv_ts: int, lineno: int) -> None:
        for name, levels in (("bids", snap.bids), ("asks", snap.asks)):
            for i, (price, size) in enumerate(levels):
                if not (0.0 < price < _INF and 0.0 <= size < _INF):
                    self._bad(lineno, f"depth snapshot: level {price!r} x {size!r} is not valid - at `$.{name}[{i}]`")
                    return
        # A REST snapshot names no symbol: it belongs to the one book of the recording.
        if self.symbol is not None:
            symbol = self.symbol
        elif len(self._symbols_seen) == 1:
            symbol = self._symbols_seen[0]
        elif not self._symbols_seen and len(self._any_symbols) <= 1:
            if not self._any_symbols:
                # Nothing names the symbol yet: hold the snapshot until the first diff does.
                self._unattributed = (snap, lineno)
                return
            symbol = next(iter(self._any_symbols))
        else:
            names = ", ".join(self._symbols_seen or self._any_symbols)
            self._bad(lineno, f"depth snapshot for an unknown symbol (seen: {names}); pass --symbol")
            return
        self._apply_snapshot(symbol, snap, recv_ts)

    def _apply_snapshot(self, symbol: str, snap: _Snapshot, recv_ts: int) -> None:
        rep = self.report
        sync = self._state(symbol)
        if sync.state == _Sync.SYNCED:
            rep.counters["snapshots_ignored"] += 1
            return
        rep.counters["snapshots"] += 1
        lid = snap.lastUpdateId
        ts = (snap.E or snap.T or recv_ts // _MS) * _MS
        rows = self.rows
        n = len(snap.bids) + len(snap.asks)
        rows.add(Kind.BOOK_RESET, ts, recv_ts, symbol, seq=lid, flags=_SNAP | (_EOM if n == 0 else 0))
        i = 0
        for side, levels in ((1, snap.bids), (-1, snap.asks)):
            for price, size in levels:
                i += 1
                rows.add(
                    BOOK,
                    ts,
                    recv_ts,
                    symbol,
                    price=price,
                    size=size,
                    side=side,
                    seq=lid,
                    flags=_SNAP | (_EOM if i == n else 0),
                )
        sync.state = _Sync.SYNCING
        sync.last_id = lid
        pending, sync.pending = sync.pending, []
        for _, diff in pending:
            # Buffered diffs become usable now: stamp them with the snapshot's recv_ts.
            self._on_diff(symbol, diff, recv_ts, buffered=True)

    def _on_diff(self, symbol: str, d: _Depth, recv_ts: int, *, buffered: bool = False) -> None:
        rep = self.report
        sync = self._state(symbol)
        if sync.state == _Sync.SYNCED:
            if d.pu == sync.last_id:
                if buffered:
                    rep.counters["diffs_buffered"] += 1
                self._emit_diff(symbol, d, recv_ts)
                sync.last_id = d.u
                return
            self._gap(symbol, d, recv_ts, f"pu {d.pu} != previous u {sync.last_id}")
            self._buffer(sync, d, recv_ts)
            return
        if sync.state == _Sync.WAIT:
            self._buffer(sync, d, recv_ts)
            return
        # SYNCING: a snapshot is in place; find the diff that bridges lastUpdateId.
        lid = sync.last_id
        if d.u < lid:
            rep.counters["diffs_stale"] += 1
            return
        if lid >= d.U:
            if buffered:
                rep.counters["diffs_buffered"] += 1
            self._emit_diff(symbol, d, recv_ts)
            sync.state = _Sync.SYNCED
            sync.last_id = d.u
            return
        self._gap(symbol, d, recv_ts, f"first diff after snapshot starts at U {d.U} > lastUpdateId {lid}")
        self._buffer(sync, d, recv_ts)

    def _buffer(self, sync: _Sync, d: _Depth, recv_ts: int) -> None:
        sync.state = _Sync.WAIT
        sync.pending.append((recv_ts, d))
        if len(sync.pending) > MAX_BUFFERED_DIFFS:
            del sync.pending[0]
            self.report.counters["diffs_unsynced"] += 1

    def _gap(self, symbol: str, d: _Depth, recv_ts: int, why: str) -> None:
        self.report.gap(self._lineno, f"{symbol}: {why}")
        self.rows.add(Kind.STATUS, d.E * _MS, recv_ts, symbol, text="gap", seq=d.u, flags=_EOM)

    def _emit_diff(self, symbol: str, d: _Depth, recv_ts: int) -> None:
        counters = self.report.counters
        counters["diffs_applied"] += 1
        n = len(d.b) + len(d.a)
        if n == 0:
            return
        ts = d.E * _MS
        u = d.u
        add = self.rows.add
        i = 0
        for price, size in d.b:
            i += 1
            add(
                BOOK,
                ts,
                recv_ts,
                symbol,
                price=price,
                size=size,
                side=1,
                seq=u,
                flags=_EOM if i == n else 0,
            )
        for price, size in d.a:
            i += 1
            add(
                BOOK,
                ts,
                recv_ts,
                symbol,
                price=price,
                size=size,
                side=-1,
                seq=u,
                flags=_EOM if i == n else 0,
            )


def convert_binance(
    src: str | Path, *, symbol: str | None = None, strict: bool = False
) -> tuple[RowBuffer, ConvertReport]:
    """Convert a Binance USD-M recording file (plain or gzip) to tape rows.

    Args:
        src: the recording; gzip is detected by its magic bytes, not its name.
        symbol: the tape symbol (default: Binance's ``s``, e.g. ``BTCUSDT``).
        strict: raise at the first malformed line.

    Returns:
        The rows (unsorted; :meth:`RowBuffer.table` sorts by ``recv_ts``) and the report.

    Raises:
        TapeError: the file cannot be read, or (``strict``) a line is malformed.
    """
    path = Path(src)
    conv = BinanceConverter(str(path), symbol=symbol, strict=strict)
    lineno = 0
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                conv.feed_line(line, lineno)
    except EOFError:
        # A recording cut off mid-write: keep what was read, report the torn end.
        conv._bad(lineno + 1, "gzip stream ends early (truncated file)")
    except zlib.error as exc:
        # Damaged mid-stream: nothing after it decodes, so keeping what was read would
        # silently drop the rest of the recording.
        raise TapeError(f"{path} line {lineno + 1}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise TapeError(f"{path}: cannot read Binance recording: {exc}") from exc
    return conv.rows, conv.finish()
