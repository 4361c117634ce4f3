"""Characterization (golden) tests: pin a replay's behaviour, event by event.

The origin guarded the PerpsBot with a 59-test characterization suite. Here one
golden file pins everything a replay does: its digest, its counts per event kind,
its key figures, and the event stream itself (msgpack, zlib, base64, inside the
JSON), so a mismatch prints the **first differing event** on both sides instead
of "digest differs". Because replay is deterministic, a golden file only changes
when behaviour changes; update it on purpose with ``--update``.

The pytest plugin in :mod:`perpsim.sim.testing` wraps :func:`check_golden` so a
user's own strategy gets a golden test in three lines.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import zlib
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from perpsim.core.errors import CheckFailed, InputError
from perpsim.core.events import RunEvent
from perpsim.core.timefmt import fmt_ns
from perpsim.sim.drift import config_diff, flatten
from perpsim.sim.runs import RunResult, check_out_file, file_sha256

__all__ = [
    "FORMAT",
    "GoldenResult",
    "characterize",
    "check_golden",
    "compare_golden",
    "decode_events",
    "encode_events",
    "golden_record",
    "mismatch_line",
    "read_golden",
    "write_golden",
]

FORMAT: Final = "perpsim.golden/1"
_FIGURES: Final = (
    "rows",
    "cycles",
    "decisions",
    "orders",
    "fills",
    "rejects",
    "funding_payments",
    "errors",
    "reconciles",
)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[RunEvent])


def encode_events(events: list[RunEvent]) -> str:
    """Events as base64 of zlib-compressed msgpack (the digest's own encoding, DESIGN.md §6)."""
    return base64.b64encode(zlib.compress(_encoder.encode(events), 9)).decode("ascii")


def decode_events(data: str) -> list[RunEvent]:
    """The inverse of :func:`encode_events`."""
    return _decoder.decode(zlib.decompress(base64.b64decode(data, validate=True)))


def golden_record(result: RunResult, *, tape: str | Path | None = None) -> dict[str, Any]:
    """The golden JSON of a replay: identity, digest, counts, figures and the events."""
    if result.run_events is None:
        raise InputError("characterize: the replay did not keep its events; replay with keep_events=True")
    counts: dict[str, int] = {}
    for ev in result.run_events:
        counts[ev.kind] = counts.get(ev.kind, 0) + 1
    s = result.summary
    figures: dict[str, Any] = {k: s.get(k) for k in _FIGURES}
    figures.update({f"{k}_units": v for k, v in (s.get("units") or {}).items()})
    figures["positions"] = s.get("positions", {})
    from perpsim import __version__

    tape_info: dict[str, Any] | None = None
    if tape is not None and Path(tape).is_file():
        tape_info = {"name": Path(tape).name, "sha256": file_sha256(Path(tape))}
    record = {
        "format": FORMAT,
        "perpsim_version": __version__,
        "tape": tape_info,
        "config": result.config,
        "digest": result.digest,
        "event_count": len(result.run_events),
        "counts": dict(sorted(counts.items())),
        "figures": figures,
        "events": {"encoding": "msgpack+zlib+base64", "data": encode_events(result.run_events)},
    }
    # A JSON round trip, so a fresh record compares equal to one read back (tuples become lists).
    out: dict[str, Any] = json.loads(json.dumps(record))
    return out


def write_golden(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a golden file (creating its folder); keys are stable so diffs stay small.

    Atomic (a temporary file in the same folder, then a rename), so a failed write
    never leaves a half-written golden file that later reads as corrupt.

    Raises:
        InputError: the file cannot be written (a folder, under a file, no permission).
    """
    p = check_out_file(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{p}: cannot write ({exc.strerror or exc})") from exc
    return p


class _Tape(msgspec.Struct):
    name: str
    sha256: str


class _Events(msgspec.Struct):
    encoding: Literal["msgpack+zlib+base64"]
    data: str


class _GoldenFile(msgspec.Struct):
    """The shape :func:`golden_record` writes; a file that does not fit is refused, not half-compared."""

    format: str
    perpsim_version: str
    tape: _Tape | None
    config: dict[str, Any]
    digest: str
    event_count: Annotated[int, msgspec.Meta(ge=0)]
    counts: dict[str, Annotated[int, msgspec.Meta(ge=0)]]
    figures: dict[str, Any]
    events: _Events


def read_golden(path: str | Path) -> dict[str, Any]:
    """Read and validate a golden file, events included, so a comparison never trips on it.

    Raises:
        InputError: missing (with the hint to create it), unreadable, or not a golden file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: golden file not found; run with --update to create it")

    def bad(why: str) -> InputError:
        return InputError(f"{p}: not a golden file ({why})")

    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 text: {exc.reason}") from exc
    if not text.strip():
        raise bad("empty")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise bad(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad(f"JSON {type(data).__name__}, expected an object")
    if data.get("format") != FORMAT:
        raise bad(f"format {data.get('format')!r}, expected {FORMAT!r}")
    try:
        shape = msgspec.convert(data, _GoldenFile)
    except msgspec.ValidationError as exc:
        raise bad(str(exc)) from exc
    try:
        n = len(decode_events(shape.events.data))
    except (binascii.Error, zlib.error, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
        raise bad(f"events.data: {exc}") from exc
    if n != shape.event_count:
        raise bad(f"events.data holds {n} events, event_count says {shape.event_count}")
    return data


class GoldenResult(msgspec.Struct, kw_only=True):
    """The outcome of a comparison; ``lines`` explain a mismatch for people."""

    path: str
    ok: bool
    updated: bool
    digest: str
    golden_digest: str | None
    event_count: int
    first_difference: dict[str, Any] | None
    counts: dict[str, dict[str, int]]
    figures: dict[str, dict[str, Any]]
    config: list[dict[str, Any]]
    notes: list[str]
    lines: list[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def _ev_dict(ev: RunEvent | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {k: v for k, v in msgspec.structs.asdict(ev).items() if v is not None}


def _ev_line(ev: RunEvent | None) -> str:
    if ev is None:
        return "(no event: the stream ended)"
    fields = " ".join(f"{k}={v}" for k, v in (_ev_dict(ev) or {}).items() if k not in ("ts", "recv_ts", "kind"))
    return f"{fmt_ns(ev.ts)} {ev.kind} {fields}"


def compare_golden(golden: dict[str, Any], now: dict[str, Any], path: str = "<golden>") -> GoldenResult:
    """Compare a stored golden record with a fresh one; the first differing event wins.

    Only fields that should be equal are compared: everything, since replay is
    deterministic. Timing of the replay itself (wall time) is not in the record.
    """
    notes: list[str] = []
    old_events = decode_events(golden["events"]["data"]) if golden.get("events") else []
    new_events = decode_events(now["events"]["data"])
    first: dict[str, Any] | None = None
    n = min(len(old_events), len(new_events))
    idx = next((i for i in range(n) if old_events[i] != new_events[i]), None)
    if idx is None and len(old_events) != len(new_events):
        idx = n
    if idx is not None:
        a = old_events[idx] if idx < len(old_events) else None
        b = new_events[idx] if idx < len(new_events) else None
        fields = (
            [f for f in RunEvent.__struct_fields__ if getattr(a, f) != getattr(b, f)]
            if a is not None and b is not None
            else ["(event missing)"]
        )
        first = {
            "index": idx,
            "time": fmt_ns((a or b).ts) if (a or b) is not None else None,  # type: ignore[union-attr]
            "kind_golden": None if a is None else a.kind,
            "kind_now": None if b is None else b.kind,
            "fields": fields,
            "golden": _ev_dict(a),
            "now": _ev_dict(b),
        }
    kinds = sorted(set(golden.get("counts", {})) | set(now["counts"]))
    counts = {
        k: {"golden": int(golden.get("counts", {}).get(k, 0)), "now": int(now["counts"].get(k, 0))}
        for k in kinds
        if golden.get("counts", {}).get(k, 0) != now["counts"].get(k, 0)
    }
    fg, fn = flatten(golden.get("figures", {})), flatten(now["figures"])
    figures = {k: {"golden": fg.get(k), "now": fn.get(k)} for k in sorted(set(fg) | set(fn)) if fg.get(k) != fn.get(k)}
    # A parameter one side left to its strategy shows the default it used, not None.
    config = [{"key": k, "golden": g, "now": n} for k, g, n in config_diff(golden.get("config", {}), now["config"])]
    if golden.get("tape") and now.get("tape") and golden["tape"].get("sha256") != now["tape"].get("sha256"):
        notes.append(
            f"the tape differs from the one the golden file was recorded on ({golden['tape'].get('name')} "
            f"sha256 {str(golden['tape'].get('sha256'))[:12]} vs {str(now['tape'].get('sha256'))[:12]})"
        )
    if golden.get("perpsim_version") != now.get("perpsim_version"):
        notes.append(f"recorded with perpsim {golden.get('perpsim_version')}, now {now.get('perpsim_version')}")
    ok = golden.get("digest") == now["digest"] and first is None and not counts and not figures
    lines: list[str] = []
    if ok:
        lines.append(f"golden match: {now['event_count']} events, digest {now['digest'][:16]}")
    else:
        lines.append(
            f"golden mismatch: digest {str(golden.get('digest'))[:16]} (golden) vs {now['digest'][:16]} (now), "
            f"{golden.get('event_count')} vs {now['event_count']} events"
        )
        if first is not None:
            lines.append(f"first differing event #{first['index']} ({', '.join(first['fields'])}):")
            lines.append(
                f"  golden: {_ev_line(old_events[idx] if idx is not None and idx < len(old_events) else None)}"
            )
            lines.append(
                f"  now:    {_ev_line(new_events[idx] if idx is not None and idx < len(new_events) else None)}"
            )
        for k, c in counts.items():
            lines.append(f"count {k}: {c['golden']} (golden) vs {c['now']} (now)")
        for k, f in list(figures.items())[:12]:
            lines.append(f"figure {k}: {f['golden']} (golden) vs {f['now']} (now)")
        for cf in config:
            lines.append(f"config {cf['key']}: {cf['golden']} (golden) vs {cf['now']} (now)")
    lines += [f"note: {x}" for x in notes]
    return GoldenResult(
        path=path,
        ok=ok,
        updated=False,
        digest=now["digest"],
        golden_digest=golden.get("digest"),
        event_count=now["event_count"],
        first_difference=first,
        counts=counts,
        figures=figures,
        config=config,
        notes=notes,
        lines=lines,
    )


def check_golden(
    result: RunResult, golden: str | Path, *, update: bool = False, tape: str | Path | None = None
) -> GoldenResult:
    """Compare a replay result with a golden file, or (``update``) write it.

    Raises:
        InputError: the golden path cannot be a file; or (without ``update``) the
            golden file is missing or unreadable. With ``update`` an unreadable old
            file is replaced.
    """
    now = golden_record(result, tape=tape)
    p = check_out_file(golden)
    if update:
        # The old file only matters for the report: one that does not read is replaced, not compared.
        res: GoldenResult | None = None
        notes: list[str] = []
        verb = "created"
        if p.is_file():
            try:
                res = compare_golden(read_golden(p), now, str(p))
                verb = "unchanged" if res.ok else "updated"
            except InputError as exc:
                verb = "replaced"
                notes.append(f"the old golden file was unreadable: {exc}")
        write_golden(p, now)
        lines = [f"golden {verb}: {p} ({now['event_count']} events, digest {now['digest'][:16]})"]
        lines += [f"note: {x}" for x in notes]
        if res is not None and not res.ok:
            lines += ["was:", *[f"  {x}" for x in res.lines]]
        return GoldenResult(
            path=str(p),
            ok=True,
            updated=True,
            digest=now["digest"],
            golden_digest=now["digest"],
            event_count=now["event_count"],
            first_difference=None if res is None else res.first_difference,
            counts={} if res is None else res.counts,
            figures={} if res is None else res.figures,
            config=[] if res is None else res.config,
            notes=notes,
            lines=lines,
        )
    return compare_golden(read_golden(p), now, str(p))


def characterize(
    tape: str | Path | Any,
    golden: str | Path,
    *,
    update: bool = False,
    raise_on_mismatch: bool = True,
    **replay_kwargs: Any,
) -> GoldenResult:
    """Replay ``tape`` and compare with (or, with ``update``, write) the golden file.

    ``replay_kwargs`` go to :func:`perpsim.replay` (``strategy``, ``params``,
    ``profile``, ``seed``, ``symbols``, ``interval_s``, ``config``, ...).

    Raises:
        InputError: a bad tape, config or golden file.
        CheckFailed: the replay differs from the golden file (when
            ``raise_on_mismatch``); the message names the first differing event.
    """
    from perpsim.sim.replay import replay

    check_out_file(golden)  # a folder or a path under a file fails now, not after the replay
    replay_kwargs.setdefault("keep_events", True)
    result = replay(tape, **replay_kwargs)
    res = check_golden(result, golden, update=update, tape=tape if isinstance(tape, (str, Path)) else None)
    if not res.ok and raise_on_mismatch:
        raise CheckFailed(f"characterize: {mismatch_line(res)}")
    return res


def mismatch_line(res: GoldenResult) -> str:
    """One line for a mismatch: the file, and the first differing event if there is one."""
    fd = res.first_difference
    if fd is None:
        return f"{res.path}: {res.lines[0]}"
    kind = fd["kind_golden"] or fd["kind_now"]
    return (
        f"{res.path}: replay differs from the golden file at event #{fd['index']} "
        f"({kind} at {fd['time']}; {', '.join(fd['fields'])})"
    )
