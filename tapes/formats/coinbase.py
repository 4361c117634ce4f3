"""Coinbase Advanced Trade websocket messages ⇄ market events (DESIGN.md §3, §4).

Two directions, one module, so they cannot drift apart:

- :class:`Normalizer` decodes raw messages into :mod:`perpsim.core.events` market events.
  It is I/O-free and shared by the tape converter (:func:`convert_coinbase`) and the live
  feed client, which stamps each message once on arrival and passes the stamp in.
- :func:`to_messages` encodes tape rows back into Coinbase envelopes for the feed server
  (``perpsim serve``); feeding its output to a :class:`Normalizer` gives the same rows.

Message mapping (envelope ``{channel, client_id, timestamp, sequence_num, events}``):

==================  ==============================================================
``l2_data``         ``snapshot`` → ``book_reset`` + ``book`` rows flagged SNAPSHOT,
                    stamped with the envelope ``timestamp`` (a snapshot level's
                    ``event_time`` is when that level last changed, not the
                    snapshot's time); ``update`` → ``book`` rows, ``ts`` =
                    ``event_time``. ``bid`` → +1, ``offer`` → -1; ``new_quantity`` is
                    the absolute size, 0 deletes. ``seq`` = ``sequence_num``.
``market_trades``   ``trade`` rows, ``ts`` = ``time``, ``seq`` = ``trade_id``.
                    ``side`` is the *maker's* side, so the aggressor is the opposite:
                    maker ``SELL`` → aggressor buy (+1), maker ``BUY`` → -1.
``ticker``          ``quote`` rows from ``best_bid``/``best_bid_quantity``/
                    ``best_ask``/``best_ask_quantity``, ``ts`` = envelope
                    ``timestamp``, ``seq`` = ``sequence_num``. A ticker without all
                    four is counted as ignored.
``heartbeats``      ``status`` ``heartbeat`` for symbol ``*``, ``ts`` =
                    ``current_time`` (Go's ``m=+…`` monotonic suffix tolerated),
                    ``seq`` = ``heartbeat_counter``.
anything else       ``subscriptions`` acknowledgements and channels a tape does not
                    carry (``ticker_batch``, ``candles``, ``status``, ``user``,
                    ``futures_balance_summary``, channels added later): no rows; counted
                    in :attr:`Normalizer.ignored`. A live feed must survive Coinbase
                    adding a channel, so an unknown channel is not an error.
==================  ==============================================================

The last row of each message carries END_OF_MESSAGE. Every row of a message gets the
``recv_ts`` passed to :meth:`Normalizer.feed`; without one (a capture with no receive
stamps) it gets the envelope ``timestamp``, the closest stand-in for arrival time that
keeps a message's rows together under a ``recv_ts`` sort.

Sequence numbers count messages per connection, across channels: a jump is a ``gap``
``status`` row for every symbol seen on the connection (``*`` if none yet), written
before the message's own rows. A book is stale after a gap until the next snapshot;
the live client resubscribes. Call :meth:`Normalizer.reset` on reconnect.

Product ids map to tape symbols through the instrument table (``BTC-PERP-INTX`` →
``BTC-PERP``); unknown products keep their id.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np

from perpsim.core.errors import InputError, TapeError
from perpsim.core.events import (
    BookLevel,
    BookReset,
    Flags,
    MarketEvent,
    Quote,
    Status,
    Trade,
)
from perpsim.core.instruments import BUILTIN, Instrument
from perpsim.tapes.formats import ConvertReport, RowBuffer

__all__ = [
    "ALL_SYMBOLS",
    "MalformedMessage",
    "Normalizer",
    "VenueError",
    "convert_coinbase",
    "format_time",
    "message_bodies",
    "parse_time",
    "product_symbols",
    "to_messages",
]

ALL_SYMBOLS: Final = "*"
"""The symbol of rows that concern the whole connection (heartbeats, gaps before any product)."""

_EOM: Final = int(Flags.END_OF_MESSAGE)
_SNAP: Final = int(Flags.SNAPSHOT)
_INF: Final = math.inf
_UNSET: Final = object()


class MalformedMessage(InputError):
    """A message is not valid JSON, or a supported channel's message has a wrong shape.

    The message names the JSON path (``$.events[0].trades[1].price``) and what was wrong;
    the converter prefixes the file and line. ``rows`` are what stands although the
    message is dropped: the ``gap`` rows of a sequence gap it revealed, or that dropping
    a ``level2`` update opens (the book missed it, so it must resync as after a gap).
    """

    def __init__(self, message: str, rows: list[MarketEvent] | None = None) -> None:
        super().__init__(message)
        self.rows: list[MarketEvent] = rows or []


class VenueError(InputError):
    """Coinbase sent an ``error`` message (bad subscription, bad JWT); its text is kept."""


# -- time ------------------------------------------------------------------------------

_POW10: Final[tuple[int, ...]] = tuple(10 ** (9 - k) for k in range(10))
_I64_MAX: Final = 2**63 - 1
# whole seconds whose fraction (and a time-zone offset of up to a day) keep within int64 ns
_MIN_NS: Final = -(2**63) + 86_401 * 10**9
_MAX_NS: Final = _I64_MAX - 86_401 * 10**9
_I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=_I64_MAX)]  # a tape's integer columns
_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
    r"\s*(Z|[+-]\d\d:?\d\d)?(?:\s*UTC)?(?:\s+m=[+-]?[\d.]+)?\Z",
    re.ASCII,
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@lru_cache(maxsize=4096)
def _second_ns(prefix: str) -> int:
    """ns since the epoch of ``YYYY-MM-DD[T ]HH:MM:SS``, validated.

    Cached: a feed stays within one second for many messages, so most calls are a lookup.
    """
    if (
        len(prefix) != 19
        or prefix[4] != "-"
        or prefix[7] != "-"
        or prefix[10] not in "T "
        or prefix[13] != ":"
        or prefix[16] != ":"
    ):
        raise ValueError(f"not a time: {prefix!r}")
    digits = prefix[0:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:16] + prefix[17:19]
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a time: {prefix!r}")
    y, mo, d = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
    h, mi, sec = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and sec < 61):
        raise ValueError(f"not a time: {prefix!r}")
    ns = (((_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec) * 1_000_000_000
    if not _MIN_NS <= ns <= _MAX_NS:  # a tape's times are int64 ns: 1677-09-21 to 2262-04-11
        raise ValueError(f"time out of range: {prefix!r}")
    return ns


def parse_time(s: str) -> int:
    """Parse a Coinbase timestamp to int ns since the epoch, UTC.

    Accepts RFC 3339 with 0-9 fractional digits (``2024-10-04T07:13:31.158696693Z``,
    ``…T07:13:31.088388Z``, offsets ``+00:00``) and Go's ``time.Time.String()`` form used
    by heartbeats (``2024-10-04 07:04:40.820713045 +0000 UTC m=+66987.628148662``; the
    monotonic-clock suffix is ignored). More than 9 fractional digits are truncated.

    Raises:
        ValueError: the string is not such a time (the caller wraps it with its path).
    """
    if len(s) == 30 and s[19] == "." and s[29] == "Z":
        # What Coinbase sends: "YYYY-MM-DDTHH:MM:SS.fffffffffZ" (one test per form costs
        # more than the rest of the parse, so this form comes first).
        frac = s[20:29]
        if frac.isdigit() and frac.isascii():
            return _second_ns(s[:19]) + int(frac)
    n = len(s)
    if n >= 20 and s[-1] == "Z":
        # Fast path: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z", what Coinbase sends almost always.
        base = _second_ns(s[:19])
        if n == 20:
            return base
        frac = s[20:-1]
        if s[19] == "." and len(frac) <= 9 and frac.isascii() and frac.isdigit():
            return base + int(frac) * _POW10[len(frac)]
    elif n >= 26 and s[10] == " " and s[19] == ".":
        # Go's time.Time.String(): "YYYY-MM-DD HH:MM:SS.fffffffff +0000 UTC m=+…" (heartbeats).
        end = s.find(" ", 20)
        frac = s[20:end]
        if s.startswith(" +0000 UTC", end) and len(frac) <= 9 and frac.isascii() and frac.isdigit():
            return _second_ns(s[:19]) + int(frac) * _POW10[len(frac)]
    m = _TIME_RE.match(s)
    if m is None:
        raise ValueError(f"not a time: {s!r}")
    y, mo, d, h, mi, sec_s, frac, tz = m.groups()
    ns = _second_ns(f"{y}-{mo}-{d}T{h}:{mi}:{sec_s}")
    if frac:
        frac = frac[:9]  # more than ns precision: truncate
        ns += int(frac) * _POW10[len(frac)]
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise ValueError(f"not a time zone offset: {tz!r}")
        ns -= sign * (hours * 60 + minutes) * 60_000_000_000
    return ns


def _trade_seq(trade_id: str | None) -> int | None:
    """A trade's ``seq``: its id when that is a whole number an int64 holds, else None."""
    if trade_id is None or not (trade_id.isascii() and trade_id.isdigit()):
        return None
    n = int(trade_id)
    return n if n <= _I64_MAX else None


