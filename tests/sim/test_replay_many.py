"""One decode of a tape feeding several runs (sim/replay.py's replay_many, used by sweeps)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from perpsim.core.errors import ConfigError, InputError, TapeError
from perpsim.core.strategy import Context, Strategy
from perpsim.sim.replay import ReplayDriver, RunSpec, build_config, replay, replay_many
from perpsim.tapes.reader import open_tape

SAMPLES = Path(str(resources.files("perpsim.tapes") / "samples"))
REAL = SAMPLES / "btcusdt_20240808.parquet"


def specs(interval_s: float, symbol: str | None = None) -> list[RunSpec]:
    """Four runs, and with ``symbol`` two more that see only its rows: each of those gets
    its own selected copy of every batch (a batch index shared by mistake would show)."""
    runs = [
        RunSpec(params={"short": 3, "long": 8}, interval_s=interval_s),
        RunSpec(params={"short": 5, "long": 20}, seed=7, interval_s=interval_s),
        RunSpec(profile="prod", params={"short": 3, "long": 8}, interval_s=interval_s),
        RunSpec(params={"short": 2, "long": 5}, interval_s=interval_s / 2),
    ]
    if symbol is not None:
        runs += [
            RunSpec(params={"short": 3, "long": 8}, interval_s=interval_s, symbols=[symbol]),
            RunSpec(params={"short": 2, "long": 5}, interval_s=interval_s, symbols=[symbol]),
        ]
    return runs


def alone(tape: Path, spec: RunSpec, engine: str) -> ReplayDriver:
    """The run on its own, through ReplayDriver.run: its own decode, its own loop."""
    cfg = build_config(
        spec.profile, params=spec.params, seed=spec.seed, interval_s=spec.interval_s, symbols=spec.symbols
    )
    driver = ReplayDriver(open_tape(tape), cfg, engine=engine)
    driver.run()
    return driver


@pytest.mark.parametrize(
    ("tape", "interval_s", "symbol", "engine"),
    [
        (SAMPLES / "sample.parquet", 60.0, "BTC-PERP", "fast"),
        (REAL, 5.0, None, "fast"),
        (REAL, 5.0, None, "reference"),
    ],
    ids=["sample-fast", "real-fast", "real-reference"],
)
def test_each_run_of_a_shared_decode_has_the_digest_it_has_alone(
    tape: Path, interval_s: float, symbol: str | None, engine: str
) -> None:
    runs = specs(interval_s, symbol)
    results = replay_many(tape, runs, engine=engine)
    digests = []
    for spec, got in zip(runs, results, strict=True):
        assert not isinstance(got, Exception)
        ref = alone(tape, spec, engine)
        assert got.digest == ref.digest.hexdigest()
        assert got.summary["rows"] == ref.engine.rows
        assert got.summary["cycles"] == ref.engine.cycles
        digests.append(got.digest)
    assert len(set(digests)) == len(runs)  # different runs, not one run many times


def test_a_run_that_fails_stops_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = ReplayDriver.feed
    fed: dict[int, int] = {}

    def failing_feed(self: ReplayDriver, batch: Any) -> None:
        fed[id(self)] = fed.get(id(self), 0) + 1
        if self.config.seed == 13 and fed[id(self)] == 2:
            raise RuntimeError("boom")
        feed(self, batch)

    monkeypatch.setattr(ReplayDriver, "feed", failing_feed)
    tape = SAMPLES / "sample.parquet"  # 143,338 rows: three batches, so "b" fails part-way
    runs = [
        RunSpec(params={"short": 3, "long": 8}, out=tmp_path / "a"),
        RunSpec(params={"short": 3, "long": 8}, seed=13, out=tmp_path / "b"),
        RunSpec(params={"short": 0, "long": 8}, out=tmp_path / "c"),
        RunSpec(params={"short": 5, "long": 20}),
    ]
    a, b, c, d = replay_many(tape, runs)
    assert isinstance(b, RuntimeError) and str(b) == "boom"
    assert isinstance(c, ConfigError) and "short must be a positive integer" in str(c)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    monkeypatch.setattr(ReplayDriver, "feed", feed)
    for got, spec in ((a, runs[0]), (d, runs[3])):
        assert not isinstance(got, Exception)
        assert got.digest == alone(tape, spec, "fast").digest.hexdigest()
    assert not isinstance(a, Exception) and a.run_dir == tmp_path / "a"
    assert (tmp_path / "a" / "summary.json").exists()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["tapes"] == [{"path": str(tape), "sha256": hashlib.sha256(tape.read_bytes()).hexdigest()}]


def test_a_tape_that_cannot_be_read_fails_every_run(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLES / "sample.parquet")
    bad = tmp_path / "unsorted.parquet"
    pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), bad)
    runs = [RunSpec(out=tmp_path / "a"), RunSpec(params={"short": 0, "long": 8}), RunSpec(seed=3)]
    a, b, c = replay_many(bad, runs)
    assert isinstance(b, ConfigError)  # its own error came first
    assert isinstance(a, TapeError) and a is c
    assert "unsorted.parquet row 2 column ts" in str(a) and str(a).endswith("(not sorted)")
    assert not (tmp_path / "a").exists()
    missing = replay_many(tmp_path / "nope.parquet", runs[:1])
    assert len(missing) == 1 and isinstance(missing[0], Exception) and "nope.parquet" in str(missing[0])


def test_a_run_refuses_a_folder_that_holds_files_and_a_failed_run_removes_its_own(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLES / "sample.parquet")
    bad = tmp_path / "bad.parquet"  # sorted for its first 100,000 rows: the run has started writing
    pq.write_table(table.take([*range(100_000), *range(table.num_rows - 1, 99_999, -1)]), bad)
    keep = tmp_path / "work" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    (a,) = replay_many(SAMPLES / "sample.parquet", [RunSpec(out=tmp_path / "work")])
    assert isinstance(a, InputError) and "already exists" in str(a)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["notes.txt"] and keep.read_text() == "mine"
    with pytest.raises(InputError, match="already exists"):
        replay(SAMPLES / "sample.parquet", out=tmp_path / "work")
    (tmp_path / "empty").mkdir()
    (a,) = replay_many(bad, [RunSpec(out=tmp_path / "empty")])
    assert isinstance(a, TapeError) and "not sorted" in str(a)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # its folder, not the run's
    (a,) = replay_many(bad, [RunSpec(out=tmp_path / "fresh")])
    assert isinstance(a, TapeError) and not (tmp_path / "fresh").exists()


def test_progress_counts_the_tapes_rows_once() -> None:
    seen: list[int] = []
    replay_many(SAMPLES / "sample.parquet", specs(60.0)[:3], progress=seen.append)
    assert sum(seen) == open_tape(SAMPLES / "sample.parquet").num_rows


def test_a_run_result_prints_as_one_line_and_a_dict_config_is_named() -> None:
    r = replay(SAMPLES / "sample.parquet")
    text = repr(r)
    assert text.startswith(f"RunResult(digest={r.digest[:16]!r}, rows=143338,") and len(text) < 200
    with pytest.raises(
        ConfigError, match=r"config= takes the path of a TOML file, not dict; pass settings as overrides="
    ):
        replay(SAMPLES / "sample.parquet", config={"interval_s": 30.0})


class _Raises(Strategy):
    def on_cycle(self, ctx: Context) -> None:
        raise RuntimeError("boom")


def test_the_summary_names_the_first_error() -> None:
    r = replay(SAMPLES / "sample.parquet", strategy=_Raises)
    assert r.summary["errors"] == r.summary["cycles"] == 1441
    assert r.summary["first_error"] == "2024-01-01 00:00:00.000Z strategy_exception: on_cycle: RuntimeError: boom"
    assert replay(SAMPLES / "sample.parquet").summary["first_error"] is None
