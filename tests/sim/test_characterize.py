"""Characterization: a golden file pins a replay event by event; one changed event is caught."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

import perpsim
from perpsim.core.errors import CheckFailed, InputError
from perpsim.sim.characterize import (
    characterize,
    check_golden,
    compare_golden,
    decode_events,
    encode_events,
    golden_record,
    read_golden,
)
from perpsim.tapes import synth
from tests.helpers import cli as _cli


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(hours=2, symbols=["BTC-PERP", "ETH-PERP"], seed=9, out=tmp_path_factory.mktemp("ch") / "t.parquet")


def test_characterize_update_then_match(tape: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    res = characterize(tape, g, update=True)
    assert res.updated and g.is_file() and res.lines[0].startswith("golden created")
    again = characterize(tape, g)
    assert again.ok and again.first_difference is None
    data = read_golden(g)
    assert data["counts"]["cycle"] == 121 and data["event_count"] == sum(data["counts"].values())
    assert data["tape"]["name"] == "t.parquet" and len(decode_events(data["events"]["data"])) == data["event_count"]


def test_characterize_detects_a_one_event_change(tape: Path, tmp_path: Path) -> None:
    result = perpsim.replay(tape)
    assert result.run_events is not None
    golden = golden_record(result, tape=tape)
    events = list(result.run_events)
    k = next(i for i, e in enumerate(events) if e.kind == "fill")
    events[k] = msgspec.structs.replace(events[k], price=events[k].price + 0.1)  # one field of one event
    golden["events"]["data"] = encode_events(events)
    golden["digest"] = "0" * 64
    res = compare_golden(golden, golden_record(result, tape=tape))
    assert not res.ok
    assert res.first_difference is not None
    assert res.first_difference["index"] == k and res.first_difference["fields"] == ["price"]
    assert res.first_difference["kind_golden"] == "fill"
    assert not res.counts  # counts agree: only the content of one event changed
    assert any(line.startswith("first differing event #") for line in res.lines)


def test_characterize_behaviour_change_names_the_first_event_and_config(tape: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    characterize(tape, g, update=True)
    with pytest.raises(CheckFailed, match=r"differs from the golden file at event #\d+ \(order"):
        characterize(tape, g, params={"position_fraction": 0.1})
    res = characterize(tape, g, params={"position_fraction": 0.1}, raise_on_mismatch=False)
    assert {"key": "params.position_fraction", "golden": None, "now": 0.1} in res.config
    assert res.first_difference is not None and res.first_difference["fields"] == ["qty"]


def test_characterize_missing_or_bad_golden_is_bad_input(tape: Path, tmp_path: Path) -> None:
    result = perpsim.replay(tape)
    with pytest.raises(InputError, match="golden file not found; run with --update"):
        check_golden(result, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a perpsim golden file"):
        check_golden(result, bad)


def test_characterize_cli_exit_codes(tape: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    code, _, err = _cli("characterize", str(tape), "--golden", str(g))
    assert code == 2 and "golden file not found" in err
    code, out, _ = _cli("characterize", str(tape), "--golden", str(g), "--update")
    assert code == 0 and "golden created" in out
    code, out, _ = _cli("characterize", str(tape), "--golden", str(g))
    assert code == 0 and out.startswith("golden match")
    code, out, err = _cli("characterize", str(tape), "--golden", str(g), "--interval", "30s")
    assert code == 1
    assert "first differing event #" in out and "config interval_s: 60.0 (golden) vs 30.0 (now)" in out
    assert len(err.strip().splitlines()) == 1 and "replay differs from the golden file at event #" in err


def test_golden_fixture_gives_three_line_golden_tests(tape: Path, tmp_path: Path) -> None:
    """The pytest plugin (entry point ``pytest11``): record, match, then catch a change."""
    (tmp_path / "tape.parquet").write_bytes(tape.read_bytes())
    test = tmp_path / "test_mine.py"
    test.write_text(
        textwrap.dedent(
            """
            import os
            from perpsim.core.baseline import MACrossover

            def test_mine(golden):
                golden.check("tape.parquet", strategy=MACrossover, params={"short": int(os.environ.get("SHORT", 5))})
            """
        )
    )

    def pytest_run(*args: str, short: int = 5) -> subprocess.CompletedProcess[str]:
        import os

        env = {**os.environ, "SHORT": str(short)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)]
        import importlib.metadata as md

        if "perpsim.sim.testing" not in [
            e.value for e in md.entry_points(group="pytest11")
        ]:  # not installed with its entry point: load it by name
            cmd[4:4] = ["-p", "perpsim.sim.testing"]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)

    first = pytest_run()
    assert first.returncode == 1 and "--golden-update" in first.stdout
    rec = pytest_run("--golden-update")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert (tmp_path / "golden" / "test_mine" / "test_mine.json").is_file()
    assert pytest_run().returncode == 0
    changed = pytest_run(short=3)
    assert changed.returncode == 1 and "first differing event #" in changed.stdout