def format_time(ns: int, *, go: bool = False) -> str:
    """Format int ns as Coinbase does: RFC 3339 with 9 fractional digits and ``Z``.

    Args:
        ns: ns since the epoch, UTC.
        go: use Go's ``time.Time.String()`` form of heartbeats
            (``2024-10-04 07:04:40.820713045 +0000 UTC``).
    """
    secs, frac = divmod(ns, 1_000_000_000)
    if go:
        return f"{_second_text(secs, ' ')}.{frac:09d} +0000 UTC"
    return f"{_second_text(secs, 'T')}.{frac:09d}Z"


@lru_cache(maxsize=4096)
def _second_text(secs: int, sep: str) -> str:
    """``YYYY-MM-DD{sep}HH:MM:SS`` of a second since the epoch.

    Cached: the feed server formats several times per message, nearly all within the
    same few seconds, and the calendar arithmetic costs more than the rest of it.
    """
    days, rem = divmod(secs, 86_400)
    y, mo, d = _civil_from_days(days)
    hh, r = divmod(rem, 3600)
    mm, ss = divmod(r, 60)
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{hh:02d}:{mm:02d}:{ss:02d}"


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return y + (m <= 2), m, d


# -- wire types (decoding) ---------------------------------------------------------------
#
# One tagged union over ``channel`` decodes a supported message in a single pass (the
# envelope and its typed events together); only unsupported channels and malformed
# messages take a second, envelope-only pass to find out which they are.


