"""The live session's writer threads: one each, below the event loop's priority.

The recorder's writer spends 5-19 ms on each flush (once a second: joining, checking
and Parquet-encoding the rows), and the latency tail came in clusters of 2-9 ms stalls
while it did. At the event loop's own priority the kernel lets the two share a core in
whole time slices; at ``nice +10`` the writer gives way when the loop wakes. Latency
benchmark, eight alternating pairs of 12 s runs: p99 0.67-0.88 ms with it, 0.60-1.19
ms without (three over 1 ms), and 17-67 tickers over 2 ms per run against 28-299.
By the kernel's weights a thread at +10 still gets about a tenth of a contended core,
and a flush has a second before the next.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final

__all__ = ["WRITER_NICE", "writer_pool"]

WRITER_NICE: Final = 10


def writer_pool(name: str) -> ThreadPoolExecutor:
    """A one-thread pool whose thread runs ``WRITER_NICE`` below the caller (Linux only:
    elsewhere a priority applies to the whole process, and the pool keeps the caller's)."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=_lower_priority)


def _lower_priority() -> None:
    if sys.platform == "linux":  # a thread id is a process id to setpriority there
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):  # refused (a sandbox): the caller's priority, then
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))
