"""The README's Python example runs as written (on the bundled sample instead of tape.parquet)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SAMPLE = str(resources.files("perpsim.tapes") / "samples" / "sample.parquet")


def test_the_replay_example_runs_and_returns_what_it_says() -> None:
    text = README.read_text()
    start = text.index("From Python:")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert code is not None
    env: dict[str, object] = {}
    exec(compile(code.group(1).replace('"tape.parquet"', repr(SAMPLE)), "README.md", "exec"), env)
    result, results = env["result"], env["results"]
    assert len(result.digest) == 64 and result.summary["orders"] >= 1  # type: ignore[attr-defined]
    assert result.events.height > 0  # type: ignore[attr-defined]
    assert [type(r).__name__ for r in results] == ["RunResult"] * 3  # type: ignore[attr-defined]