class _Head(msgspec.Struct):
    channel: str | None = None
    timestamp: str | None = None
    sequence_num: _I64 | None = None
    type: str | None = None
    message: str | None = None


class _L2Update(msgspec.Struct):
    side: Literal["bid", "offer"]
    price_level: float
    new_quantity: float
    event_time: str | None = None


class _L2Event(msgspec.Struct):
    type: Literal["snapshot", "update"]
    product_id: str
    updates: list[_L2Update]


class _TradeItem(msgspec.Struct):
    product_id: str
    price: float
    size: float
    side: Literal["BUY", "SELL"]
    time: str
    trade_id: str | None = None


class _TradesEvent(msgspec.Struct):
    trades: list[_TradeItem]
    type: str = "update"


class _TickerItem(msgspec.Struct):
    product_id: str
    best_bid: float | None = None
    best_bid_quantity: float | None = None
    best_ask: float | None = None
    best_ask_quantity: float | None = None


class _TickerEvent(msgspec.Struct):
    tickers: list[_TickerItem]
    type: str = "update"


class _Heartbeat(msgspec.Struct):
    current_time: str
    heartbeat_counter: _I64 | None = None


class _Msg(msgspec.Struct, tag_field="channel"):
    timestamp: str
    sequence_num: _I64


class _L2Msg(_Msg, tag="l2_data"):
    events: list[_L2Event]


class _TradesMsg(_Msg, tag="market_trades"):
    events: list[_TradesEvent]


class _TickerMsg(_Msg, tag="ticker"):
    events: list[_TickerEvent]


class _HeartbeatMsg(_Msg, tag="heartbeats"):
    events: list[_Heartbeat]


_SUPPORTED: Final = frozenset({"l2_data", "market_trades", "ticker", "heartbeats"})
# strict=False: Coinbase sends numbers as strings ("2375.56").
_DEC_MSG: Final[msgspec.json.Decoder[_L2Msg | _TradesMsg | _TickerMsg | _HeartbeatMsg]] = msgspec.json.Decoder(
    _L2Msg | _TradesMsg | _TickerMsg | _HeartbeatMsg, strict=False
)
_DEC_HEAD: Final[msgspec.json.Decoder[_Head]] = msgspec.json.Decoder(_Head)

_L2_SIDE: Final = {"bid": 1, "offer": -1}
_AGGRESSOR: Final = {"BUY": -1, "SELL": 1}  # maker side → aggressor side


def product_symbols(instruments: Mapping[str, Instrument] | None = None) -> dict[str, str]:
    """Product id → tape symbol, from the instruments' ``product_id`` (default: built-ins)."""
    table = BUILTIN if instruments is None else instruments
    return {i.product_id: sym for sym, i in table.items() if i.product_id}


