"""Seeded benchmark tapes, made once per session under the pytest cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsim.tapes.synth import synth

# rows per symbol-hour at 30 trades + 60 quotes per minute: 5,400
_SPECS = {
    "tq_1m": dict(hours=93, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60),
    "tq_10m": dict(hours=926, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60),
    "l2_1m": dict(hours=40, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60, l2=True),
}


@pytest.fixture(scope="session")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-tapes")


@pytest.fixture(scope="session")
def bench_tape(tape_dir: Path):
    def make(name: str) -> Path:
        out = tape_dir / f"{name}.parquet"
        if not out.exists():
            synth(seed=1, out=out, **_SPECS[name])
        return out

    return make
