"""The `prunelab models | layers | prune` commands: real subprocesses, then error cases."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import prunelab
from prunelab.cli.commands import main
from prunelab.io.architectures import build


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prunelab.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each command once, in its own process; started together to share the start-up cost."""
    tmp = tmp_path_factory.mktemp("cli")
    torch.save(build("digits-mlp"), tmp / "whole.pt")
    started = {
        "models": _cli("models"),
        "layers": _cli("layers", "sample:digits-resnet"),
        "prune": _cli(
            "prune",
            "sample:digits-mlp",
            "--strategy",
            "layer-magnitude",
            "--sparsity",
            "0.5",
            "--out",
            str(tmp / "masks.pt"),
        ),
        "pickle": _cli("layers", f"file:{tmp / 'whole.pt'}"),
    }
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stdout, stderr)
    results["tmp"] = tmp
    return results


@pytest.mark.slow
def test_models_lists_samples_and_torchvision(runs):
    code, out, err = runs["models"]
    assert code == 0, err
    for name in ("digits-mlp", "digits-cnn", "digits-resnet", "sentiment-lstm"):
        assert f"sample:{name}" in out
    accuracy = prunelab.io.zoo.load("sample:digits-cnn").card["test_accuracy"]
    assert f"{accuracy:.2%}" in out  # accuracies come from the cards
    assert "torchvision classification models" in out and "resnet18" in out


@pytest.mark.slow
def test_layers_prints_the_targets_table(runs):
    code, out, err = runs["layers"]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("digits-resnet: 9 prunable tensors, 37,840 of 38,266 parameters")
    assert lines[1].split() == ["fqn", "type", "shape", "elements", "share", "bias"]
    assert lines[2].split()[:4] == ["stem.0.weight", "Conv2d", "16x1x3x3", "144"]
    assert any(line.split()[0] == "layer2.shortcut.0.weight" for line in lines[2:])


@pytest.mark.slow
def test_prune_prints_before_and_after_and_saves_masks(runs):
    code, out, err = runs["prune"]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("digits-mlp pruned with layer-magnitude: sparsity 0.5000")
    assert "sample:digits, test split, 450 samples" in lines[0]
    assert lines[1].split() == ["dense", "pruned", "delta"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) >= {"accuracy", "loss", "agreement", "kl", "nonzero", "FLOPs", "masks"}
    accuracy = prunelab.io.zoo.load("sample:digits-mlp").card["test_accuracy"]
    assert rows["accuracy"].split()[1] == f"{accuracy:.2%}"
    assert rows["agreement"].split()[1] == "100.00%"
    assert rows["FLOPs"].split()[1:3] == ["100,400", "50,200"]
    masks = prunelab.Masks.load(runs["tmp"] / "masks.pt")
    assert masks.sparsity() == pytest.approx(0.5, abs=1e-3)
    assert list(masks) == ["fc1.weight", "fc2.weight", "fc3.weight"]


@pytest.mark.slow
def test_a_pickle_without_trust_is_one_clear_line(runs):
    code, out, err = runs["pickle"]
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("prunelab layers: error: ") and "--trust" in err


# -- in-process: every bad input gives one line and exit status 2 --------------------------


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_unknown_model(capsys):
    line = _error(capsys, "layers", "sample:lenet")
    assert line.startswith("prunelab layers: error: unknown sample model 'lenet'")
    assert "sample:digits-mlp" in line


def test_unreadable_and_missing_files(capsys, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    assert "not a file written by torch.save" in _error(
        capsys, "layers", f"file:{tmp_path / 'junk.pt'}"
    )
    assert "does not exist" in _error(capsys, "layers", f"file:{tmp_path / 'nope.pt'}")


def test_architecture_mismatch_lists_keys(capsys, tmp_path):
    torch.save(build("digits-mlp").state_dict(), tmp_path / "mlp.pt")
    line = _error(capsys, "prune", f"file:{tmp_path / 'mlp.pt'}?arch=sample:digits-cnn",
                  "--strategy", "global-magnitude", "--sparsity", "0.5")  # fmt: skip
    assert "missing keys: conv1.weight" in line and "unexpected keys: fc1.weight" in line


def test_pickle_with_trust_works(capsys, tmp_path):
    torch.save(build("digits-cnn"), tmp_path / "whole.pt")
    assert main(["layers", f"file:{tmp_path / 'whole.pt'}", "--trust"]) == 0
    assert "conv1.weight" in capsys.readouterr().out


def test_bad_strategy_and_sparsity(capsys):
    line = _error(capsys, "prune", "sample:digits-mlp", "--strategy", "biggest", "--sparsity", "1")
    assert "biggest" in line and "global-magnitude" in line
    line = _error(capsys, "prune", "sample:digits-mlp", "--strategy", "global-magnitude",
                  "--sparsity", "1.5")  # fmt: skip
    assert "1.5" in line
    line = _error(capsys, "prune", "sample:digits-mlp", "--strategy", "global-magnitude",
                  "--limit", "0")  # fmt: skip
    assert "--limit" in line


def test_data_driven_strategy_calibrates_on_the_train_split(capsys):
    argv = ["prune", "sample:digits-cnn", "--strategy", "layer-activation-magnitude"]
    assert main([*argv, "--sparsity", "0.6", "--limit", "100"]) == 0
    out = capsys.readouterr().out
    assert "sparsity 0.6000" in out and "test split, 100 samples" in out


def test_threshold_and_fixed_pattern_strategies(capsys):
    assert (
        main(["prune", "sample:digits-mlp", "--strategy", "threshold", "--threshold", "0.05"]) == 0
    )
    assert "pruned with threshold" in capsys.readouterr().out
    assert main(["prune", "sample:sentiment-lstm", "--strategy", "n:m", "--limit", "50"]) == 0
    assert "sparsity 0.5000" in capsys.readouterr().out


def test_a_model_without_data_is_judged_by_fidelity_on_random_inputs(capsys, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    torch.save(net, tmp_path / "net.pt")
    spec = f"file:{tmp_path / 'net.pt'}?trust=1"
    assert main(["prune", spec, "--strategy", "global-magnitude", "--sparsity", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "64 random inputs" in out
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert "agreement" in rows and "accuracy" not in rows


def test_a_torchvision_model_is_judged_by_fidelity_on_digits_that_fit_it(capsys):
    spec = "torchvision:mobilenet_v3_small?num_classes=10&input=3x32x32"
    assert main(["prune", spec, "--strategy", "global-magnitude", "--sparsity", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "data: sample:digits?input=3x32x32&labels=0&limit=450" in out  # unlabelled
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert "agreement" in rows and "accuracy" not in rows
