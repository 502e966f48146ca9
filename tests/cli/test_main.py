"""The ``accel`` command itself: ``--version``, the help of every subcommand and of the groups."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from accel.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_the_projects():
    want = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    out = subprocess.run([sys.executable, "-m", "accel.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"accel {want}"


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_every_subcommand_has_help(words, capsys):
    if words == ("eval",):  # `accel eval --help` lists the subcommands (e2e's options: `accel eval e2e --help`)
        assert main([*words, "--help"]) == 0
        assert "usage: accel eval {e2e,attention,kernels}" in capsys.readouterr().out
        return
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    shown = "bench kernels" if words == ("eval", "kernels") else " ".join(words)  # the same command
    assert out.startswith(f"usage: accel {shown}"), out[:200]
    assert "--help" in out


@pytest.mark.parametrize("group,subcommands", [("bench", ["kernels"]), ("eval", ["e2e", "attention", "kernels"])])
def test_groups_list_their_subcommands(group, subcommands, capsys):
    assert main([group, "--help"]) == 0
    out = capsys.readouterr().out
    for name in subcommands:
        assert f"\n  {name} " in out
    assert f"accel {group} SUBCOMMAND --help" in out


def test_bench_alone_and_unknown_subcommands_are_errors(capsys):
    assert main(["bench"]) == 2
    assert "subcommands:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "nope"])
    assert exit_info.value.code == 2
    assert "unknown subcommand 'bench nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for words in COMMANDS:
        assert " ".join(words) in out
