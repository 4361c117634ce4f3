"""Tapes (DESIGN.md §4): the schema, reader, writer, validation and synthetic generator.

Write a tape with :func:`write` (a DataFrame) or :class:`TapeWriter` (streaming),
replay one with :func:`open_tape` and :meth:`Tape.batches`, check one with
:func:`validate_tape`, and make one with :func:`synth`.
"""

from __future__ import annotations

from perpsim.tapes.reader import Tape, open_tape
from perpsim.tapes.schema import SCHEMA, TapeMeta
from perpsim.tapes.synth import Shock, synth
from perpsim.tapes.validate import validate_tape
from perpsim.tapes.writer import TapeWriter, write, write_table

__all__ = [
    "SCHEMA",
    "Shock",
    "Tape",
    "TapeMeta",
    "TapeWriter",
    "open_tape",
    "synth",
    "validate_tape",
    "write",
    "write_table",
]
