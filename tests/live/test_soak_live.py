"""``perpsim soak --live``: the live path soaked against ``perpsim serve`` for a bounded wall time.

Both run as processes, as a user runs them: the soak samples the process it runs in,
and its logging and switch-interval settings must not leak into the test process.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.helpers import cli
from tests.live.conftest import PY

WALL_S = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_soak_live_against_serve_passes_and_reports_samples_and_cycles(
    server: str, tmp_path: Path, fast_config: Path
) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [*PY, "soak", "--live", server, "--wall", f"{WALL_S}s", "--profile", "backtest",
         "--config", str(fast_config), "--symbols", "BTC-PERP", "--interval", "0.5s",
         "--sample-every", "1s", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert f"soak (live) {server}" in text and "wall 10s" in text and "soak --live: PASS" in text
    assert "samples" in text and "cycle" in text and "heap growth (reported)" in text

    rep = json.loads(out.read_text())
    live = rep["live"]
    assert rep["ok"] and rep["tape"] == server and rep["duration_ns"] == WALL_S * 10**9
    assert live["status"] == "complete" and live["stop_reason"] == "soak wall time"
    assert WALL_S <= live["ran_s"] < WALL_S + 5
    assert live["feed"]["connects"] == 1 and live["feed"]["reconnects"] == live["feed"]["gaps"] == 0
    samples = rep["samples"]
    assert len(samples) >= 5  # one a second; a stalled loop merges samples, it never adds any
    assert samples[-1]["clock_ns"] - rep["clock_start_ns"] >= WALL_S * 10**9
    for key in ("messages", "cycles"):
        values = [s[key] for s in samples]
        assert values == sorted(values) and values[-1] > values[0], key
    assert max(s["kept"] for s in samples) < 50  # run events stream to the run directory, not memory
    assert all(s["heap"] is not None and s["threads"] >= 2 for s in samples)
    assert rep["cycles"] >= 10 and rep["timers_ms"]["cycle"]["n"] >= rep["cycles"]
    assert rep["timers_ms"]["cycle"]["p95"] > 0 and live["driver_cycle"]["n"] >= 10
    checks = {c["name"]: c for c in rep["checks"]}
    for name in ("RSS growth", "errors", "queue outbox bounded", "queue tasks bounded", "queue threads bounded"):
        assert checks[name]["ok"], checks[name]
    assert checks["session errors"]["value"] == 0 and "heap growth" not in checks
    assert rep["memory"]["heap_growth"] is not None and rep["top_growth"]


def test_soak_live_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    code, _, err = cli("soak", "--live", "ws://127.0.0.1:1")
    assert (
        code == 2
        and err.strip() == "perpsim: soak --live: --wall is required (the session's wall time, e.g. --wall 60s)"
    )
    code, _, err = cli("soak", "--wall", "5s")
    assert code == 2 and "--wall is for a live soak" in err
    code, _, err = cli("soak", "--live", "http://127.0.0.1:1", "--wall", "5s")
    assert code == 2 and "not a websocket URL" in err
    (tmp_path / "kept" / "recording").mkdir(parents=True)
    (tmp_path / "kept" / "recording" / "000000.parquet").write_bytes(b"an earlier session")
    code, _, err = cli("soak", "--live", "ws://127.0.0.1:1", "--wall", "5s", "--record", str(tmp_path / "kept"))
    assert code == 2 and f"--record {tmp_path / 'kept' / 'recording'}: already exists" in err, err

    url = f"ws://127.0.0.1:{_free_port()}"  # nobody listens there
    proc = subprocess.run(
        [*PY, "soak", "--live", url, "--wall", "2s", "--profile", "backtest"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"perpsim: --live {url}: the feed did not connect within 2s (")
    assert "attempts; last: " in lines[0] and "refused" in lines[0].lower()
