"""Golden replays of the bundled tapes: a changed digest fails with the first differing event.

Re-record on purpose with ``pytest tests/characterization/test_golden.py --golden-update``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

SAMPLES = Path(str(resources.files("perpsim.tapes") / "samples"))


@pytest.mark.parametrize("profile", ["backtest", "prod"])
def test_golden_sample(golden, profile: str) -> None:
    golden.check(SAMPLES / "sample.parquet", profile=profile)


def test_golden_real_btcusdt(golden) -> None:
    golden.check(SAMPLES / "btcusdt_20240808.parquet", interval_s=5.0, params={"short": 3, "long": 8})


def test_golden_quoter_on_real_l2(golden) -> None:
    golden.check(
        SAMPLES / "btcusdt_20240808.parquet",
        strategy="perpsim.core.examples.quoter:Quoter",
        overrides={"venue": {"queue": "risk_averse"}},
    )
