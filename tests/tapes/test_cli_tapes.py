"""perpsim/cli_tapes.py: every command that writes a tape refuses an --out that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsim.tapes import synth
from tests.helpers import cli

HEAD = Path(__file__).parent.parent / "data" / "binance" / "btcusdt_20240808_head200.gz"


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    a = synth(hours=1, symbols=["BTC-PERP"], seed=1, out=tmp_path / "a.parquet")
    b = synth(hours=1, symbols=["ETH-PERP"], seed=1, out=tmp_path / "b.parquet")
    return {
        "synth": ["synth", "--hours", "1", "--symbols", "BTC-PERP", "--seed", "2"],
        "slice": ["slice", str(a)],
        "merge": ["merge", str(a), str(b)],
        "convert": ["convert", "--from", "binance", str(HEAD)],
    }


@pytest.mark.parametrize("command", ["synth", "slice", "merge", "convert"])
def test_cli_tape_command_refuses_an_existing_out_before_any_work(tmp_path: Path, command: str) -> None:
    # `tapes synth --out tape.parquet` used to replace a 48-hour tape without a word
    args = _commands(tmp_path)[command]
    kept = tmp_path / "kept.parquet"
    kept.write_bytes(b"a tape someone needs")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = cli("tapes", *args, "--out", str(kept))
    assert (code, stdout) == (2, "")
    assert err == f"perpsim: --out {kept}: already exists; choose another name or remove it\n"
    assert kept.read_bytes() == b"a tape someone needs"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file either


def test_cli_refuses_a_dangling_link_as_out(tmp_path: Path) -> None:
    link = tmp_path / "link.parquet"
    link.symlink_to(tmp_path / "nowhere.parquet")  # a rename would replace the link
    code, _, err = cli("tapes", *_commands(tmp_path)["synth"], "--out", str(link))
    assert code == 2 and "already exists" in err and err.count("\n") == 1, err
    assert link.is_symlink() and not link.exists()


def test_cli_convert_names_src_even_when_out_comes_first(tmp_path: Path) -> None:
    src = tmp_path / "rec.gz"
    src.write_bytes(HEAD.read_bytes())
    code, _, err = cli("tapes", "convert", "--out", str(src), "--from", "binance", str(src))
    assert code == 2 and err == f"perpsim: --out {src}: is SRC itself; writing the tape would replace the recording\n"
    assert src.read_bytes() == HEAD.read_bytes()


def test_cli_writes_a_new_out(tmp_path: Path) -> None:
    for command, args in _commands(tmp_path).items():
        out = tmp_path / f"{command}.parquet"
        code, _, err = cli("tapes", *args, "--out", str(out))
        assert code == 0 and err == "" and out.exists(), err
