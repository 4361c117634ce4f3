"""Fixtures for the live tests: a small seeded tape with a level-2 book, and a fast bot config.

Everything runs on loopback against ``perpsim serve`` (in process or as a subprocess):
no test reaches the internet, and every session is bounded in time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perpsim.tapes.synth import synth

PY = [sys.executable, "-m", "perpsim"]


@pytest.fixture(scope="session")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 minutes of BTC-PERP with trades, quotes and an L2 book (about 20 messages per tape second)."""
    out = tmp_path_factory.mktemp("tape") / "btc.parquet"
    return synth(hours=1 / 3, symbols=["BTC-PERP"], seed=5, out=out, l2=True, trades_per_min=120, quotes_per_min=240)


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MA 2/4: the baseline trades after five cycles, so a few seconds of feed exercise orders and fills."""
    p = tmp_path_factory.mktemp("cfg") / "fast.toml"
    p.write_text("[params]\nshort = 2\nlong = 4\n")
    return p


@pytest.fixture
def server(tape: Path, tmp_path: Path) -> Iterator[str]:
    """``perpsim serve`` at 20x on an ephemeral port (the 20-minute tape lasts a minute); yields its URL."""
    proc = subprocess.Popen(
        [*PY, "serve", str(tape), "--port", "0", "--speed", "20x", "--seed", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
