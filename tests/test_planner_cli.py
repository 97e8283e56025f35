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