class Normalizer:
    """Turn the messages of one Coinbase connection into market events.

    Args:
        symbols: product id → tape symbol, overriding the instrument table.
        instruments: the instrument table whose ``product_id`` fields name products
            (default :data:`~perpsim.core.instruments.BUILTIN`).

    Attributes:
        last_seq: the last ``sequence_num`` seen (None before the first message).
        gaps: sequence gaps seen.
        ignored: messages without rows, per channel (``subscriptions``, ``candles``, …),
            plus ``ticker_incomplete`` for tickers lacking a best bid/ask.
        messages: messages fed.
    """

    __slots__ = ("_map", "_seen", "_syms", "gaps", "ignored", "last_seq", "messages")

    def __init__(
        self,
        symbols: Mapping[str, str] | None = None,
        *,
        instruments: Mapping[str, Instrument] | None = None,
    ) -> None:
        self._map = product_symbols(instruments)
        if symbols:
            self._map.update(symbols)
        self._seen: dict[str, None] = {}  # symbols seen, in first-seen order (deterministic)
        self._syms: dict[str, str] = {}  # product id → symbol, for products seen
        self.last_seq: int | None = None
        self.gaps = 0
        self.ignored: dict[str, int] = {}
        self.messages = 0

    def reset(self) -> None:
        """Forget the sequence (a new connection numbers its messages afresh)."""
        self.last_seq = None

    def symbol(self, product_id: str) -> str:
        """The tape symbol of a Coinbase product id."""
        return self._map.get(product_id, product_id)

    def feed(self, raw: bytes | str, recv_ts: int | None = None) -> list[MarketEvent]:
        """Decode one message into market events, in message order.

        Args:
            raw: the message as received.
            recv_ts: the local receive stamp for every row; None uses the envelope
                ``timestamp``.

        Returns:
            The events; empty for acknowledgements and channels a tape does not carry
            (only a sequence ``gap`` row, if the message reveals one).

        Raises:
            MalformedMessage: invalid JSON, a missing or mistyped field in a supported
                channel, a non-finite or non-positive price, a negative size, a bad time.
                The message names the JSON path (``$.events[0].trades[1].price``).
            VenueError: Coinbase reported an error.
        """
        # The hot path of the live feed (issue 5: 300,000 messages/s on one core): one
        # typed decode, then one channel method, each a single loop that builds the rows
        # with their final flags (no second pass, no ``structs.replace``). The commonest
        # message, a ticker with one complete quote, is handled inline: a Python call
        # costs as much as the rest of its normalization.
        try:
            msg = _DEC_MSG.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return self._other(raw, recv_ts, exc)
        self.messages += 1
        seq = msg.sequence_num
        last = self.last_seq
        self.last_seq = seq
        out: list[MarketEvent] = []
        t = type(msg)
        msg_ts = -1  # parsed only when a row needs it
        stands = 0  # rows that stand even if the rest of the message is malformed
        try:
            if recv_ts is None:
                recv_ts = msg_ts = _parse_envelope(msg.timestamp)
            if last is not None and seq != last + 1:
                if msg_ts < 0:
                    msg_ts = _parse_envelope(msg.timestamp)
                self._gap(msg_ts, recv_ts, seq, out)
            stands = len(out)
            if t is _TickerMsg:
                if msg_ts < 0:
                    msg_ts = _parse_envelope(msg.timestamp)
                events = msg.events
                if len(events) == 1 and len(tickers := events[0].tickers) == 1:
                    tk = tickers[0]
                    bid, bq, ask, aq = tk.best_bid, tk.best_bid_quantity, tk.best_ask, tk.best_ask_quantity
                    if (  # anything else goes the long way (errors, counting)
                        bid is not None
                        and bq is not None
                        and ask is not None
                        and aq is not None
                        and 0.0 < bid < _INF
                        and 0.0 < ask < _INF
                        and 0.0 <= bq < _INF
                        and 0.0 <= aq < _INF
                    ):
                        pid = tk.product_id
                        out.append(
                            Quote(
                                ts=msg_ts,
                                recv_ts=recv_ts,
                                symbol=self._syms.get(pid) or self._sym(pid),
                                seq=seq,
                                flags=_EOM,
                                bid=bid,
                                bid_size=bq,
                                ask=ask,
                                ask_size=aq,
                            )
                        )
                        return out
                self._ticker(events, msg_ts, recv_ts, seq, out)
            elif t is _L2Msg:
                self._l2(msg.events, msg.timestamp, msg_ts, recv_ts, seq, out)
            elif t is _TradesMsg:
                self._trades(msg.events, recv_ts, out)
            else:
                self._heartbeat(msg.events, recv_ts, out)
        except ValueError as exc:
            rows = out[:stands]
            if t is _L2Msg and not rows and recv_ts is not None:
                if msg_ts < 0:
                    with contextlib.suppress(ValueError):
                        msg_ts = _parse_envelope(msg.timestamp)
                self._gap(msg_ts if msg_ts >= 0 else recv_ts, recv_ts, seq, rows)
            raise MalformedMessage(f"coinbase {msg.__struct_config__.tag} message: {exc}", rows) from exc
        if out and not out[-1].flags & _EOM:  # a message whose last ticker was incomplete
            out[-1] = msgspec.structs.replace(out[-1], flags=out[-1].flags | _EOM)
        return out

    def _other(self, raw: bytes | str, recv_ts: int | None, exc: Exception) -> list[MarketEvent]:
        """A message the fast decoder refused: an unsupported channel, an error, or malformed."""
        try:
            head = _DEC_HEAD.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise MalformedMessage(f"coinbase message: {exc}") from exc
        ch = head.channel
        if ch is None:
            if head.type == "error":
                raise VenueError(f"coinbase error: {head.message or '(no message)'}")
            raise MalformedMessage(f"coinbase message: {exc}") from exc
        if ch in _SUPPORTED or head.timestamp is None or head.sequence_num is None:
            raise MalformedMessage(f"coinbase {ch} message: {exc}") from exc
        self.messages += 1
        self.ignored[ch] = self.ignored.get(ch, 0) + 1
        # Unsupported channels still count in the connection's sequence.
        out: list[MarketEvent] = []
        last = self.last_seq
        self.last_seq = head.sequence_num
        if last is not None and head.sequence_num != last + 1:
            try:
                msg_ts = parse_time(head.timestamp)
            except ValueError as exc2:
                raise MalformedMessage(
                    f"coinbase {ch} message: bad time {head.timestamp!r} - at `$.timestamp`"
                ) from exc2
            self._gap(msg_ts, msg_ts if recv_ts is None else recv_ts, head.sequence_num, out)
        return out

    # -- channels ------------------------------------------------------------------------

    def _gap(self, msg_ts: int, recv: int, seq: int, out: list[MarketEvent]) -> None:
        self.gaps += 1
        names = list(self._seen) or [ALL_SYMBOLS]
        last = len(names) - 1
        for i, sym in enumerate(names):
            out.append(
                Status(
                    ts=msg_ts,
                    recv_ts=recv,
                    symbol=sym,
                    text="gap",
                    seq=seq,
                    flags=_EOM if i == last else 0,
                )
            )

    def _sym(self, product_id: str) -> str:
        """The symbol of ``product_id``, noted as seen (gap rows name every symbol seen).

        ``_syms`` caches products already seen, so the hot path is one dict lookup.
        """
        sym = self._syms.get(product_id)
        if sym is None:
            sym = self._map.get(product_id, product_id)
            self._syms[product_id] = sym
            if sym not in self._seen:
                self._seen[sym] = None
        return sym

    def _l2(
        self, events: list[_L2Event], msg_time: str, msg_ts: int, recv: int, seq: int, out: list[MarketEvent]
    ) -> None:
        last_e = len(events) - 1
        append = out.append
        syms = self._syms
        for ei, ev in enumerate(events):
            pid = ev.product_id
            sym = syms.get(pid) or self._sym(pid)
            ups = ev.updates
            last_u = len(ups) - 1 if ei == last_e else -2
            if ev.type == "snapshot":
                if msg_ts < 0:  # snapshot rows are stamped with the envelope time
                    msg_ts = _parse_envelope(msg_time)
                append(BookReset(ts=msg_ts, recv_ts=recv, symbol=sym, seq=seq, flags=_SNAP))
                for ui, u in enumerate(ups):
                    price, size = u.price_level, u.new_quantity
                    if not (0.0 < price < _INF and 0.0 <= size < _INF):
                        _bad_level(u, ei, ui)
                    append(
                        BookLevel(
                            ts=msg_ts,
                            recv_ts=recv,
                            symbol=sym,
                            seq=seq,
                            flags=_SNAP | _EOM if ui == last_u else _SNAP,
                            price=price,
                            size=size,
                            side=_L2_SIDE[u.side],
                        )
                    )
                continue
            # The levels of one update usually share one event_time: parse it once.
            prev_et: object = _UNSET
            ts = 0
            for ui, u in enumerate(ups):
                price, size = u.price_level, u.new_quantity
                if not (0.0 < price < _INF and 0.0 <= size < _INF):
                    _bad_level(u, ei, ui)
                et = u.event_time
                if et != prev_et:
                    prev_et = et
                    if et is None:
                        if msg_ts < 0 and any(e.type == "snapshot" for e in events):
                            msg_ts = _parse_envelope(msg_time)  # as if parsed for the snapshot first
                        ts = msg_ts if msg_ts >= 0 else recv
                    else:
                        try:
                            ts = parse_time(et)
                        except ValueError:
                            raise ValueError(
                                f"bad time {et!r} - at `$.events[{ei}].updates[{ui}].event_time`"
                            ) from None
                append(
                    BookLevel(
                        ts=ts,
                        recv_ts=recv,
                        symbol=sym,
                        seq=seq,
                        flags=_EOM if ui == last_u else 0,
                        price=price,
                        size=size,
                        side=_L2_SIDE[u.side],
                    )
                )

    def _trades(self, events: list[_TradesEvent], recv: int, out: list[MarketEvent]) -> None:
        last_e = len(events) - 1
        append = out.append
        syms = self._syms
        for ei, ev in enumerate(events):
            trades = ev.trades
            last_t = len(trades) - 1 if ei == last_e else -2
            for ti, t in enumerate(trades):
                price, size = t.price, t.size
                if not (0.0 < price < _INF and 0.0 < size < _INF):
                    raise ValueError(
                        f"price {price!r} and size {size!r} must be positive numbers - at `$.events[{ei}].trades[{ti}]`"
                    )
                try:
                    ts = parse_time(t.time)
                except ValueError:
                    raise ValueError(f"bad time {t.time!r} - at `$.events[{ei}].trades[{ti}].time`") from None
                tid = t.trade_id
                pid = t.product_id
                append(
                    Trade(
                        ts=ts,
                        recv_ts=recv,
                        symbol=syms.get(pid) or self._sym(pid),
                        seq=_trade_seq(tid),
                        flags=_EOM if ti == last_t else 0,
                        price=price,
                        size=size,
                        side=_AGGRESSOR[t.side],
                    )
                )

    def _ticker(self, events: list[_TickerEvent], msg_ts: int, recv: int, seq: int, out: list[MarketEvent]) -> None:
        last_e = len(events) - 1
        append = out.append
        syms = self._syms
        for ei, ev in enumerate(events):
            tickers = ev.tickers
            last_t = len(tickers) - 1 if ei == last_e else -2
            for ti, t in enumerate(tickers):
                bid, bq, ask, aq = t.best_bid, t.best_bid_quantity, t.best_ask, t.best_ask_quantity
                if bid is None or bq is None or ask is None or aq is None:
                    self.ignored["ticker_incomplete"] = self.ignored.get("ticker_incomplete", 0) + 1
                    continue
                if not (0.0 < bid < _INF and 0.0 < ask < _INF):
                    raise ValueError(
                        f"best bid/ask {bid!r}/{ask!r} must be positive numbers - at `$.events[{ei}].tickers[{ti}]`"
                    )
                if not (0.0 <= bq < _INF and 0.0 <= aq < _INF):
                    raise ValueError(
                        f"best bid/ask sizes {bq!r}/{aq!r} must be non-negative numbers"
                        f" - at `$.events[{ei}].tickers[{ti}]`"
                    )
                pid = t.product_id
                append(
                    Quote(
                        ts=msg_ts,
                        recv_ts=recv,
                        symbol=syms.get(pid) or self._sym(pid),
                        seq=seq,
                        flags=_EOM if ti == last_t else 0,
                        bid=bid,
                        bid_size=bq,
                        ask=ask,
                        ask_size=aq,
                    )
                )

    def _heartbeat(self, events: list[_Heartbeat], recv: int, out: list[MarketEvent]) -> None:
        last = len(events) - 1
        for ei, hb in enumerate(events):
            try:
                ts = parse_time(hb.current_time)
            except ValueError:
                raise ValueError(f"bad time {hb.current_time!r} - at `$.events[{ei}].current_time`") from None
            out.append(
                Status(
                    ts=ts,
                    recv_ts=recv,
                    symbol=ALL_SYMBOLS,
                    text="heartbeat",
                    seq=hb.heartbeat_counter,
                    flags=_EOM if ei == last else 0,
                )
            )


