"""``perpsim serve`` and ``perpsim live`` as processes: metrics, SIGTERM, SIGKILL, replay parity.

Each test starts ``perpsim serve`` on 127.0.0.1 with an ephemeral port and runs
``python -m perpsim live`` against it for a bounded time.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from perpsim.tapes.reader import open_tape
from perpsim.tapes.validate import validate_tape
from tests.helpers import reaped, sigkill
from tests.live.conftest import PY

BOT = ["--profile", "backtest", "--symbols", "BTC-PERP", "--interval", "0.25s"]


def _start_live(url: str, tmp_path: Path, config: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    err = tmp_path / "live.err"
    with err.open("w") as f:
        proc = subprocess.Popen(
            [
                *PY,
                "live",
                *BOT,
                "--config",
                str(config),
                "--url",
                url,
                "--record",
                "rec",
                "--out",
                "run",
                "--json",
                *extra,
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=f,
            text=True,
        )
    return proc, err


def _wait_for(pred: object, timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()  # type: ignore[operator]
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def test_live_process_serves_metrics_stops_on_sigterm_in_time_and_replays_to_its_digest(
    server: str, tmp_path: Path, fast_config: Path
) -> None:
    proc, err = _start_live(server, tmp_path, fast_config, "--metrics-port", "0")
    with reaped(proc):
        m = _wait_for(
            lambda: re.search(r"metrics on (http://\S+)/metrics", err.read_text()), 20, "the metrics endpoint"
        )
        base = m.group(1)  # type: ignore[attr-defined]

        def cycles() -> int:
            code, body = _get(base + "/health")
            return int(json.loads(body).get("cycles", 0)) if code == 200 else 0

        _wait_for(lambda: cycles() >= 8, 20, "eight cycles")
        code, health = _get(base + "/health")
        doc = json.loads(health)
        assert code == 200 and doc["status"] == "ok" and doc["feed"] == "live"
        assert {"uptime_s", "lag_ms", "reconnects", "guards", "last_cycle"} <= set(doc)
        code, body = _get(base + "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in (
            "perpsim_events",
            "perpsim_feed_lag_seconds",
            "perpsim_cycle_duration_seconds",
            "perpsim_orders",
            "perpsim_fills",
            "perpsim_rejects",
            "perpsim_feed_reconnects",
            "perpsim_feed_gaps",
            "perpsim_feed_malformed",
            "perpsim_equity",
            "perpsim_position",
            "perpsim_recorder_rows",
            "perpsim_recorder_bytes",
        ):
            assert name in families, name
        by_kind = {s.labels["kind"]: s.value for s in families["perpsim_events"].samples if s.name.endswith("_total")}
        assert by_kind.get("trade", 0) > 0 and by_kind.get("timer", 0) > 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)  # a hang fails here; no speed is asserted
    assert proc.returncode == 0, err.read_text()[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["stop_reason"] == "SIGTERM"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["digest"] == summary["digest"]
    assert (tmp_path / "run" / "snapshot.msgpack").is_file()
    replayed = subprocess.run(
        [sys.executable, "-m", "perpsim", "replay", "rec", "--profile", "backtest", "--config", str(fast_config),
         "--interval", "0.25s", "--json", "--out", "replayed"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["digest"] == summary["digest"]


@pytest.mark.parametrize("mode", ["rewrite", "journal"])
def test_live_recording_survives_sigkill_with_at_most_a_second_lost(
    server: str, tmp_path: Path, fast_config: Path, mode: str
) -> None:
    proc, err = _start_live(server, tmp_path, fast_config, *(["--journal"] if mode == "journal" else []))
    rec = tmp_path / "rec"
    with reaped(proc):
        _wait_for(lambda: list(rec.glob("0*.*")), 20, "the first recorded file")
        time.sleep(2.5)
        killed_at = time.time_ns()
        sigkill(proc)
    files = sorted(rec.glob("0*.*"))
    assert files, err.read_text()[-2000:]
    if mode == "journal":  # the open segment was a journal when the process died
        assert files[-1].suffix == ".arrows"
    tape = open_tape(rec)  # every visible file is a complete Parquet file
    report = validate_tape(rec)
    assert report is not None
    last = max(int(b.recv_ts[-1]) for b in tape.batches())
    assert killed_at - last < 1.0e9, f"lost {(killed_at - last) / 1e9:.2f} s"
    assert tape.meta.clock == "recv_ts" and tape.meta.timers
