"""The planner: predictions in range, a closed loop that converges, budgets met exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import prunelab
from prunelab.sweeps import (
    Budget,
    DropModel,
    LatencyProfile,
    PlanConfig,
    interplay_note,
    plan,
    predict_drop,
    sensitivity,
    solve,
)


def _broken_table(layers: int = 6, baseline: float = 0.9, metric: str = "accuracy"):
    """Every layer alone loses a lot: summed drops far exceed what the metric can lose."""
    rows = []
    for i in range(layers):
        for level in (0.3, 0.6, 0.9):
            rows.append(
                {
                    "layer": f"l{i}",
                    "elements": 100 * (i + 1),
                    "sparsity": level,
                    "drop": 0.5 * level * (1 + i % 3),
                    "kl": 2.0 * level,
                }
            )
    table = pd.DataFrame(rows)
    table.attrs.update(metric=metric, baseline=baseline, method="evaluate")
    return table


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_accuracy_predictions_stay_between_chance_and_dense(target):
    table = _broken_table()
    summed = predict_drop(table, solve(table, target_sparsity=target).layers)
    assert summed > 0.9 or target < 0.6  # additivity alone would predict below zero
    predicted = solve(table, target_sparsity=target).provenance.predicted
    assert 0.0 <= predicted <= 0.9
    model = DropModel.for_metric("accuracy", 0.9, classes=10)
    for s in (0.0, 0.5, 5.0, 1e6):
        assert 0.1 - 1e-12 <= model.value(0.9, model(s)) <= 0.9
    # a fitted map stays in range too, even fitted to drops past chance
    fitted = model.refit([(0.1, 0.85), (2.0, 0.95), (0.01, 0.3)])
    for s in np.geomspace(1e-4, 1e4, 30):
        assert 0.1 - 1e-9 <= fitted.value(0.9, fitted(s)) <= 0.9


def test_a_map_fitted_to_non_additive_measurements_stays_in_range_and_monotone():
    # joint drops that no single bend fits: a cliff, a measurement that dips (noise) and one
    # at chance; summed drops spanning five decades
    points = [(0.002, 0.0), (0.01, 0.02), (0.03, 0.01), (0.05, 0.30), (0.2, 0.28), (3.0, 0.8)]
    model = DropModel.for_metric("accuracy", 0.9, classes=10).refit(points)
    grid = np.geomspace(1e-5, 1e5, 200)
    values = [model.value(0.9, model(s)) for s in grid]
    assert all(0.1 - 1e-9 <= v <= 0.9 for v in values)  # between chance and dense
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))  # monotone
    # between measurements it interpolates them: the cliff is not smoothed away
    assert model(0.05) == pytest.approx(0.29, abs=0.011)  # pooled with the dip after it
    assert not model.extrapolated(0.1) and model.extrapolated(10.0) and model.extrapolated(1e-4)
    assert model(10.0) >= model(3.0)  # beyond: never less than the last measurement
    assert model.inverse(model(1.0)) == pytest.approx(1.0, rel=1e-3)  # where it rises
    assert model.inverse(model(0.1)) == pytest.approx(0.05, rel=1e-3)  # flat: its first sum
    # carried to the next fit: its measurements still count
    again = model.refit([(0.5, 0.5)])
    assert again.fitted_on > model.fitted_on and again(0.5) == pytest.approx(0.5, abs=1e-6)
    # before any measurement, every prediction is a guess and says so
    assert DropModel.for_metric("accuracy", 0.9, classes=10).extrapolated(0.1)


def test_loss_predictions_never_below_dense():
    table = _broken_table(metric="loss", baseline=0.3)
    predicted = solve(table, target_sparsity=0.6).provenance.predicted
    assert predicted >= 0.3
    model = DropModel.for_metric("loss", 0.3).refit([(0.2, 0.1), (1.0, 2.0)])
    assert all(model.value(0.3, model(s)) >= 0.3 for s in (0.0, 1e-3, 10.0))


def test_map_inverse_and_fit():
    model = DropModel.for_metric("accuracy", 0.95, classes=10)
    assert model.inverse(0.85) == math.inf  # chance is never reached
    truth = DropModel("accuracy", 0.85, scale=4.0, power=1.7)
    xs = [0.01, 0.05, 0.1, 0.2]
    fitted = model.refit([(x, truth(x)) for x in xs])
    assert fitted.scale == pytest.approx(4.0, rel=1e-6) and fitted.power == pytest.approx(1.7)
    assert fitted.inverse(fitted(0.07)) == pytest.approx(0.07)


def test_interplay_note_says_which_way():
    assert "worse" in interplay_note(0.01, 0.2, "accuracy")
    assert "less than the sum" in interplay_note(0.5, 0.2, "accuracy")


def _seeded():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    x = torch.randn(400, 10)
    labels = net(x).argmax(1)  # the dense model is right on every sample: room to fall
    return net.eval(), (x, labels)


def _narrow():
    """A seeded net narrow enough that pruning half of it costs 5-15 points, and the summed
    single-layer drops overstate that by ten: a loop that only agreed on 0 would be vacuous."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4)
    )
    x = torch.randn(400, 10)
    return net.eval(), (x, net(x).argmax(1))


