"""The live writer threads run below the event loop's priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from perpsim.live.threads import WRITER_NICE, writer_pool


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
def test_a_writer_thread_runs_niced_and_its_caller_keeps_its_priority() -> None:
    before = _nice()
    pool = writer_pool("perpsim-test-writer")
    try:
        name, nice = pool.submit(lambda: (threading.current_thread().name, _nice())).result(timeout=10)
    finally:
        pool.shutdown()
    assert name.startswith("perpsim-test-writer")
    assert nice == min(19, before + WRITER_NICE)
    assert _nice() == before
