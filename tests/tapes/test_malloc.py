"""Reading a tape keeps freed memory instead of faulting it back in per row group (tapes/malloc.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Read the bundled sample tape, then free and reallocate 4 MB of columns 50 times, as a
# replay does per row group; print the minor page faults those cycles cost.
_SCRIPT = """
import resource, numpy as np
from importlib import resources
from perpsim.tapes import open_tape
from perpsim.tapes.malloc import tune_malloc

sum(len(b) for b in open_tape(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet")).batches())

def cycle():
    cols = [np.ones(65536) for _ in range(8)]
    del cols

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    cycle()
print(tune_malloc(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(malloc: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "PERPSIM_MALLOC"}
    if malloc is not None:
        env["PERPSIM_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


def test_a_tape_read_stops_glibc_returning_freed_columns_to_the_kernel() -> None:
    tuned, faults = _faults(None)
    if not tuned:
        pytest.skip("not glibc: the settings do not apply")
    untuned, default_faults = _faults("default")
    assert not untuned
    # 50 cycles of 1,024 pages each: with glibc's defaults 24,000 or 49,600 faults here
    # (how much of each cycle goes back to the kernel depends on the allocations before;
    # the same code gave either), tuned 0
    assert default_faults > 50 * 1024 // 4
    assert faults < default_faults // 20
