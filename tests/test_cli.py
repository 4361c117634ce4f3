"""The command line end to end: replay on the bundled tape, bad input, interrupts (issue 2)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpsim.tapes.schema import SCHEMA
from tests.helpers import cli as helper_cli

PERPSIM = [sys.executable, "-m", "perpsim"]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PERPSIM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_replay_with_no_argument_trades_on_the_bundled_tape_and_is_repeatable(tmp_path: Path) -> None:
    a = cli("replay", "--json", cwd=tmp_path)
    (tmp_path / "second").mkdir()  # an empty folder is a fine --out
    b = cli("replay", "--json", "--out", str(tmp_path / "second"), cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    sa, sb = json.loads(a.stdout), json.loads(b.stdout)
    assert sa["fills"] >= 10 and sa["orders"] == sa["fills"]  # several round trips
    assert sa["digest"] == sb["digest"]
    run_dir = Path(sa["run_dir"])
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    assert run_dir.parent.name == "runs"
    for name in ("manifest.json", "events.parquet", "equity.parquet", "summary.json"):
        assert (run_dir / name).is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["digest"] == sa["digest"]
    assert manifest["tapes"][0]["sha256"] and manifest["profile"] == "backtest"


def test_replay_prints_a_human_summary(tmp_path: Path) -> None:
    out = cli("replay", "--profile", "canary", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("market events", "orders / fills / rejects", "final equity", "max drawdown", "digest"):
        assert word in out.stdout
    manifest = (tmp_path / "r" / "manifest.json").read_bytes()
    again = cli("replay", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"perpsim: --out {tmp_path / 'r'}: already exists; choose another folder or remove it"
    ]
    assert (tmp_path / "r" / "manifest.json").read_bytes() == manifest


def _write_raw(path: Path, rows: dict) -> Path:
    cols = {name: rows.get(name, [None] * len(rows["ts"])) for name in SCHEMA.names}
    cols["recv_ts"] = rows.get("recv_ts", rows["ts"])
    cols["flags"] = rows.get("flags", [0] * len(rows["ts"]))
    pq.write_table(pa.table(cols, schema=SCHEMA), path)
    return path


GOOD = {
    "ts": [1, 2, 3],
    "kind": ["trade", "quote", "trade"],
    "symbol": ["BTC-PERP"] * 3,
    "price": [100.0, None, 101.0],
    "size": [1.0, None, 1.0],
    "side": [1, 0, -1],
    "bid": [None, 99.0, None],
    "bid_size": [None, 1.0, None],
    "ask": [None, 101.0, None],
    "ask_size": [None, 1.0, None],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ts": [1, 3, 2]}, r"bad\.parquet row 2 column ts"),
        ({"kind": ["trade", "quote", "trades"]}, r"bad\.parquet row 2 column kind"),
        ({"price": [100.0, None, float("nan")]}, r"bad\.parquet row 2 column price"),
        ({"price": [0.0, None, 101.0]}, r"bad\.parquet row 0 column price"),
        ({"price": [-1.0, None, 101.0]}, r"bad\.parquet row 0 column price"),
        ({"size": [1.0, None, -2.0]}, r"bad\.parquet row 2 column size"),
        ({"bid": [None, 102.0, None]}, r"bad\.parquet row 1 column bid"),
    ],
)
def test_bad_tapes_exit_2_with_one_line_naming_file_row_column(tmp_path: Path, change: dict, message: str) -> None:
    import re

    bad = _write_raw(tmp_path / "bad.parquet", {**GOOD, **change})
    out = cli("replay", str(bad), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
    manifest = tmp_path / "run" / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] != "complete"


def test_missing_columns_non_parquet_and_missing_file_exit_2(tmp_path: Path) -> None:
    pq.write_table(pa.table({"ts": [1], "kind": ["trade"]}), tmp_path / "cols.parquet")
    (tmp_path / "notes.parquet").write_text("not parquet at all")
    for path, needle in (
        (tmp_path / "cols.parquet", "missing column"),
        (tmp_path / "notes.parquet", "notes.parquet"),
        (tmp_path / "nope.parquet", "nope.parquet"),
    ):
        out = cli("replay", str(path), cwd=tmp_path)
        assert out.returncode == 2, (path, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/summary.json"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--strategy", "nomodule:Nope"], "cannot import module 'nomodule'"),
        (["--strategy", "perpsim.core.baseline:Nope"], "is not a perpsim.Strategy"),
        (["--interval", "soon"], "--interval"),
        (["--frobnicate"], "No such option"),
        (["--start", "yesterday"], "--start"),
        (["--symbols", "BTC-PERP,BTC-PREP"], "symbols: BTC-PREP not on the tape (it has BTC-PERP, ETH-PERP)"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    out = cli("replay", *args, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--canary", "--profile", "prod"], "--canary and --profile prod contradict each other"),
        (["--out", "used"], "--out used: already exists; choose another folder or remove it"),
        (["--record", "used"], "--record used: already exists; choose another folder or remove it"),
        (["--interval", "soon"], "--interval"),
    ],
)
def test_live_refuses_bad_options_before_connecting(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "manifest.json").write_text("{}")
    out = cli("live", *args, "--url", "ws://127.0.0.1:9", "--duration", "5s", cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert not (tmp_path / "recordings").exists()


def test_a_live_session_whose_feed_never_connects_exits_2_after_its_summary(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}"
        out = cli(
            "live", "--canary", "--url", url, "--duration", "2s", "--json", "--out", "run", cwd=tmp_path, timeout=60
        )
    assert out.returncode == 2
    assert json.loads(out.stdout)["feed"]["connects"] == 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"perpsim: live: the feed at {url} never connected during the session (last: "), last


def test_busy_ports_and_bad_values_exit_2_before_serving_or_recording(tmp_path: Path) -> None:
    sample = str(resources.files("perpsim.tapes") / "samples" / "sample.parquet")
    live = ["live", "--canary", "--url", "ws://127.0.0.1:9", "--duration", "5s", "--out", "run"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = [
            (["serve", sample, "--port", port], f"--host 127.0.0.1 --port {port}: cannot listen ("),
            (["serve", sample, "--port", "99999"], "'--port': 99999 is not in the range 0<=x<=65535"),
            (["serve", sample, "--speed", "fast"], "--speed: expected max, a factor such as 1x or 0.5x"),
            ([*live, "--metrics-port", port], f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} ("),
            ([*live, "--url", "notaurl"], "--url notaurl: not a websocket URL (ws://HOST:PORT or wss://HOST)"),
            ([*live, "--url", "ws://127.0.0.1:99999"], "--url ws://127.0.0.1:99999: Port out of range"),
            ([*live, "--max-message-size", "0"], "'--max-message-size': 0 is not in the range x>=1024"),
            (["serve", sample, "--huge-bytes", "-1"], "'--huge-bytes': -1 is not in the range x>=1"),
        ]
        for args, needle in cases:
            out = cli(*args, cwd=tmp_path)
            assert out.returncode == 2, (args, out.stderr)
            assert needle in out.stderr.strip().splitlines()[-1] and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "recordings").exists()


def test_bad_config_file_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[risk]\nmax_levrage = 2.0\n")
    out = cli("replay", "--profile", "prod", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and "max_levrage" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_every_command_has_help(tmp_path: Path) -> None:
    out = cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    commands = [ln.split()[0] for ln in out.stdout.split("Commands:")[1].strip().splitlines() if ln.startswith("  ")]
    assert "replay" in commands and "tapes" in commands
    for c in commands:
        h = cli(c, "--help", cwd=tmp_path)
        assert h.returncode == 0 and "Usage:" in h.stdout, c


def test_ctrl_c_marks_the_run_incomplete(tmp_path: Path) -> None:
    from perpsim.tapes.synth import synth

    tape = synth(hours=200, symbols=["BTC-PERP", "ETH-PERP"], seed=3, out=tmp_path / "long.parquet")
    proc = subprocess.Popen(
        [*PERPSIM, "replay", str(tape), "--out", str(tmp_path / "r")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = tmp_path / "r" / "manifest.json"
    deadline = time.monotonic() + 60
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the replay finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "incomplete" in err and "Traceback" not in err
    assert json.loads(manifest.read_text())["status"] == "incomplete"
    assert os.path.exists(tmp_path / "r" / "events.parquet")


def test_ctrl_c_stops_a_sweep_quietly(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, pool workers included: one line, status 130.

    One tape is short and one long, so one worker is idle and one busy when it comes.
    """
    from perpsim.tapes.synth import synth

    synth(hours=1, symbols=["BTC-PERP"], seed=3, out=tmp_path / "short.parquet")
    synth(hours=300, symbols=["BTC-PERP", "ETH-PERP"], seed=3, out=tmp_path / "long.parquet")
    (tmp_path / "grid.toml").write_text('tapes = ["short.parquet", "long.parquet"]\n[params]\nshort = 3\nlong = 20\n')
    proc = subprocess.Popen(
        [*PERPSIM, "sweep", "grid.toml", "--workers", "2", "--out", "out"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    time.sleep(3.0)  # by now the short tape's job has ended and its worker waits for more
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the sweep finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "perpsim: aborted"


@pytest.mark.parametrize(
    ("window", "needle"),
    [
        (["--start", "2030-01-01T00:00:00Z"], "--start 2030-01-01T00:00:00Z: no row of the tape is in the window"),
        (["--end", "2023-12-31T23:59:59Z"], "--end 2023-12-31T23:59:59Z: no row of the tape is in the window"),
        (["--end", "2024-01-01T00:00:00Z"], "--end 2024-01-01T00:00:00Z: no row of the tape is in the window"),
        (["--start", "2024-01-01T05:00:00Z", "--end", "2024-01-01T05:00:00Z"], "is not after --start"),
    ],
)
def test_a_window_holding_no_row_of_the_tape_exits_2_for_replay_and_slice(
    tmp_path: Path, window: list[str], needle: str
) -> None:
    # the bundled sample's rows run 2024-01-01 00:00 to 2024-01-02 00:00
    code, _, err = helper_cli("replay", *window, "--out", str(tmp_path / "r"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    sample = str(resources.files("perpsim.tapes") / "samples" / "sample.parquet")
    code, _, err = helper_cli("tapes", "slice", sample, *window, "--out", str(tmp_path / "cut.parquet"))
    assert code == 2 and needle in err, err
    assert not (tmp_path / "cut.parquet").exists()


@pytest.mark.parametrize(
    "window", [["--start", "2024-01-01T23:59:00Z"], ["--end", str(1_704_067_200 * 10**9 + 1)]], ids=["last", "first"]
)
def test_a_window_at_the_tapes_edges_replays_its_rows(tmp_path: Path, window: list[str]) -> None:
    code, out, err = helper_cli("replay", *window, "--json", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert json.loads(out)["rows"] > 0


BAD_STRATEGIES = """
import perpsim

class InitBoom(perpsim.Strategy):
    def __init__(self, **p):
        super().__init__(**p)
        raise RuntimeError("init boom")

class FloatWindow(perpsim.Strategy):
    window = 3.5

class Mine(perpsim.Strategy):
    defaults = {"n": 3}
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "mystrats:InitBoom"], "strategy mystrats:InitBoom: RuntimeError: init boom"),
        (["--strategy", "mystrats:FloatWindow"], "strategy mystrats:FloatWindow: window must be an integer >= 1"),
        (["--strategy", "mystrats:Mine", "--config", "typo.toml"], "Mine: unknown parameter(s) m"),
    ],
)
def test_a_strategy_from_the_current_folder_that_cannot_start_is_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "mystrats.py").write_text(BAD_STRATEGIES)  # importable from the folder perpsim runs in
    (tmp_path / "typo.toml").write_text("[params]\nm = 5\n")  # the file's params reach the strategy
    script = Path(sys.executable).parent / "perpsim"  # the console script: no -m, so no cwd on sys.path of its own
    for runner in ([[str(script)]] if script.is_file() else []) + [PERPSIM]:
        out = subprocess.run([*runner, "replay", *args, "--out", "r"], cwd=tmp_path, capture_output=True, text=True)
        (line,) = out.stderr.strip().splitlines()
        assert out.returncode == 2 and line.startswith(f"perpsim: {message}"), (runner, out.stderr)
        assert not (tmp_path / "r").exists()


def test_a_strategy_failing_every_cycle_shows_its_first_error(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        "import perpsim\n\nclass Raises(perpsim.Strategy):\n"
        "    def on_cycle(self, ctx):\n        raise RuntimeError('boom')\n"
    )
    out = cli("replay", "--strategy", "failing:Raises", "--out", "r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "first error: 2024-01-01 00:00:00.000Z strategy_exception: on_cycle: RuntimeError: boom" in out.stdout
