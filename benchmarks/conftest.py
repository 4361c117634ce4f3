"""Seeded benchmark tapes, made once per session under the pytest cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsim.tapes.synth import synth

# The trades-and-quotes tapes run at the rates of the bundled real recording
# (tapes/samples/btcusdt_20240808.parquet: 21,313 trades and 66,089 quotes in 345 s,
# about 3,700 trades and 11,500 quotes a minute) for each of two symbols: 30,000 rows a
# minute, so a 60 s cycle comes every ~30,000 rows, as it would on the real market.
# ``tq_sparse_1m`` keeps the old 90 rows per symbol-minute (a cycle every 180 rows),
# where the per-cycle work, not the rows, sets the rate. ``tq_10m_zstd`` is ``tq_10m``
# written with ``codec="zstd"``: the same rows, 2% smaller, slower to decode.
_DENSE = dict(symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=3600, quotes_per_min=11400)
_SPECS = {
    "tq_1m": dict(hours=0.5556, **_DENSE),
    "tq_10m": dict(hours=5.556, **_DENSE),
    "tq_10m_zstd": dict(hours=5.556, codec="zstd", **_DENSE),
    "tq_sparse_1m": dict(hours=93, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60),
    "l2_1m": dict(hours=40, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60, l2=True),
    "l2_10m": dict(hours=216, symbols=["BTC-PERP", "ETH-PERP"], trades_per_min=30, quotes_per_min=60, l2=True),
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
