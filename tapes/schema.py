"""Tape schema v1 (DESIGN.md §4): the Arrow schema and the ``perpsim.tape`` metadata."""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
import pyarrow as pa

from perpsim.core.events import KIND_NAMES
from perpsim.core.instruments import Instrument

__all__ = [
    "CODECS",
    "COLUMNS",
    "DEFAULT_CODEC",
    "KIND_NAMES",
    "META_KEY",
    "ROW_GROUP_ROWS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "WRITE_OPTIONS",
    "TapeMeta",
    "TimerSpec",
    "WarmStart",
    "decode_meta",
    "encode_meta",
    "write_options",
]

SCHEMA_VERSION: Final = 1
META_KEY: Final = b"perpsim.tape"

SCHEMA: Final = pa.schema(
    [
        ("ts", pa.int64()),
        ("recv_ts", pa.int64()),
        ("kind", pa.dictionary(pa.int8(), pa.string())),
        ("symbol", pa.dictionary(pa.int32(), pa.string())),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("side", pa.int8()),
        ("bid", pa.float64()),
        ("bid_size", pa.float64()),
        ("ask", pa.float64()),
        ("ask_size", pa.float64()),
        ("rate", pa.float64()),
        ("next_ts", pa.int64()),
        ("text", pa.string()),
        ("seq", pa.int64()),
        ("flags", pa.uint8()),
    ]
)
COLUMNS: Final[tuple[str, ...]] = tuple(SCHEMA.names)

# The codecs a tape may be written with: lz4, the default, decodes fastest; zstd makes
# files 2-15% smaller (below), for archives read rarely.
CODECS: Final[tuple[str, ...]] = ("lz4", "zstd")
DEFAULT_CODEC: Final = CODECS[0]

# How tapes are written (pyarrow.parquet.ParquetWriter keywords). lz4 (Parquet's
# LZ4_RAW) by default, not zstd as DESIGN.md §4 has it: a replay is bound by decoding,
# and zstd's decompression was a third of it. Clock and sequence columns are
# delta-encoded (they rise by small steps); dictionary pages hold the low-cardinality
# columns: kind, symbol, text, side, flags, and prices and sizes, which take few
# distinct values (ticks, lots) per row group. Decoding a 10M-row trades-and-quotes
# tape on one thread, and its size: zstd with dictionaries for strings and prices only
# (the old default) 0.68-0.78 s, 189.5 MB; these lz4 options 0.51-0.58 s, 186.1 MB;
# with zstd 0.66-0.79 s, 182.1 MB. The real BTCUSDT tape: 3.42 MB, 3.46 MB and 2.99 MB
# (benchmarks/README.md).
WRITE_OPTIONS: Final[dict[str, Any]] = {
    "compression": DEFAULT_CODEC,
    "use_dictionary": [
        "kind",
        "symbol",
        "text",
        "side",
        "flags",
        "price",
        "size",
        "bid",
        "bid_size",
        "ask",
        "ask_size",
    ],
    "column_encoding": {name: "DELTA_BINARY_PACKED" for name in ("ts", "recv_ts", "next_ts", "seq")},
}

# Rows per row group, the reader's unit of decoding and read-ahead. Reading a row group
# has a cost of its own: a fast replay of a 10M-row trades-and-quotes tape took
# 0.646-0.691 s with 131,072-row groups against 0.695-0.791 s with 65,536, for a peak
# RSS of 255-285 MB against 227-251 MB; 262,144 rows, 0.640-0.678 s for 320-348 MB
# (benchmarks/README.md).
ROW_GROUP_ROWS: Final = 131072


def write_options(codec: str = DEFAULT_CODEC) -> dict[str, Any]:
    """:data:`WRITE_OPTIONS` with ``codec`` (one of :data:`CODECS`).

    Raises:
        ValueError: an unknown codec.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
    return {**WRITE_OPTIONS, "compression": codec}


class TimerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded timer: its name and period (0 for a one-shot)."""

    name: str
    interval_ns: int


class WarmStart(msgspec.Struct, frozen=True, kw_only=True):
    """How a warm live session went live, so its replay can redo the transition exactly.

    The recording's first ``rows`` rows are the warm-up (the earlier recording's tail,
    replayed with the engine's own timers, outputs discarded); then ``snapshot`` (the
    bytes of :func:`perpsim.core.snapshot.encode`, None when none was found) was
    restored and the periodic timers realigned to ``realign_ns``.
    """

    rows: int
    realign_ns: int
    snapshot: bytes | None = None


class TapeMeta(msgspec.Struct, kw_only=True):
    """File metadata under the ``perpsim.tape`` key; every field is optional on read."""

    schema_version: int = SCHEMA_VERSION
    clock: Literal["ts", "recv_ts"] = "ts"
    source: str = "unknown"
    instruments: dict[str, Instrument] = {}
    timers: list[TimerSpec] | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    rows: int | None = None
    warm: WarmStart | None = None  # a warm live session's recording (sim/warm.py)


def encode_meta(meta: TapeMeta) -> bytes:
    """The metadata as JSON; without a warm start the ``warm`` key is left out, so every
    other tape's metadata (and file hash) stays byte-identical to before the field existed."""
    if meta.warm is None:
        doc = msgspec.to_builtins(meta)
        del doc["warm"]
        return msgspec.json.encode(doc)
    return msgspec.json.encode(meta)


def decode_meta(raw: bytes | None) -> TapeMeta:
    """Decode metadata; a file without it gets the defaults (clock ``ts``)."""
    if not raw:
        return TapeMeta()
    return msgspec.json.decode(raw, type=TapeMeta)
