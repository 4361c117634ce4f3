"""Determinism (DESIGN.md §7): equal digests across processes; core reads no clock, no randomness, no threads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import perpsim.core

CORE = Path(perpsim.core.__file__).parent

_SCRIPT = """
import sys, perpsim
r = perpsim.replay(sys.argv[1], profile=sys.argv[2])
print(r.digest)
"""


@pytest.mark.parametrize("profile", ["backtest", "prod"])
def test_same_digest_in_three_processes_with_different_hash_seeds(profile: str, tmp_path: Path) -> None:
    sample = str(resources.files("perpsim.tapes") / "samples" / "sample.parquet")
    digests = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _SCRIPT, sample, profile],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1 and len(digests.pop()) == 64


_BANNED_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("asyncio", "sleep"),
    ("os", "urandom"),
}
_BANNED_MODULES = {"random", "threading", "secrets", "uuid", "concurrent", "multiprocessing", "asyncio", "socket"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in _BANNED_MODULES:
                    found.append(f"{path.name}:{node.lineno} imports {name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
            if (base_name, node.func.attr) in _BANNED_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {base_name}.{node.func.attr}")
            if node.func.attr == "hash" or (isinstance(node.func, ast.Name) and node.func.id == "hash"):
                found.append(f"{path.name}:{node.lineno} calls hash()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hash", "id"):
            found.append(f"{path.name}:{node.lineno} calls {node.func.id}()")
    return found


def test_core_reads_no_wall_clock_no_unseeded_randomness_no_threads() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    problems = [v for f in files for v in _violations(f)]
    assert problems == []


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import random\nimport time\nx = time.time()\nimport threading\ny = hash('a')\n")
    assert len(_violations(bad)) == 4