def _parse_envelope(s: str) -> int:
    """:func:`parse_time` of the envelope ``timestamp``, with its JSON path in the error."""
    try:
        return parse_time(s)
    except ValueError:
        raise ValueError(f"bad time {s!r} - at `$.timestamp`") from None


def _bad_level(u: _L2Update, ei: int, ui: int) -> None:
    raise ValueError(
        f"level {u.price_level!r} x {u.new_quantity!r} is not a valid price and size"
        f" - at `$.events[{ei}].updates[{ui}]`"
    )


# -- encoding (tape rows → Coinbase messages) -----------------------------------------------


class _OutUpdate(msgspec.Struct):
    side: str
    event_time: str
    price_level: str
    new_quantity: str


class _OutL2Event(msgspec.Struct):
    type: str
    product_id: str
    updates: list[_OutUpdate]


class _OutTrade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _OutTradesEvent(msgspec.Struct):
    type: str
    trades: list[_OutTrade]


class _OutTicker(msgspec.Struct, omit_defaults=True):
    type: str
    product_id: str
    best_bid: str
    best_bid_quantity: str
    best_ask: str
    best_ask_quantity: str
    price: str | None = None


class _OutTickerEvent(msgspec.Struct):
    type: str
    tickers: list[_OutTicker]


class _OutHeartbeat(msgspec.Struct):
    current_time: str
    heartbeat_counter: int


