"""The prunelab console script."""

from __future__ import annotations

import subprocess
import sys

import pytest

import prunelab
from prunelab.cli import main


def test_strategies_lists_every_registered_strategy(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in prunelab.list_strategies():
        assert name in out


def test_console_script_runs_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "prunelab.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"prunelab {prunelab.__version__}"


def test_unknown_command_exits_non_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
