"""The analysis notebooks run top to bottom on the bundled sample, with no error output."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SAMPLE = Path(str(resources.files("perpsim.tapes") / "samples" / "sample.parquet"))


def _run(name: str, env: dict[str, str], tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
        return nb
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    bad = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" or (
                out.get("output_type") == "stream" and out.get("name") == "stderr"
            ):
                bad.append(str(out.get("ename") or out.get("text"))[:300])
    return bad


@pytest.mark.parametrize("name", ["drift_review.ipynb", "tape_explorer.ipynb"])
def test_notebook_runs_on_the_bundled_sample(name: str, tmp_path: Path) -> None:
    if not SAMPLE.is_file():
        pytest.skip("the bundled sample tape is not there")
    nb = _run(name, {"PERPSIM_TAPE": str(SAMPLE), "PERPSIM_WORK": str(tmp_path)}, tmp_path)
    assert _errors(nb) == []
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
