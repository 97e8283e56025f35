"""Every failure a user can cause on the command line: one line `prunelab CMD: error: ...`,
exit status 2, never a traceback (issue 22). A bug still shows its traceback.

The cases run ``prunelab.cli.commands.main`` in-process; one subprocess proves the real entry point.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from prunelab.cli import commands as cli
from prunelab.cli.commands import main
from prunelab.io import zoo
from prunelab.io.recipes import Recipe

MLP = "sample:digits-mlp"
PRUNE = ["prune", MLP, "--strategy", "layer-magnitude", "--sparsity", "0.5", "--limit", "20"]
GRADIENT = ["prune", MLP, "--strategy", "layer-magnitude-gradient", "--sparsity", "0.5"]
LONG = "a" * 300  # longer than any file name a Linux file system takes (255 bytes)


def _data(path: Path, x: torch.Tensor, y: torch.Tensor | None = None) -> str:
    torch.save({"x": x} if y is None else {"x": x, "y": y}, path)
    return f"file:{path}"


def _state(path: Path, change) -> str:
    state = zoo.load(MLP).model.state_dict()
    torch.save(change(state), path)
    return f"file:{path}?arch={MLP}"


def _recipe(tmp: Path) -> str:
    path = tmp / "recipe.yaml"
    Recipe(default_sparsity=0.5).save(path)
    return str(path)


def _nan_inputs(tmp: Path) -> str:
    x = torch.rand(20, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    return _data(tmp / "nan.pt", x, torch.zeros(20, dtype=torch.long))


@dataclass(frozen=True)
class Case:
    id: str
    argv: object  # tmp_path -> argv
    expect: str  # a regular expression the error line matches


CASES = [
    # data that does not fit the model
    Case(
        "data of the wrong shape",
        lambda t: [*PRUNE, "--data", _data(t / "d.pt", torch.rand(20, 3, 8, 8))],
        r"cannot run on this data \(inputs of 3x8x8 float32\)",
    ),
    Case(
        "data of the wrong dtype",
        lambda t: [*PRUNE, "--data", _data(t / "d.pt", torch.ones(20, 1, 8, 8, dtype=torch.long))],
        r"cannot run on this data \(inputs of 1x8x8 int64\)",
    ),
    Case(
        "labels above the classes",
        lambda t: [
            *PRUNE,
            "--data",
            _data(t / "d.pt", torch.rand(20, 1, 8, 8), torch.full((20,), 12)),
        ],
        r"labels must be class indices from 0 to 9 .* labels from 12 to 12",
    ),
    Case(
        "negative labels",
        lambda t: [
            *PRUNE,
            "--data",
            _data(t / "d.pt", torch.rand(20, 1, 8, 8), -torch.ones(20).long()),
        ],
        r"labels must be class indices from 0 to 9",
    ),
    Case("NaN inputs", lambda t: [*PRUNE, "--data", _nan_inputs(t)], r"1 of 20 inputs .* NaN"),
    Case(
        "calibration data of the wrong shape",
        lambda t: [
            *GRADIENT,
            "--data",
            _data(t / "d.pt", torch.rand(20, 3, 8, 8), torch.ones(20).long()),
        ],
        r"cannot run on this data \(inputs of 3x8x8 float32\)",
    ),
    Case(
        "calibration labels above the classes",
        lambda t: [
            *GRADIENT,
            "--data",
            _data(t / "d.pt", torch.rand(20, 1, 8, 8), torch.full((20,), 12)),
        ],
        r"labels must be class indices from 0 to 9",
    ),
    Case(
        "NaN inputs in a sweep",
        lambda t: [
            "sweep",
            MLP,
            "--sparsities",
            "0.5",
            "--strategies",
            "random",
            "--data",
            _nan_inputs(t),
        ],
        r"NaN or inf",
    ),
    # nesting, names, files that are not files
    Case(
        "deeply nested JSON recipe",
        lambda t: [
            "apply",
            _write(t / "r.json", '{"strategy": ' + "[" * 100_000 + "]" * 100_000 + "}"),
            MLP,
        ],
        r"nest",
    ),
    Case(
        "over-long model file name",
        lambda t: ["layers", f"file:{t / LONG}.pt"],
        r"too long: '.*\.\.\.",
    ),
    Case("over-long data file name", lambda t: [*PRUNE, "--data", f"file:{t / LONG}"], r"too long"),
    Case("over-long output name", lambda t: [*PRUNE, "--out", str(t / LONG)], r"too long"),
    Case("a directory as the model", lambda t: ["layers", f"file:{t}"], r"is a directory"),
    Case("a directory as data", lambda t: [*PRUNE, "--data", f"file:{t}"], r"is a directory"),
    Case("a directory as recipe", lambda t: ["apply", str(t), MLP], r"[Ii]s a directory"),
    Case(
        "a directory as --out",
        lambda t: [*PRUNE, "--out", str(t)],
        r"cannot write .*: it is a directory",
    ),
    Case("a directory as --csv", lambda t: ["sweep", MLP, "--csv", str(t)], r"it is a directory"),
    Case("a device as the model", lambda t: ["layers", "file:/dev/null"], r"not a regular file"),
    Case(
        "a device as --out",
        lambda t: [*PRUNE, "--out", "/dev/full"],
        r"/dev/full: it is not a regular file",
    ),
    # devices that are not here
    Case(
        "--device tpu",
        lambda t: [*PRUNE, "--device", "tpu"],
        r"unknown device 'tpu'; available here: cpu",
    ),
    Case(
        "--device nonsense",
        lambda t: [*PRUNE, "--device", "x" * 500],
        r"unknown device 'x+\.\.\.",
    ),
    # odd num_classes and input in specs
    Case(
        "num_classes=0",
        lambda t: ["layers", "torchvision:resnet18?num_classes=0"],
        r"must be from 1 to",
    ),
    Case(
        "num_classes<0",
        lambda t: ["layers", "torchvision:resnet18?num_classes=-3"],
        r"must be from 1 to",
    ),
    Case(
        "huge num_classes",
        lambda t: ["layers", f"torchvision:resnet18?num_classes={10**14}"],
        r"must be from 1 to",
    ),
    Case(
        "num_classes=abc",
        lambda t: ["layers", "torchvision:resnet18?num_classes=abc"],
        r"must be an integer",
    ),
    Case(
        "input=0x8x8", lambda t: ["layers", "torchvision:resnet18?input=0x8x8"], r"positive sizes"
    ),
    Case(
        "input=-3x8x8", lambda t: ["layers", "torchvision:resnet18?input=-3x8x8"], r"positive sizes"
    ),
    Case("input=axb", lambda t: ["layers", "torchvision:resnet18?input=axb"], r"positive sizes"),
    Case(
        "huge input",
        lambda t: ["layers", "torchvision:resnet18?input=3x1000000x1000000"],
        r"3,000,000,000,000 values per sample; at most",
    ),
    # weights that are not weights
    Case(
        "non-string keys",
        lambda t: ["layers", _state(t / "m.pt", lambda s: {**s, 7: torch.zeros(1)})],
        r"keys of type int",
    ),
    Case(
        "meta weights",
        lambda t: ["layers", _state(t / "m.pt", lambda s: {k: v.to("meta") for k, v in s.items()})],
        r"meta device",
    ),
    Case(
        "sparse weights",
        lambda t: [
            "layers",
            _state(t / "m.pt", lambda s: {k: v.to_sparse() for k, v in s.items()}),
        ],
        r"sparse tensors \(dense weights expected\)",
    ),
    # options out of range
    Case(
        "--repeats 0",
        lambda t: ["speed", MLP, "--recipe", _recipe(t), "--repeats", "0"],
        r"--repeats: must be a positive",
    ),
    Case(
        "huge --seed",
        lambda t: [*PRUNE, "--seed", str(2**70)],
        r"--seed: must be a whole number from 0 to 2\*\*63",
    ),
    Case(
        "--early-stop nan",
        lambda t: ["sensitivity", MLP, "--early-stop", "nan"],
        r"--early-stop: must be a finite number",
    ),
    Case(
        "--sparsity inf",
        lambda t: ["prune", MLP, "--strategy", "random", "--sparsity", "inf"],
        r"finite",
    ),
    Case("--limit 0", lambda t: [*PRUNE[:-2], "--limit", "0"], r"--limit: must be a positive"),
    Case(
        "--option without =",
        lambda t: [*PRUNE, "--option", "p2"],
        r"--option takes NAME=VALUE, e\.g\. p=2",
    ),
    Case(
        "--option the strategy lacks",
        lambda t: ["prune", MLP, "--strategy", "random", "--sparsity", "0.5", "--option", "p=2"],
        r"bad options for strategy 'random'.*accepted:",
    ),
    Case(
        "--option out of range",
        lambda t: [
            *("prune", MLP, "--strategy", "weight-norm-channel", "--sparsity", "0.5"),
            *("--option", "p=-1"),
        ],
        r"p \(the norm's order\) must be a positive number, got -1",
    ),
    Case(
        "unknown option",
        lambda t: [*PRUNE, "--" + "z" * 5000],
        r"unrecognized arguments: -+z+\.\.\.",
    ),
    # prunelab finetune
    Case(
        "finetune with a bad recipe",
        lambda t: [*_finetune(t), "--recipe", _write(t / "r.yaml", "strategy: [\n")],
        r"r\.yaml",
    ),
    Case(
        "finetune with recipe layers the model lacks",
        lambda t: [*_finetune(t), "--recipe", _layers_recipe(t)],
        r"nope",
    ),
    Case(
        "finetune on data without labels",
        lambda t: [*_finetune(t), "--data", _data(t / "d.pt", torch.rand(40, 1, 8, 8))],
        r"finetune needs labelled data; file:.*d\.pt has no labels",
    ),
    Case(
        "finetune with an unknown optimizer",
        lambda t: [*_finetune(t), "--optimizer", "lbfgs"],
        r"--optimizer: invalid choice: 'lbfgs' \(choose from '?sgd'?, '?adam'?\)",
    ),
    Case("finetune --epochs 0", lambda t: [*_finetune(t), "--epochs", "0"], r"--epochs: must be"),
    Case("finetune --lr 0", lambda t: [*_finetune(t), "--lr", "0"], r"--lr: must be a positive"),
    Case("finetune --lr nan", lambda t: [*_finetune(t), "--lr", "nan"], r"--lr: must be a"),
    Case("finetune --batch-size -1", lambda t: [*_finetune(t), "--batch-size", "-1"], r"must be"),
]


def _finetune(tmp: Path) -> list[str]:
    """A cheap `prunelab finetune` run; a later --recipe or --data replaces the one here."""
    return ["finetune", MLP, "--recipe", _recipe(tmp), "--limit", "40", "--out", str(tmp / "w.pt")]


def _layers_recipe(tmp: Path) -> str:
    path = tmp / "layers.yaml"
    Recipe(layers={"nope.weight": 0.5}).save(path)
    return str(path)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _one_line(capsys, argv: list[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    assert len(lines[0]) < 500, lines[0][:500]  # user values are quoted cut short
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_user_error_is_one_line_with_status_2(case, tmp_path, capsys):
    argv = case.argv(tmp_path)
    line = _one_line(capsys, argv)
    assert line.startswith(f"prunelab {argv[0]}: error: "), line  # the command is named
    assert re.search(case.expect, line), line


@pytest.mark.skipif(torch.cuda.device_count() >= 8, reason="this machine has a cuda:7")
def test_a_cuda_device_that_is_not_here(capsys):
    line = _one_line(capsys, [*PRUNE, "--device", "cuda:7"])
    assert "'cuda:7'" in line and "available" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(capsys):
    assert "device 'cuda' is not available here" in _one_line(capsys, [*PRUNE, "--device", "cuda"])


def test_dev_full_is_still_a_device_after_being_refused(capsys):
    _one_line(capsys, [*PRUNE, "--out", "/dev/full"])
    assert Path("/dev/full").is_char_device()


def test_an_unparsable_memory_limit(capsys, monkeypatch):
    monkeypatch.setenv("PRUNELAB_MEMORY_LIMIT", "lots")
    assert "memory limit 'lots' is not a size" in _one_line(capsys, ["layers", MLP])


@pytest.mark.parametrize("command", ["prune", "apply"])
def test_disk_full_while_writing_leaves_nothing(command, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.pt"
    if command == "prune":
        argv = [*PRUNE, "--out", str(out)]
    else:
        argv = ["apply", _recipe(tmp_path), MLP, "--limit", "20", "--out", str(out)]
    before = sorted(tmp_path.iterdir())

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the last step of every atomic write
    line = _one_line(capsys, argv)
    assert f"No space left on device: '{out}'" in line
    assert sorted(tmp_path.iterdir()) == before  # no output, no temporary file


def test_a_deeply_nested_yaml_recipe(tmp_path, capsys):
    recipe = _write(tmp_path / "r.yaml", "strategy: " + "[" * 5000 + "]" * 5000 + "\n")
    assert re.search(r"nest", _one_line(capsys, ["apply", recipe, MLP]))


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "_cmd_layers", broken)
    with pytest.raises(KeyError):
        main(["layers", MLP])


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    data = _data(tmp_path / "d.pt", torch.rand(8, 1, 8, 8), torch.full((8,), 11))
    done = subprocess.run(
        [sys.executable, "-m", "prunelab.cli", *PRUNE, "--data", data],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("prunelab prune: error: labels must be class indices"), lines


# -- issue 17: the edges a new user meets, each one line with exit 2 or a quiet end -----------

CNN = "sample:digits-cnn"


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", CNN, "--strategy", "layer-magnitude", "--sparsity", "0.5"],
        ["sweep", CNN, "--strategies", "random", "--sparsities", "0.5"],
    ],
    ids=["prune", "sweep"],
)
def test_data_of_another_model_says_what_the_model_expects(argv, capsys):
    line = _one_line(capsys, [*argv, "--data", "sample:sentiment", "--limit", "20"])
    assert "cannot run on this data (inputs of 16 int64)" in line
    assert line.endswith(
        "the data does not fit digits-cnn, which expects inputs of 1x8x8 float32 "
        "(its own data, used without --data: sample:digits)"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["sweep", "sensitivity", "speed"])
def test_cuda_without_it_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(zoo, "load", _no_work)
    argv = {
        "sweep": ["sweep", MLP],
        "sensitivity": ["sensitivity", MLP],
        "speed": ["speed", MLP, "--recipe", _recipe(tmp_path)],
    }[command]
    assert "device 'cuda' is not available here" in _one_line(capsys, [*argv, "--device", "cuda"])


def _no_work(*args, **kwargs):
    raise AssertionError("the work started before the arguments were checked")


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (lambda t: ["solve", str(t), "--target-sparsity", "0.5", "--out", "r.yaml"], "table"),
        (lambda t: ["export", MLP, "--recipe", str(t)], "recipe"),
        (lambda t: ["speed", MLP, "--recipe", str(t)], "recipe"),
        (lambda t: ["export", MLP, "--recipe", _recipe(t), "--out", str(t)], "cannot write"),
        (lambda t: ["sweep", MLP, "--checkpoint", str(t)], "cannot write"),
    ],
    ids=["table", "export recipe", "speed recipe", "export --out", "--checkpoint"],
)
def test_a_directory_where_a_file_goes(argv, expect, tmp_path, capsys):
    line = _one_line(capsys, argv(tmp_path))
    assert expect in line and "directory" in line, line


@pytest.mark.parametrize(
    "argv",
    [
        [*PRUNE, "--out", "{tmp}/nodir/masks.pt"],
        ["sweep", MLP, "--csv", "{tmp}/nodir/t.csv"],
        ["apply", "{recipe}", MLP, "--out", "{tmp}/nodir/w.pt"],
        ["export", MLP, "--recipe", "{recipe}", "--out", "{tmp}/nodir/m.pt"],
    ],
    ids=["prune --out", "sweep --csv", "apply --out", "export --out"],
)
def test_an_output_in_a_missing_folder_is_refused_before_any_work(
    argv, tmp_path, capsys, monkeypatch
):
    recipe = _recipe(tmp_path)
    monkeypatch.setattr(zoo, "load", _no_work)
    line = _one_line(capsys, [a.format(tmp=tmp_path, recipe=recipe) for a in argv])
    assert f"directory {tmp_path / 'nodir'} does not exist" in line


def test_a_masks_file_as_a_recipe_says_what_it_is(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*PRUNE, "--out", "masks.pt"]) == 0
    capsys.readouterr()
    line = _one_line(capsys, ["apply", "masks.pt", MLP])
    assert "masks.pt is not a recipe but a torch.save file (masks or weights)" in line
    assert "`prunelab solve --out`" in line and "codec" not in line


def test_a_table_as_a_recipe_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sensitivity", MLP, "--limit", "20", "--sparsities", "0.5,0.9", "--csv", "my sens.csv"]
    assert main(argv) == 0
    capsys.readouterr()
    line = _one_line(capsys, ["apply", "my sens.csv", MLP])
    assert (
        "my sens.csv is not a recipe (a mapping: format, strategy, layers, ...) but plain" in line
    )
    solve = "prunelab solve 'my sens.csv' --target-sparsity 0.8 --out recipe.yaml"
    assert line.endswith(f"run `{solve}`")
    assert main(shlex.split(solve)[1:]) == 0  # the command runs as printed


def test_a_pt2_without_trust_says_that_arch_names_the_architecture(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    program = Path("model.pt2")
    assert (
        main(
            ["export", MLP, "--recipe", _recipe(tmp_path), "--format", "pt2", "--out", str(program)]
        )
        == 0
    )
    capsys.readouterr()
    line = _one_line(capsys, ["layers", f"file:{program}"])
    assert "--trust" in line and "add ?arch= naming its architecture" in line
    assert f"file:{program}?arch=sample:digits-cnn" in line


@pytest.mark.parametrize("suffix", ["", "/", "?arch=sample:digits-mlp"])
def test_a_directory_as_a_model_file_says_so(suffix, tmp_path, capsys):
    line = _one_line(capsys, ["layers", f"file:{tmp_path}{suffix}"])
    assert "is a directory" in line and "give a regular file" in line
    assert "does not exist" not in line


@pytest.mark.parametrize("argv", [["models"], ["--help"], ["strategies"]])
def test_a_reader_that_has_gone_ends_it_quietly(argv):
    # as `prunelab models | head -1`: the reader closes the pipe; every write fails (EPIPE)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prunelab.cli", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == "", done.stderr
    # 141: as a program killed by SIGPIPE; argparse ignores a failed write of --help itself
    assert done.returncode == (0 if argv == ["--help"] else 141)


@pytest.mark.parametrize(
    ("argv", "steps"),
    [
        (PRUNE, ["loading the model", "loading the data", "pruning with layer-magnitude"]),
        (["apply", "{recipe}", MLP, "--limit", "20", "--out", "{tmp}/w.pt"], ["applying"]),
        (["export", MLP, "--recipe", "{recipe}", "--out", "{tmp}/m.pt"], ["writing state_dict"]),
        (
            ["speed", MLP, "--recipe", "{recipe}", "--repeats", "2", "--batch-sizes", "1"],
            ["timing"],
        ),
    ],
    ids=["prune", "apply", "export", "speed"],
)
def test_long_commands_report_progress(argv, steps, tmp_path, monkeypatch, capsys):
    from prunelab.cli.progress import Bar

    reports: list[tuple[float, str]] = []
    monkeypatch.setattr(Bar, "__call__", lambda self, f, message: reports.append((f, message)))
    recipe = _recipe(tmp_path)
    assert main([a.format(tmp=tmp_path, recipe=recipe) for a in argv]) == 0
    said = " | ".join(message for _, message in reports)
    assert all(step in said for step in steps), said
    if argv[0] in ("prune", "apply"):
        assert "evaluating the dense model" in said and "evaluating the pruned model" in said
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) or argv[0] == "apply"  # apply's save has its own bar
    assert all(0 <= f <= 1 for f in fractions)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_cleared_before_the_error_line(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["prune", CNN, "--strategy", "layer-magnitude", "--sparsity", "0.5"]
    assert main([*argv, "--data", "sample:sentiment", "--limit", "20"]) == 2
    shown = terminal.getvalue()
    assert "prune:" in shown and "evaluating the dense model" in shown  # the bar was drawn
    drawn, _, last = shown.rpartition("\r")
    assert drawn.rpartition("\r")[2].strip() == ""  # then overwritten with blanks
    assert last.startswith("prunelab prune: error: ") and last.count("\n") == 1, last
