"""A pytest plugin: golden (characterization) tests for your own strategies in three lines.

Installed with perpsim (entry point ``pytest11``), so nothing needs registering::

    from mybot import MyStrategy

    def test_my_strategy(golden):
        golden.check("tapes/btc.parquet", strategy=MyStrategy, params={"fast": 5})

The first run fails and says how to record: ``pytest --golden-update`` writes
``golden/<test file>/<test name>.json`` next to the test file. From then on the
test replays the tape and fails with the first differing event when behaviour
changes; re-run with ``--golden-update`` to accept the change on purpose.
A test in a class gets ``golden/<test file>/<Class>/<test name>.json``, so
``TestFast.test_run`` and ``TestSlow.test_run`` do not share (and overwrite) one file.
A relative tape path is taken from the test file's folder first, then the
working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Golden", "golden", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--golden-update`` (write golden files instead of comparing)."""
    group = parser.getgroup("perpsim")
    group.addoption(
        "--golden-update",
        action="store_true",
        default=False,
        help="perpsim: write golden files from the current replays instead of comparing",
    )


class Golden:
    """What the ``golden`` fixture gives a test: :meth:`check` a replay against its golden file."""

    def __init__(self, test_file: Path, test_name: str, update: bool, classes: tuple[str, ...] = ()) -> None:
        self.test_file = test_file
        self.test_name = test_name
        self.update = update
        self.classes = classes
        self._used: set[str] = set()

    def path(self, name: str | None = None) -> Path:
        """The golden file for this test (or for ``name`` within it).

        Enclosing classes become folders; a module-level test keeps the flat name
        its golden files were recorded under.
        """
        parts = [*self.classes, name or self.test_name]
        safe = [re.sub(r"[^A-Za-z0-9_.-]+", "_", x).strip("_") or "golden" for x in parts]
        return self.test_file.parent.joinpath("golden", self.test_file.stem, *safe[:-1], f"{safe[-1]}.json")

    def _tape(self, tape: str | Path) -> str | Path:
        p = Path(tape)
        if not p.is_absolute():
            near = self.test_file.parent / p
            if near.exists():
                return near
        return tape

    def check(self, tape: str | Path | Any, *, name: str | None = None, **replay_kwargs: Any) -> Any:
        """Replay ``tape`` and compare with the golden file; fail the test with the first difference.

        Args:
            tape: a tape path (relative to the test file, else the working directory)
                or an in-memory tape.
            name: a name for a second golden file in the same test.
            replay_kwargs: passed to :func:`perpsim.replay` (``strategy``, ``params``,
                ``profile``, ``seed``, ``symbols``, ``interval_s``, ...).

        Returns:
            The :class:`~perpsim.sim.runs.RunResult`, for further asserts.
        """
        from perpsim.core.errors import InputError
        from perpsim.sim.characterize import check_golden
        from perpsim.sim.replay import replay

        path = self.path(name)
        if str(path) in self._used:
            raise ValueError(f"golden file {path} already checked in this test; pass name= for another")
        self._used.add(str(path))
        src = self._tape(tape) if isinstance(tape, str | Path) else tape
        replay_kwargs.setdefault("keep_events", True)
        result = replay(src, **replay_kwargs)
        if not self.update and not path.is_file():
            pytest.fail(f"golden file {path} does not exist; run pytest --golden-update to record it", pytrace=False)
        try:
            res = check_golden(result, path, update=self.update, tape=src if isinstance(src, str | Path) else None)
        except InputError as exc:  # e.g. a corrupt golden file: say so and how to rewrite it, no traceback
            pytest.fail(f"{exc}\n(run pytest --golden-update to rewrite it)", pytrace=False)
        if not res.ok:
            pytest.fail("\n".join([f"{path}:", *res.lines, "(run pytest --golden-update to accept)"]), pytrace=False)
        return result


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """A :class:`Golden` bound to the requesting test; see the module docstring."""
    return Golden(
        Path(str(request.node.path)),
        request.node.name,
        bool(request.config.getoption("--golden-update", default=False)),
        tuple(n.name for n in request.node.listchain() if isinstance(n, pytest.Class)),
    )
