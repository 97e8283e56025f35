"""sweep -> sensitivity -> solve -> apply from the command line, and interrupted writes."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from prunelab.cli.commands import main
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from prunelab.sweeps import load_table


def test_sensitivity_solve_apply_chain(tmp_path, capsys):
    sens, recipe, weights = tmp_path / "s.csv", tmp_path / "r.yaml", tmp_path / "p.pt"
    args = ["sensitivity", "sample:digits-mlp", "--sparsities", "0.3:0.9:0.3", "--subset", "200"]
    assert main([*args, "--csv", str(sens)]) == 0
    out = capsys.readouterr().out
    assert "drop in accuracy" in out and "fc3.weight" in out
    table = load_table(sens)
    assert table.attrs["model"] == "sample:digits-mlp" and len(table) == 9

    assert main(["solve", str(sens), "--target-sparsity", "0.6", "--out", str(recipe)]) == 0
    loaded = Recipe.load(recipe)
    assert loaded.provenance.model == "sample:digits-mlp"
    model = zoo.load("sample:digits-mlp").model
    assert loaded.overall_sparsity(model) == pytest.approx(0.6, abs=1e-3)

    assert main(["apply", str(recipe), "sample:digits-mlp", "--out", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "nonzero params" in out
    reloaded = zoo.load(f"file:{weights}?arch=sample:digits-mlp").model
    zeros = sum(int((p == 0).sum()) for n, p in reloaded.named_parameters() if "weight" in n)
    assert zeros >= 0.6 * sum(t.numel() for n, t in model.named_parameters() if "weight" in n) - 3


def test_sweep_writes_a_csv(tmp_path, capsys):
    out = tmp_path / "curve.csv"
    code = main(
        [
            "sweep",
            "sample:digits-cnn",
            "--strategies",
            "layer-magnitude,random",
            "--sparsities",
            "0,0.5",
            "--csv",
            str(out),
        ]
    )
    assert code == 0
    table = load_table(out)
    assert table["strategy"].tolist() == ["layer-magnitude"] * 2 + ["random"] * 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "sample:digits-cnn", "--sparsities", "a:b"], "bad sparsities"),
        (["sweep", "sample:digits-cnn", "--strategies", "magic"], "unknown strategy"),
        (["solve", "missing.csv", "--target-sparsity", "0.5", "--out", "r.yaml"], "missing.csv"),
        (["apply", "missing.yaml", "sample:digits-cnn"], "missing.yaml"),
    ],
)
def test_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_interrupted_csv_leaves_no_file(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupt)
    out = tmp_path / "s.csv"
    code = main(["sensitivity", "sample:digits-mlp", "--method", "magnitude", "--csv", str(out)])
    assert code == 130
    assert list(tmp_path.iterdir()) == []


def test_interrupted_apply_leaves_no_file(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    Recipe(layers={"fc1.weight": 0.5}).save(recipe)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupt)
    assert main(["apply", str(recipe), "sample:digits-mlp", "--out", str(tmp_path / "p.pt")]) == 130
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]


def test_cli_runs_as_a_program(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prunelab.cli",
            "sensitivity",
            "sample:digits-cnn",
            "--method",
            "magnitude",
            "--sparsities",
            "0.5,0.9",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "energy_removed" in done.stdout and "conv1.weight" in done.stdout


def test_strategy_options_reach_the_recipe(tmp_path, capsys):
    # --option p=2 measured an L2 channel norm: the solved recipe must re-apply as L2
    sens, recipe = tmp_path / "s.csv", tmp_path / "r.yaml"
    args = ["sensitivity", "sample:digits-mlp", "--strategy", "weight-norm-channel"]
    args += ["--option", "p=2", "--sparsities", "0.25,0.5", "--subset", "64"]
    assert main([*args, "--csv", str(sens)]) == 0
    assert main(["solve", str(sens), "--target-sparsity", "0.3", "--out", str(recipe)]) == 0
    loaded = Recipe.load(recipe)
    assert loaded.options == {"p": 2} and loaded.build_strategy().p == 2
    masks = tmp_path / "m.pt"
    prune = ["prune", "sample:digits-mlp", "--strategy", "weight-norm-channel", "--sparsity", "0.5"]
    assert main([*prune, "--option", "p=2", "--limit", "64", "--out", str(masks)]) == 0
    capsys.readouterr()
    model = zoo.load("sample:digits-mlp").model
    import prunelab

    expected = prunelab.prune(
        model, prunelab.get_strategy("weight-norm-channel", p=2), sparsity=0.5
    )
    saved = torch.load(masks, weights_only=True)
    saved = saved.get("masks", saved)
    assert all(torch.equal(expected[f], saved[f].bool()) for f in expected)
