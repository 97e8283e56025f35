"""`prunelab solve` with the budget kinds and the planner's evaluation budget."""

from __future__ import annotations

import pytest

from prunelab.cli.commands import main
from prunelab.io import zoo
from prunelab.io.recipes import Recipe


@pytest.mark.slow
def test_solve_takes_a_budget_kind_and_an_evaluation_budget(tmp_path, capsys):
    sens, recipe = tmp_path / "s.csv", tmp_path / "r.yaml"
    args = ["sensitivity", "sample:digits-mlp", "--sparsities", "0.3:0.9:0.3", "--subset", "120"]
    assert main([*args, "--csv", str(sens)]) == 0
    capsys.readouterr()
    solve = ["solve", str(sens), "--out", str(recipe)]
    assert main([*solve, "--target-sparsity", "0.6", "--evaluations", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 0: summed drop" in out and "(chosen)" in out and "pruned together" in out
    assert Recipe.load(recipe).provenance.measured is not None

    model = zoo.load("sample:digits-mlp").model
    dense = sum(p.numel() for p in model.parameters())
    assert main([*solve, "--params", str(dense // 3)]) == 0
    masks = Recipe.load(recipe).masks(model)
    kept = dense - sum(int((~m).sum()) for m in masks.values())
    assert abs(kept - dense // 3) <= len(masks)


@pytest.mark.slow
def test_solve_speedup_is_one_option_and_meets_the_measured_profile(tmp_path, capsys):
    sens, recipe = tmp_path / "s.csv", tmp_path / "r.yaml"
    args = ["sensitivity", "sample:digits-mlp", "--strategy", "weight-norm-channel"]
    args += ["--sparsities", "0.3:0.9:0.3", "--subset", "60", "--prune-outputs"]
    assert main([*args, "--csv", str(sens)]) == 0
    capsys.readouterr()
    # a tiny MLP on a CPU is mostly overhead: 1.1x is within what its channels can give
    solve = ["solve", str(sens), "--out", str(recipe), "--speedup", "1.1"]
    assert main([*solve, "--evaluations", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 0: summed drop" in out and "(chosen)" in out
    loaded = Recipe.load(recipe)
    assert loaded.granularity == "channel" and loaded.provenance.measured is not None
    assert any(value > 0 for value in loaded.layers.values())  # it did prune to get faster
    # a speedup is refused on an unstructured table, in one line
    plain = tmp_path / "u.csv"
    base = ["sensitivity", "sample:digits-mlp", "--sparsities", "0.5", "--subset", "30"]
    assert main([*base, "--csv", str(plain)]) == 0
    assert main(["solve", str(plain), "--out", str(recipe), "--speedup", "1.3"]) == 2
    assert "channel recipe" in capsys.readouterr().err