class _OutEnvelope(msgspec.Struct):
    channel: str
    client_id: str
    timestamp: str
    sequence_num: int
    events: list[Any]


_ENC: Final = msgspec.json.Encoder()


def _num(x: float) -> str:
    """A float as Coinbase writes numbers: a decimal string, never exponent notation."""
    r = repr(x)
    if "e" in r or "E" in r:
        return str(np.format_float_positional(x, unique=True, trim="-"))
    if r.endswith(".0"):
        return r[:-2]
    return r


def _channel(ev: MarketEvent) -> str | None:
    t = type(ev)
    if t is BookLevel or t is BookReset:
        return "l2_data"
    if t is Trade:
        return "market_trades"
    if t is Quote:
        return "ticker"
    if t is Status:
        if ev.text == "heartbeat":
            return "heartbeats"
        if ev.text == "gap":
            return "gap"
    return None


def to_messages(
    events: Iterable[MarketEvent],
    product_map: Mapping[str, str] | None = None,
    sequence_start: int = 0,
) -> list[bytes]:
    """Encode market events as Coinbase Advanced Trade messages (the feed server's output).

    Rows are grouped into messages by END_OF_MESSAGE; a group spanning several channels
    (not produced by the converters) is split into one message per channel run. Each
    message gets the next ``sequence_num``. A ``gap`` status group is not sent: it skips
    one sequence number, so a :class:`Normalizer` reading the output finds the same gap.
    Rows Coinbase has no public message for (``funding``, ``mark``, ``timer``, other
    statuses) are left out.

    Round trip: ``Normalizer.feed(msg, recv_ts=r)`` over the output, with each group's
    ``recv_ts``, returns the input rows when they came from a Normalizer with the same
    sequence numbering (the converter's tapes).

    Args:
        events: rows in tape order.
        product_map: tape symbol → product id (default: the built-in instruments';
            other symbols are sent as their own product id).
        sequence_start: the first message's ``sequence_num``.

    Returns:
        One JSON message per element, ready to send.
    """
    pmap = {sym: pid for pid, sym in product_symbols().items()}
    if product_map:
        pmap.update(product_map)
    out: list[bytes] = []
    seq = sequence_start
    gap_ts: int | None = None
    for ch, msg_ts, payload, has_reset in _message_runs(events, pmap):
        if ch == "gap":
            seq += 1
            gap_ts = msg_ts  # the next message's envelope time: the gap rows' ts
            continue
        # After a gap, the envelope time is the gap rows' ts (a snapshot's or ticker's
        # envelope time is already its rows' ts; other rows carry their own times).
        if gap_ts is not None and ch != "ticker" and msg_ts != gap_ts and not has_reset:
            msg_ts = gap_ts
        gap_ts = None
        env = _OutEnvelope(channel=ch, client_id="", timestamp=format_time(msg_ts), sequence_num=seq, events=payload)
        out.append(_ENC.encode(env))
        seq += 1
    return out


