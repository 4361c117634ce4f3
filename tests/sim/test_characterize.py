"""Characterization: a golden file pins a replay event by event; one changed event is caught."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

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
    assert {"key": "params.position_fraction", "golden": 0.05, "now": 0.1} in res.config  # the default
    assert res.first_difference is not None and res.first_difference["fields"] == ["qty"]


def test_characterize_missing_or_bad_golden_is_bad_input(tape: Path, tmp_path: Path) -> None:
    result = perpsim.replay(tape)
    with pytest.raises(InputError, match="golden file not found; run with --update"):
        check_golden(result, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match=r"bad.json: not a golden file \(format 'other', expected"):
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


def _pytest(test: Path, *args: str, short: int = 5) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``test`` in a child process, with the golden plugin loaded."""
    import importlib.metadata as md
    import os

    env = {**os.environ, "SHORT": str(short)}
    root = test.parent
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), str(test)]
    if "perpsim.sim.testing" not in [e.value for e in md.entry_points(group="pytest11")]:
        cmd[4:4] = ["-p", "perpsim.sim.testing"]  # not installed with its entry point: load it by name
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=root, env=env, timeout=120)


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
    first = _pytest(test)
    assert first.returncode == 1 and "--golden-update" in first.stdout
    rec = _pytest(test, "--golden-update")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert (tmp_path / "golden" / "test_mine" / "test_mine.json").is_file()
    assert _pytest(test).returncode == 0
    changed = _pytest(test, short=3)
    assert changed.returncode == 1 and "first differing event #" in changed.stdout


def test_golden_fixture_keeps_same_named_tests_of_two_classes_apart(tape: Path, tmp_path: Path) -> None:
    """``TestFast.test_run`` and ``TestSlow.test_run`` each get a golden file; a module-level test keeps its name."""
    (tmp_path / "tape.parquet").write_bytes(tape.read_bytes())
    test = tmp_path / "test_g.py"
    test.write_text(
        textwrap.dedent(
            """
            class TestFast:
                def test_run(self, golden):
                    golden.check("tape.parquet", params={"short": 3, "long": 10})

            class TestSlow:
                def test_run(self, golden):
                    golden.check("tape.parquet", params={"short": 8, "long": 30})

            def test_run(golden):
                golden.check("tape.parquet")
            """
        )
    )
    rec = _pytest(test, "--golden-update")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    folder = tmp_path / "golden" / "test_g"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json")) == [
        "TestFast/test_run.json",
        "TestSlow/test_run.json",
        "test_run.json",
    ]
    again = _pytest(test)
    assert again.returncode == 0, again.stdout


def test_golden_fixture_reports_an_unreadable_golden_file_in_one_line(tape: Path, tmp_path: Path) -> None:
    (tmp_path / "tape.parquet").write_bytes(tape.read_bytes())
    test = tmp_path / "test_bad.py"
    test.write_text('def test_bad(golden):\n    golden.check("tape.parquet")\n')
    (tmp_path / "golden" / "test_bad").mkdir(parents=True)
    (tmp_path / "golden" / "test_bad" / "test_bad.json").write_text("{}")
    res = _pytest(test)
    assert res.returncode == 1 and "not a golden file" in res.stdout and "Traceback" not in res.stdout
    assert "--golden-update" in res.stdout
    assert _pytest(test, "--golden-update").returncode == 0  # and the update replaces it
    assert _pytest(test).returncode == 0


# -- malformed golden files, --update over them, and golden paths that cannot be files --------


def _spoil(g: dict[str, Any], how: str) -> None:
    """One field of a good golden record made wrong, as an audit found them."""
    if how == "data not base64":
        g["events"]["data"] = "not base64!!"
    elif how == "data not zlib":
        g["events"]["data"] = base64.b64encode(b"hello").decode()
    elif how == "data not events":
        g["events"]["data"] = base64.b64encode(zlib.compress(b"\x93\x01\x02\x03")).decode()  # msgpack [1, 2, 3]
    elif how == "events a string":
        g["events"] = "abc"
    elif how == "counts a list":
        g["counts"] = []
    elif how == "count not a number":
        g["counts"] = {"fill": "abc"}
    elif how == "tape a string":
        g["tape"] = "x"
    elif how == "no events":
        del g["events"]
    elif how == "event_count wrong":
        g["event_count"] += 1
    else:
        raise AssertionError(how)


SPOILS = [
    "data not base64",
    "data not zlib",
    "data not events",
    "events a string",
    "counts a list",
    "count not a number",
    "tape a string",
    "no events",
    "event_count wrong",
]


