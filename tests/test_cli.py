"""The prunelab console script."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prunelab
from prunelab.cli.args import CHECKPOINT_SUFFIX
from prunelab.cli.commands import main
from prunelab.cli.runs import command_prefix
from prunelab.sweeps import runner

ROOT = Path(__file__).resolve().parents[1]


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
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# -- long runs: checkpoints, Ctrl-C, a killed process, --resume ---------------------------

SWEEP = ["sweep", "sample:digits-mlp", "--limit", "60", "--strategies", "random,layer-magnitude"]
SWEEP += ["--sparsities", "0,0.5,0.9"]
SENSITIVITY = ["sensitivity", "sample:digits-mlp", "--limit", "60", "--sparsities", "0.3,0.9"]

# the CLI in a process slow enough to kill half-way: every evaluation takes 0.3 s longer
SLOW_CLI = """
import sys, time
import prunelab.sweeps.curves as sweeps
real = sweeps.evaluate
def slow(*args, **kwargs):
    time.sleep(0.3)
    return real(*args, **kwargs)
sweeps.evaluate = slow
from prunelab.cli.commands import main
sys.exit(main(sys.argv[1:]))
"""


def _rows_in(path) -> int:
    try:
        return path.read_text().count('"row":')
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def interrupted_on_point(number: int, monkeypatch):
    """Ctrl-C arrives while the sensitivity run evaluates its ``number``-th point."""
    calls = []
    real = runner._Runner.masked_metrics

    def interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runner._Runner, "masked_metrics", interrupt)
        yield


def test_a_killed_sweep_resumes_to_the_same_csv(tmp_path):
    from prunelab.sweeps.checkpoints import checkpoint_status

    expected, out = tmp_path / "expected.csv", tmp_path / "out.csv"
    checkpoint = tmp_path / ("out.csv" + CHECKPOINT_SUFFIX)
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *SWEEP, "--csv", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert main([*SWEEP, "--csv", str(expected)]) == 0  # while the process starts up
        deadline = time.monotonic() + 60
        while _rows_in(checkpoint) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    state = checkpoint_status(checkpoint)
    assert 2 <= state.done < state.total == 6 and not out.exists()
    assert main([*SWEEP, "--csv", str(out), "--resume"]) == 0
    assert out.read_bytes() == expected.read_bytes()
    assert not checkpoint.exists()  # made for --csv: gone once the CSV is written


def test_ctrl_c_says_how_to_resume_and_that_command_finishes_the_run(tmp_path, monkeypatch, capsys):
    expected, out = tmp_path / "expected.csv", tmp_path / "out.csv"
    assert main([*SENSITIVITY, "--csv", str(expected)]) == 0
    capsys.readouterr()
    with interrupted_on_point(3, monkeypatch):
        assert main([*SENSITIVITY, "--csv", str(out)]) == 130
    message = capsys.readouterr().err.strip().splitlines()[-1]
    saved = f"{out}{CHECKPOINT_SUFFIX}"
    assert message == (
        f"interrupted: 2 of 6 rows are saved in {saved}; to go on, run: "
        + shlex.join([*command_prefix(), *SENSITIVITY, "--csv", str(out), "--resume"])
    )
    # pasted into a shell where the README's setup runs it (`uv run prunelab` under uv)
    done = subprocess.run(
        message.split("to go on, run: ")[1],
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == expected.read_bytes()
    assert f"resumed from {saved}: 2 of 6 rows read from it\n" in done.stderr


def test_the_resume_command_starts_prunelab_as_the_user_can(monkeypatch, tmp_path):
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")  # under `uv run`, .venv is not on PATH
    assert command_prefix() == ["uv", "run", "prunelab"]
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # an activated environment
    assert command_prefix() == ["prunelab"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no prunelab on PATH: this Python runs it
    assert command_prefix() == [sys.executable, "-m", "prunelab.cli"]


def test_an_explicit_checkpoint_is_kept_and_resuming_it_reads_the_table(
    tmp_path, monkeypatch, capsys
):
    checkpoint = tmp_path / "run.jsonl"
    assert main([*SENSITIVITY, "--checkpoint", str(checkpoint)]) == 0
    first = capsys.readouterr().out
    assert checkpoint.exists()
    monkeypatch.setattr(runner._Runner, "masked_metrics", None)  # nothing may be evaluated
    assert main([*SENSITIVITY, "--checkpoint", str(checkpoint), "--resume"]) == 0
    again = capsys.readouterr()
    assert again.out == first
    assert again.err == f"resumed from {checkpoint}: all rows read from it\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--resume needs the run's checkpoint: give --checkpoint PATH"),
        (["--checkpoint", "{tmp}/t.csv", "--csv", "{tmp}/t.csv"], "must be different files"),
        (["--checkpoint", "{tmp}/run.jsonl"], "holds 1 of 6 rows of an earlier sensitivity"),
        (
            ["--checkpoint", "{tmp}/run.jsonl", "--resume", "--sparsities", "0.3,0.8"],
            r"what differs: sparsities (checkpoint: [0.3, 0.9]; now: [0.3, 0.8])",
        ),
        (["--checkpoint", "{tmp}/junk.jsonl", "--resume"], "is not a prunelab checkpoint"),
        (["--method", "magnitude", "--resume"], "the magnitude method evaluates nothing"),
    ],
)
def test_checkpoint_errors_are_one_line(extra, message, tmp_path, monkeypatch, capsys):
    with interrupted_on_point(2, monkeypatch):
        assert main([*SENSITIVITY, "--checkpoint", str(tmp_path / "run.jsonl")]) == 130
    (tmp_path / "junk.jsonl").write_bytes(b"PK\x03\x04 not a checkpoint")
    capsys.readouterr()
    args = [a.format(tmp=tmp_path) for a in extra]
    assert main([*SENSITIVITY, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
