"""Recipes round-trip, re-apply to fresh models, and refuse bad fields by name; the solver."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

import prunelab
from prunelab.io.recipes import Provenance, Recipe
from prunelab.sweeps import sensitivity, solve
from tests.conftest import make_cnn, make_mlp


def _recipe() -> Recipe:
    return Recipe(
        strategy="weight-norm-channel",
        granularity="channel",
        layers={"0.weight": 0.25, "3.weight": 0.5},
        default_sparsity=0.1,
        provenance=Provenance(model="test:cnn", metric="accuracy", baseline=0.9),
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_apply_to_a_fresh_model_gives_the_same_masks(tmp_path, suffix):
    recipe = _recipe()
    path = tmp_path / f"recipe{suffix}"
    recipe.save(path)
    loaded = Recipe.load(path)
    assert loaded == recipe
    first, fresh = make_cnn(0), make_cnn(0)
    a, b = recipe.masks(first), loaded.masks(fresh)
    assert all(torch.equal(a[f], b[f]) for f in a)
    assert a.per_layer().set_index("fqn").loc["7.weight", "sparsity"] == pytest.approx(0.0)
    pruned = loaded.apply(fresh)
    assert hasattr(pruned[0], "weight_mask")
    assert not hasattr(fresh[0], "weight_mask")


def test_recipe_file_is_readable_plain_data(tmp_path):
    path = tmp_path / "r.yaml"
    _recipe().save(path)
    payload = yaml.safe_load(path.read_text())
    assert payload["format"] == "prunelab.recipe/1"
    assert payload["layers"] == {"0.weight": 0.25, "3.weight": 0.5}
    assert payload["provenance"]["prunelab_version"] == prunelab.__version__


def _payload(**changes):
    data = _recipe().to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"colour": "red"}, r"unknown recipe field\(s\) \['colour'\]"),
        ({"format": "other"}, "field 'format'"),
        ({"layers": {"0.weight": 1.5}}, r"field 'layers\.0\.weight' must be in \[0, 1\]"),
        ({"layers": {"0.weight": "half"}}, r"field 'layers\.0\.weight' must be a number"),
        ({"layers": [0.5]}, "field 'layers' must map"),
        ({"default_sparsity": -0.2}, "field 'default_sparsity'"),
        ({"strategy": "nope"}, "field 'strategy': unknown strategy 'nope'"),
        ({"granularity": "3:2"}, "field 'granularity'"),
        ({"provenance": {"baseline": "high"}}, r"provenance\.baseline' must be a number"),
        ({"provenance": {"who": "me"}}, r"provenance\.who"),
        ({"options": {"q": 3}}, r"field 'options': bad options .*accepted: granularity, p"),
        ({"options": {"p": [2]}}, r"field 'options\.p' must be a number, true/false or text"),
        ({"options": {"p": "two"}}, r"field 'options'.*p \(the norm's order\) must be a positive"),
        ({"options": {"granularity": "2:4"}}, "give it as the recipe field 'granularity'"),
        ({"options": [2]}, "field 'options' must map option names to values"),
    ],
)
def test_bad_fields_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_dict(_payload(**changes))


def test_missing_fields_are_named():
    data = _payload()
    del data["layers"]
    with pytest.raises(ValueError, match="field 'layers' is missing"):
        Recipe.from_dict(data)


def test_layers_absent_from_the_model():
    recipe = Recipe(layers={"encoder.weight": 0.5})
    with pytest.raises(ValueError, match=r"names 1 layer\(s\) this model does not have"):
        recipe.masks(make_mlp())


def test_unsafe_yaml_and_huge_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="safe loading only"):
        Recipe.loads("!!python/object/apply:os.system ['echo hi']")
    path = tmp_path / "big.yaml"
    path.write_text("strategy: " + "x" * 2_000_000)
    with pytest.raises(ValueError, match="a recipe is a few KB"):
        Recipe.load(path)
    with pytest.raises(ValueError, match=r"end in \.yaml, \.yml or \.json"):
        _recipe().save(tmp_path / "r.txt")


def test_json_files_load_through_the_same_path(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_recipe().to_dict()))
    assert Recipe.load(path) == _recipe()


def _table(drops: dict[str, list[float]], elements: dict[str, int], levels=(0.25, 0.5, 0.75, 1.0)):
    rows = [
        {"layer": layer, "elements": elements[layer], "sparsity": s, "drop": d}
        for layer, values in drops.items()
        for s, d in zip(levels, values, strict=True)
    ]
    return pd.DataFrame(rows)


def test_solver_meets_the_target_and_prunes_robust_layers_first():
    table = _table(
        {
            "robust": [0.0, 0.0, 0.01, 0.5],
            "fragile": [0.1, 0.3, 0.6, 0.9],
            "mid": [0, 0.02, 0.05, 0.4],
        },
        {"robust": 1000, "fragile": 1000, "mid": 500},
    )
    recipe = solve(table, target_sparsity=0.5, max_sparsity=0.95)
    overall = sum(
        recipe.layers[k] * n for k, n in {"robust": 1000, "fragile": 1000, "mid": 500}.items()
    )
    assert overall == pytest.approx(0.5 * 2500, abs=3)  # within one weight per layer
    assert recipe.layers["robust"] > recipe.layers["fragile"]
    assert max(recipe.layers.values()) <= 0.95


def test_solver_never_exceeds_max_sparsity():
    table = _table({"a": [0, 0, 0, 0], "b": [0, 0, 0, 0]}, {"a": 10, "b": 10})
    recipe = solve(table, target_sparsity=0.7, max_sparsity=0.75)
    assert max(recipe.layers.values()) <= 0.75
    with pytest.raises(ValueError, match="unreachable"):
        solve(table, target_sparsity=0.9, max_sparsity=0.75)


def test_solver_with_a_drop_budget():
    table = _table({"a": [0.0, 0.01, 0.02, 0.5], "b": [0.05, 0.1, 0.3, 0.9]}, {"a": 10, "b": 10})
    recipe = solve(table, max_drop=0.03)
    # the drop is spent exactly: the last step stops part of the way (b at 0.05 costs 0.01)
    assert recipe.layers == {"a": 0.75, "b": 0.05}


def test_solver_bad_input():
    table = _table({"a": [0, 0, 0, 0]}, {"a": 10})
    with pytest.raises(ValueError, match="exactly one budget"):
        solve(table)
    with pytest.raises(ValueError, match="missing column"):
        solve(table.drop(columns="elements"), target_sparsity=0.5)


def test_solver_on_a_real_sensitivity_reports_predicted_and_measured(mlp_data):
    model = make_mlp().eval()
    table = sensitivity(model, mlp_data, sparsities=[0.2, 0.4, 0.6, 0.8])
    recipe = solve(table, target_sparsity=0.5, model=model, data=mlp_data)
    assert recipe.overall_sparsity(model) == pytest.approx(0.5, abs=0.01)
    masks = recipe.masks(model)
    assert masks.sparsity() == pytest.approx(0.5, abs=0.01)
    p = recipe.provenance
    assert p.metric == "accuracy" and p.baseline == table.attrs["baseline"]
    assert p.predicted is not None and p.measured is not None


@pytest.mark.parametrize(
    "strategy, request_",
    [
        ("global-magnitude", {"sparsity": 0.7}),
        ("threshold", {"threshold": 0.1}),
        ("weight-norm-channel", {"sparsity": 0.5}),
        (prunelab.get_strategy("weight-norm-channel", p=2), {"sparsity": 0.5}),
        ("n:m", {}),
    ],
)
def test_from_masks_reproduces_the_masks_on_a_fresh_model(strategy, request_, tmp_path):
    model = make_mlp(0)
    pruner = prunelab.Pruner(model, strategy)
    masks = pruner.masks(**request_)
    path = tmp_path / "r.yaml"
    Recipe.from_masks(masks, pruner.strategy).save(path)
    again = Recipe.load(path).masks(make_mlp(0))
    assert all(torch.equal(masks[f], again[f]) for f in masks)


def test_a_sensitivity_tables_strategy_options_reach_its_recipe(mlp_data, tmp_path):
    # an L2 channel norm measured, solved to a recipe, saved: it re-applies as L2, not L1
    from prunelab.sweeps import load_table, save_table

    model = make_mlp(0).eval()
    strategy = prunelab.get_strategy("weight-norm-channel", p=2)
    table = sensitivity(model, mlp_data, sparsities=[0.25, 0.5], strategy=strategy)
    save_table(table, tmp_path / "sens.csv")
    recipe = solve(load_table(tmp_path / "sens.csv"), target_sparsity=0.3)
    assert recipe.options == {"p": 2}
    assert recipe.build_strategy() == strategy