@pytest.fixture(scope="module")
def good(tape: Path) -> tuple[Any, dict[str, Any]]:
    result = perpsim.replay(tape)
    return result, golden_record(result, tape=tape)


@pytest.mark.parametrize("how", SPOILS)
def test_malformed_golden_file_is_one_input_error(good: tuple[Any, dict[str, Any]], tmp_path: Path, how: str) -> None:
    result, record = good
    g = json.loads(json.dumps(record))
    _spoil(g, how)
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    with pytest.raises(InputError, match=r"g.json: not a golden file \(.+\)$") as ei:
        check_golden(result, p)
    assert "\n" not in str(ei.value)
    with pytest.raises(InputError, match="not a golden file"):
        read_golden(p)


@pytest.mark.parametrize("how", ["data not zlib", "no events"])
def test_cli_malformed_golden_file_exits_2(
    tape: Path, good: tuple[Any, dict[str, Any]], tmp_path: Path, how: str
) -> None:
    g = json.loads(json.dumps(good[1]))
    _spoil(g, how)
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    code, out, err = _cli("characterize", str(tape), "--golden", str(p))
    assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()] and "not a golden file" in err


@pytest.mark.parametrize("content", ["", "not json", json.dumps({"format": "perpsim.golden/1", "events": "x"})])
def test_update_replaces_an_unreadable_golden_file(
    tape: Path, good: tuple[Any, dict[str, Any]], tmp_path: Path, content: str
) -> None:
    result, record = good
    p = tmp_path / "g.json"
    p.write_text(content)
    res = check_golden(result, p, update=True, tape=tape)
    assert res.ok and res.updated and res.lines[0].startswith(f"golden replaced: {p}")
    assert any("not a golden file" in line for line in res.lines)
    assert read_golden(p)["digest"] == record["digest"]
    assert [q.name for q in tmp_path.iterdir()] == ["g.json"]  # no temporary file left


def test_update_over_a_corrupt_golden_file_by_cli(tape: Path, good: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    g = json.loads(json.dumps(good[1]))
    _spoil(g, "data not zlib")
    p = tmp_path / "g.json"
    p.write_text(json.dumps(g))
    code, out, err = _cli("characterize", str(tape), "--golden", str(p), "--update")
    assert (code, err) == (0, "") and out.startswith("golden replaced")
    code, out, _ = _cli("characterize", str(tape), "--golden", str(p))
    assert code == 0 and out.startswith("golden match")


def test_update_over_a_readable_golden_file_still_reports_the_change(tape: Path, tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    characterize(tape, p, update=True, params={"position_fraction": 0.1})
    res = characterize(tape, p, update=True)
    assert res.lines[0].startswith("golden updated") and "was:" in res.lines
    assert res.first_difference is not None
    assert characterize(tape, p, update=True).lines[0].startswith("golden unchanged")


def test_a_failed_write_keeps_the_old_golden_file(
    good: tuple[Any, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    result, _ = good
    p = tmp_path / "g.json"
    p.write_text("old")

    def no_replace(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(InputError, match=r"g.json: cannot write \(Permission denied\)"):
        check_golden(result, p, update=True)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["g.json"]


@pytest.mark.parametrize("update", [False, True])
@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_golden_path_that_cannot_be_a_file_is_refused_before_replaying(
    tape: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, update: bool
) -> None:
    import perpsim.sim.replay

    def no_replay(*a: Any, **k: Any) -> None:
        raise AssertionError("replayed")

    (tmp_path / "gdir").mkdir()
    (tmp_path / "afile").write_text("")
    g = tmp_path / "gdir" if where == "folder" else tmp_path / "afile" / "x.json"
    want = "gdir: is a folder; give a file name" if where == "folder" else "x.json: .*afile is a file, not a folder"
    code, out, err = _cli("characterize", str(tape), "--golden", str(g), *(["--update"] if update else []))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(perpsim.sim.replay, "replay", no_replay)
    with pytest.raises(InputError, match=want):
        characterize(tape, g, update=update)


def test_characterize_config_shows_the_default_the_golden_run_used(tape: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    characterize(tape, g, update=True)
    res = characterize(tape, g, params={"short": 4}, raise_on_mismatch=False)
    assert {"key": "params.short", "golden": 5, "now": 4} in res.config  # MACrossover.defaults["short"]
    assert "config params.short: 5 (golden) vs 4 (now)" in res.lines
    assert not any("None" in line for line in res.lines if line.startswith("config"))