def message_bodies(events: Iterable[MarketEvent], product_map: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """``(channel, JSON of the events array)`` per message that :func:`to_messages` would send.

    For the feed server, which writes the envelope itself (its ``timestamp`` is the send
    time and its ``sequence_num`` the connection's): encoding only the body, once, is most
    of what serving a message costs. ``gap`` groups are left out.

    Args:
        events: rows in tape order.
        product_map: tape symbol → product id, complete (a symbol not in it is sent as
            its own product id; the built-in instruments are not consulted).
    """
    return [(ch, _ENC.encode(payload)) for ch, _, payload, _ in _message_runs(events, product_map) if ch != "gap"]


def _message_runs(events: Iterable[MarketEvent], pmap: Mapping[str, str]) -> Iterator[tuple[str, int, list[Any], bool]]:
    """``(channel, envelope time, events payload, has a snapshot)`` per message, in order.

    A ``gap`` status group yields ``("gap", its time, [], False)``. Runs split on END_OF_MESSAGE
    and on a change of channel.
    """
    run: list[MarketEvent] = []
    run_ch: str | None = None
    last_price: dict[str, float] = {}
    synthetic_tid = 0

    def encode(ch: str | None, run: list[MarketEvent]) -> tuple[str, int, list[Any], bool]:
        nonlocal synthetic_tid
        if ch == "gap":
            return "gap", run[-1].ts, [], False
        has_reset = False
        if ch == "l2_data":
            events_out: list[Any] = []
            msg_ts = run[0].ts
            cur: _OutL2Event | None = None
            for ev in run:
                pid = pmap.get(ev.symbol, ev.symbol)
                if type(ev) is BookReset:
                    cur = _OutL2Event(type="snapshot", product_id=pid, updates=[])
                    events_out.append(cur)
                    msg_ts = ev.ts
                    has_reset = True
                    continue
                assert type(ev) is BookLevel
                etype = "snapshot" if ev.flags & _SNAP else "update"
                if cur is None or cur.product_id != pid or cur.type != etype:
                    cur = _OutL2Event(type=etype, product_id=pid, updates=[])
                    events_out.append(cur)
                if etype == "update":
                    msg_ts = max(msg_ts, ev.ts)
                cur.updates.append(
                    _OutUpdate(
                        side="bid" if ev.side == 1 else "offer",
                        event_time=format_time(ev.ts),
                        price_level=_num(ev.price),
                        new_quantity=_num(ev.size),
                    )
                )
        elif ch == "market_trades":
            trades: list[_OutTrade] = []
            for ev in run:
                assert type(ev) is Trade
                if ev.seq is None:
                    synthetic_tid += 1
                tid = str(ev.seq) if ev.seq is not None else f"perpsim-{synthetic_tid}"
                last_price[ev.symbol] = ev.price
                trades.append(
                    _OutTrade(
                        trade_id=tid,
                        product_id=pmap.get(ev.symbol, ev.symbol),
                        price=_num(ev.price),
                        size=_num(ev.size),
                        side="SELL" if ev.side == 1 else "BUY",  # the maker's side
                        time=format_time(ev.ts),
                    )
                )
            msg_ts = max(ev.ts for ev in run)
            events_out = [_OutTradesEvent(type="update", trades=trades)]
        elif ch == "ticker":
            tickers: list[_OutTicker] = []
            for ev in run:
                assert type(ev) is Quote
                lp = last_price.get(ev.symbol)
                tickers.append(
                    _OutTicker(
                        type="ticker",
                        product_id=pmap.get(ev.symbol, ev.symbol),
                        best_bid=_num(ev.bid),
                        best_bid_quantity=_num(ev.bid_size),
                        best_ask=_num(ev.ask),
                        best_ask_quantity=_num(ev.ask_size),
                        price=None if lp is None else _num(lp),
                    )
                )
            msg_ts = run[-1].ts
            events_out = [_OutTickerEvent(type="update", tickers=tickers)]
        else:  # heartbeats
            events_out = [
                _OutHeartbeat(current_time=format_time(ev.ts, go=True), heartbeat_counter=ev.seq or 0) for ev in run
            ]
            msg_ts = run[-1].ts
        return ch or "", msg_ts, events_out, has_reset

    for ev in events:
        ch = _channel(ev)
        if ch is not None:
            if run and ch != run_ch:
                yield encode(run_ch, run)
                run = []
            run_ch = ch
            run.append(ev)
        if ev.flags & _EOM and run:
            yield encode(run_ch, run)
            run = []
    if run:
        yield encode(run_ch, run)


# -- converter ---------------------------------------------------------------------------------


def convert_coinbase(
    src: str | Path, *, symbol: str | None = None, strict: bool = False
) -> tuple[RowBuffer, ConvertReport]:
    """Convert a capture of Coinbase messages to tape rows (clock ``recv_ts``).

    The capture is text (optionally gzip) with one message per line, either the bare JSON
    or ``<recv_ns> <json>`` as the live recorder writes it. Without a receive stamp, a
    message's rows get its envelope ``timestamp`` as ``recv_ts``.

    Args:
        src: the capture.
        symbol: the tape symbol for every product (a single-product capture); None maps
            product ids through the instrument table.
        strict: raise at the first malformed line instead of skipping it.

    Returns:
        The rows (sorted by :meth:`RowBuffer.table`) and the report.

    Raises:
        TapeError: the file cannot be read, or (``strict``) a line is malformed; the
            message names the file and line and the JSON path.
    """
    path = Path(src)
    rep = ConvertReport(kind="coinbase", source=str(path), clock="recv_ts")
    rows = RowBuffer()
    norm = Normalizer()
    last_recv: int | None = None
    backwards = 0
    lineno = 0

    def bad(n: int, reason: str) -> None:
        if strict:
            raise TapeError(f"{path} line {n}: {reason}")
        rep.skip(n, reason)

    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            for lineno, raw_line in enumerate(f, 1):
                line = raw_line.strip()
                if not line:
                    continue
                rep.lines_read += 1
                recv: int | None = None
                if line[:1] != b"{":
                    stamp, sep, line = line.partition(b" ")
                    try:
                        recv = int(stamp)
                    except ValueError:
                        bad(lineno, f"receive stamp {stamp[:40]!r} is not an integer")
                        continue
                    if not sep:
                        bad(lineno, "expected '<recv_ns> <json>', found no JSON")
                        continue
                gaps_before = norm.gaps
                try:
                    evs = norm.feed(line, recv)
                    why = "does not follow the previous"
                except InputError as exc:  # MalformedMessage, VenueError
                    bad(lineno, str(exc))
                    evs = exc.rows if isinstance(exc, MalformedMessage) else []
                    why = "is a gap: the message is dropped, or does not follow the previous"
                if norm.gaps != gaps_before:
                    rep.gap(lineno, f"sequence_num {norm.last_seq} {why}")
                if evs:
                    r = evs[-1].recv_ts
                    if last_recv is not None and r < last_recv:
                        backwards += 1
                    last_recv = r
                for ev in evs:
                    if symbol is not None and ev.symbol != ALL_SYMBOLS:
                        ev = msgspec.structs.replace(ev, symbol=symbol)
                    rows.add_event(ev)
    except EOFError:
        bad(lineno + 1, "gzip stream ends early (truncated file)")
    except zlib.error as exc:  # damaged mid-stream: nothing after it decodes, so say so
        raise TapeError(f"{path} line {lineno + 1}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise TapeError(f"{path}: cannot read Coinbase capture: {exc}") from exc
    for ch, n in norm.ignored.items():
        rep.ignored[ch] = rep.ignored.get(ch, 0) + n
    rep.counters["messages"] = norm.messages
    rep.counters["recv_ts_backwards"] = backwards
    rep.rows = rows.counts()
    return rows, rep
