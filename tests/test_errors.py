"""Bad input gets a clear error that says what was wrong and what is accepted."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import prunelab
from tests.conftest import make_cnn, make_mlp


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_sparsity_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity=bad)


def test_sparsity_of_the_wrong_type():
    with pytest.raises(TypeError, match="number"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity="half")


def test_both_sparsity_and_threshold():
    with pytest.raises(ValueError, match="either sparsity or threshold"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity=0.5, threshold=0.1)


def test_neither_sparsity_nor_threshold():
    with pytest.raises(ValueError, match="give a sparsity"):
        prunelab.prune(make_mlp(), "layer-magnitude")


def test_non_finite_threshold():
    with pytest.raises(ValueError, match="finite"):
        prunelab.prune(make_mlp(), "threshold", threshold=math.inf)


def test_threshold_for_a_strategy_that_cannot_use_one():
    with pytest.raises(ValueError, match="does not select by threshold"):
        prunelab.prune(make_mlp(), "random", threshold=0.1)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: random, global-magnitude"):
        prunelab.get_strategy("magnitude-ish")


def test_bad_strategy_option_lists_accepted_ones():
    with pytest.raises(ValueError, match="accepted: granularity, p"):
        prunelab.get_strategy("weight-norm-channel", q=3)


@pytest.mark.parametrize(
    "strategy",
    [
        "global-magnitude-gradient",
        "layer-magnitude-gradient",
        "global-activation-magnitude",
        "layer-activation-magnitude",
        "activation-norm-channel",
    ],
)
def test_data_driven_strategy_without_calibration(strategy):
    with pytest.raises(ValueError, match="needs calibration data"):
        prunelab.Pruner(make_mlp(), strategy)


def test_calibration_for_another_model(mlp_data):
    cal = prunelab.Calibration(make_mlp(), mlp_data)
    with pytest.raises(ValueError, match="different model"):
        prunelab.Pruner(make_mlp(), "layer-magnitude-gradient", calibration=cal)


def test_pattern_matching_no_target_lists_available():
    with pytest.raises(ValueError, match=r"matches no prunable tensor; available: 0\.weight"):
        prunelab.targets(make_mlp(), include="features.*")
    with pytest.raises(ValueError, match="matches no prunable tensor"):
        prunelab.Pruner(make_mlp(), "layer-magnitude", targets=["nope.weight"])


def test_model_without_prunable_tensors():
    with pytest.raises(ValueError, match="no prunable tensors"):
        prunelab.prune(
            nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "global-magnitude", sparsity=0.5
        )


def test_not_a_model():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        prunelab.targets({"weight": torch.ones(2, 2)})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_named(value):
    model = make_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = value
    with pytest.raises(ValueError, match=r"2\.weight has 1 NaN/inf"):
        prunelab.Pruner(model, "global-magnitude")


@pytest.mark.parametrize("pattern", ["4:4", "5:4", "0:4"])
def test_nm_with_n_not_below_m(pattern):
    with pytest.raises(ValueError, match="0 < N < M"):
        prunelab.get_strategy("n:m", granularity=pattern)


def test_nm_on_a_dimension_not_divisible_by_m():
    # chosen explicitly, the layer is an error; by default it is left out (it cannot be pruned)
    with pytest.raises(ValueError, match=r"0\.weight has 3 inputs \(not divisible by 4\)"):
        prunelab.Pruner(make_cnn(), "n:m", targets=["0.weight"])
    assert "0.weight" not in [t.fqn for t in prunelab.Pruner(make_cnn(), "n:m").targets]


def test_nm_with_a_sparsity_it_cannot_give():
    pruner = prunelab.Pruner(make_mlp(), "n:m")
    with pytest.raises(ValueError, match=r"pattern gives sparsity 0\.5"):
        pruner.masks(sparsity=0.7)
    assert pruner.masks(sparsity=0.5).sparsity() == 0.5


def test_unknown_granularity():
    with pytest.raises(ValueError, match="accepted: unstructured, channel, input-channel"):
        prunelab.get_strategy("layer-magnitude", granularity="rows")


def test_per_layer_naming_a_non_target():
    pruner = prunelab.Pruner(make_mlp(), "layer-magnitude")
    with pytest.raises(ValueError, match="not targets of this pruner"):
        pruner.masks(sparsity=0.5, per_layer={"0.bias": 0.5})
    with pytest.raises(ValueError, match=r"sparsity for '0\.weight' must be in \[0, 1\]"):
        pruner.masks(sparsity=0.5, per_layer={"0.weight": 2.0})


def test_activation_norm_on_elements_is_refused(mlp_data):
    model = make_mlp()
    cal = prunelab.Calibration(model, mlp_data)
    strategy = prunelab.get_strategy("activation-norm-channel", granularity="unstructured")
    with pytest.raises(ValueError, match="scores whole channels"):
        prunelab.Pruner(model, strategy, calibration=cal)


def test_empty_calibration_data():
    cal = prunelab.Calibration(make_mlp(), [])
    with pytest.raises(ValueError, match="empty"):
        cal.input_norms()


def test_calibration_data_of_the_wrong_kind():
    cal = prunelab.Calibration(make_mlp(), 42)
    with pytest.raises(TypeError, match="data must be"):
        cal.input_norms()