@pytest.mark.slow
def test_closed_loop_converges_to_the_measured_value():
    net, data = _narrow()
    table = sensitivity(net, data, sparsities=[0.2, 0.4, 0.6, 0.8])
    result, fitted = None, None
    for target in (0.3, 0.4, 0.5, 0.5):  # the last target again, with the map carried
        result = plan(
            table, target, model=net, data=data, config=PlanConfig(evaluations=3, drop_model=fitted)
        )
        fitted = result.drop_model
        # the recipe's provenance carries the same numbers as the chosen step
        chosen = result.steps[result.chosen]
        assert result.recipe.provenance.measured == pytest.approx(1.0 - chosen.measured_drop)
        assert result.recipe.provenance.predicted == pytest.approx(1.0 - chosen.predicted_drop)
    steps = result.steps
    assert all(s.measured_drop >= 0.05 for s in steps)  # real damage, not 0 against 0
    assert all(s.summed_drop - s.measured_drop > 0.05 for s in steps)  # the sum is far off
    # calibrated: between the measurements made so far, every prediction lands on them
    assert not any(s.extrapolated for s in steps)
    assert all(abs(s.predicted_drop - s.measured_drop) <= 0.02 for s in steps)
    assert not result.held_out_extrapolated
    assert abs(result.held_out_drop - result.measured_drop) <= 0.02
    # the measurement is on the same samples as the table: evaluate agrees
    masks = result.recipe.masks(net)
    assert prunelab.evaluate(net, data, masks=masks)["accuracy"] == pytest.approx(
        result.recipe.provenance.measured
    )
    assert len(result.table()) == len(result.steps)


def test_drop_budget_loop_keeps_the_measured_drop_within_it():
    net, data = _seeded()
    table = sensitivity(net, data, sparsities=[0.2, 0.4, 0.6, 0.8])
    result = plan(
        table, Budget("drop", 0.05), model=net, data=data, config=PlanConfig(evaluations=4)
    )
    assert result.measured_drop <= 0.05 or all(s.measured_drop > 0.05 for s in result.steps)


def _uniform_table(net):
    rows = [
        {"layer": t.fqn, "elements": t.numel, "sparsity": lv, "drop": lv**2 * (i + 1)}
        for i, t in enumerate(prunelab.targets(net))
        for lv in (0.25, 0.5, 0.75, 1.0)
    ]
    table = pd.DataFrame(rows)
    table.attrs.update(metric="accuracy", baseline=1.0)
    return table


@pytest.mark.parametrize("target", [0.3, 0.55, 0.8])
def test_sparsity_budget_met_exactly(target):
    net, _ = _seeded()
    recipe = solve(_uniform_table(net), target_sparsity=target, max_sparsity=1.0)
    masks = recipe.masks(net)
    total = sum(t.numel for t in prunelab.targets(net))
    assert abs(masks.sparsity() - target) * total <= len(recipe.layers)  # a weight per layer


def test_params_and_flops_budgets_met_exactly():
    net, data = _seeded()
    table = _uniform_table(net)
    dense = sum(p.numel() for p in net.parameters())
    recipe = solve(
        table, budget=Budget("params", dense // 2), model=net, data=data, max_sparsity=1.0
    )
    kept = dense - sum((~m).sum().item() for m in recipe.masks(net).values())
    assert abs(kept - dense // 2) <= len(recipe.layers)
    x = data[0][:1]
    stats = prunelab.analysis.model_stats(net, example_input=x)
    goal = stats["flops"] * 0.6
    recipe = solve(table, budget=Budget("flops", goal), model=net, data=data, max_sparsity=1.0)
    effective = prunelab.analysis.model_stats(net, recipe.masks(net), example_input=x)
    # FLOPs move in steps of 2 per weight (a multiply-add)
    assert abs(effective["effective_flops"] - goal) <= 2 * len(recipe.layers) + 1


def test_an_unreachable_budget_is_refused_saying_how_far_it_got():
    net, data = _seeded()
    with pytest.raises(ValueError, match="cannot meet the params budget"):
        solve(
            _uniform_table(net), budget=Budget("params", 10), model=net, data=data, max_sparsity=0.5
        )
    with pytest.raises(ValueError, match="unknown budget"):
        Budget("watts", 3)
    with pytest.raises(ValueError, match="exactly one budget"):
        solve(_uniform_table(net), target_sparsity=0.5, max_drop=0.1)


def test_speedup_budget_is_one_call_and_meets_the_profiles_latency():
    net, data = _seeded()
    profile = LatencyProfile(
        levels=(0.0, 0.5, 0.9),
        seconds={t.fqn: (1.0, 0.6, 0.2) for t in prunelab.targets(net)},
        dense_seconds=3.5,
        rest_seconds=0.5,
    )
    table = _uniform_table(net)
    with pytest.raises(ValueError, match="needs a channel recipe"):
        plan(table, Budget("speedup", 1.5), model=net, data=data)
    table.attrs.update(granularity="channel", prune_outputs=True)
    result = plan(
        table,
        Budget("speedup", 1.5),
        model=net,
        data=data,
        config=PlanConfig(evaluations=1, profile=profile, max_sparsity=0.9),
    )
    latency = 0.5 + sum(profile.layer_seconds(k, v) for k, v in result.recipe.layers.items())
    assert latency == pytest.approx(3.5 / 1.5, rel=1e-6)


def test_drop_budget_is_spent_exactly():
    net, _ = _seeded()
    table = _uniform_table(net)
    recipe = solve(table, max_drop=0.3, max_sparsity=1.0)
    assert predict_drop(table, recipe.layers) == pytest.approx(0.3, abs=1e-6)


def test_a_data_driven_recipe_is_measured_with_calibration():
    """Wanda's joint measurement calibrates on the table's samples (it used to be refused)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(64, 8)
    y = net(x).argmax(1)
    table = prunelab.sweeps.sensitivity(net, (x, y), strategy="wanda", sparsities=(0.3, 0.6))
    result = plan(table, 0.4, model=net, data=(x, y), config=PlanConfig(evaluations=1))
    assert result.measured_drop is not None
