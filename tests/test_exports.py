"""The public surface is a decision (STYLE habit 11): every module declares ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import perpsim

PACKAGES = ["perpsim", "perpsim.core", "perpsim.tapes", "perpsim.tapes.formats", "perpsim.sim", "perpsim.live"]


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.ispkg and info.name != "__main__":
                names.append(f"{pkg_name}.{info.name}")
    return names


def test_every_module_declares_all_and_defines_each_name() -> None:
    modules = _modules()
    assert len(modules) > 30
    for name in modules:
        mod = importlib.import_module(name)
        assert hasattr(mod, "__all__"), f"{name} has no __all__"
        assert len(mod.__all__) == len(set(mod.__all__)), f"{name}.__all__ has duplicates"
        for attr in mod.__all__:
            assert hasattr(mod, attr), f"{name}.__all__ names {attr!r}, which it does not define"


def test_top_level_reexports_come_from_submodules() -> None:
    assert len(perpsim.__all__) == len(set(perpsim.__all__))
    exported_below = set()
    for name in _modules():
        if name != "perpsim":
            exported_below |= set(importlib.import_module(name).__all__)
    for attr in perpsim.__all__:
        assert hasattr(perpsim, attr)
        assert attr in exported_below or attr in ("__version__", "tapes"), attr


def test_importing_perpsim_has_no_side_effects(tmp_path) -> None:
    import subprocess
    import sys

    code = "import perpsim, threading, os; assert threading.active_count() == 1; print(sorted(os.listdir('.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
