"""glibc malloc settings for streaming a tape.

A replay allocates and frees the same few megabytes per row group (Arrow's decoded
columns, the numpy conversions and checks). With glibc's defaults, once a freed
512 KB column has raised the mmap threshold to its size, the trim threshold follows at
twice that, so about 1 MB free at the top of a heap goes back to the kernel and the
next row group faults it in again. Measured in a fast replay of 10M rows on this
project's benchmark machine, six alternating pairs of runs: 40,000-70,000 minor faults
and 0.13-0.33 s of system time with the defaults; 2,700-8,900 faults and 0.06-0.11 s
with the thresholds fixed (mmap above 1 MB, trim above 16 MB), and 0.769 s against
0.860 s of wall time (means).

The setting is process-wide and permanent: it is applied once, on the first tape
read, and only where the C library is glibc. ``PERPSIM_MALLOC=default`` leaves
glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 16 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@cache
def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); once per process.

    Returns:
        True if glibc took both settings; False elsewhere (another OS or C library) or
        when ``PERPSIM_MALLOC=default``.
    """
    if os.environ.get("PERPSIM_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has a mallopt that ignores these
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
