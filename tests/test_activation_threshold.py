"""Activation thresholding at inference: the requested zero fraction, a copy that is hooked
(never the given model), an exportable wrapper, and its effect on the outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.activations import (
    ThresholdActivation,
    activation_sparsity_effect,
    activation_threshold,
)
from prunelab.core.apply import copy_model
from tests.conftest import assert_unchanged, make_lstm, make_mlp, snapshot


def test_threshold_gives_the_requested_zero_fraction_on_a_crafted_input():
    # magnitudes 0.00, 0.01, ..., 0.99 with alternating signs: |x| < t for exactly 100*t values
    values = torch.arange(100) / 100 * torch.tensor([1.0, -1.0]).repeat(50)
    model = nn.Sequential(nn.Identity(), nn.Identity())
    for threshold, zeros in ((0.0, 1), (0.25, 25), (0.5, 50), (1.0, 100)):
        with activation_threshold(model, ["0"], threshold) as run:
            out = run.model(values[torch.randperm(100)].view(4, 25))
        assert int((out == 0).sum()) == zeros
        assert run.sparsity() == pytest.approx(zeros / 100)
        assert run.natural_sparsity() == pytest.approx(0.01)  # the one exact zero
        kept = out[out != 0].abs()
        assert kept.numel() == 0 or float(kept.min()) >= threshold


def test_the_given_model_is_never_hooked_and_the_copy_is_released(mlp_data):
    model = make_mlp().eval()
    before = snapshot(model)
    x = mlp_data[0]
    with activation_threshold(model, ["1", "4:input"], 0.3) as run:
        assert_unchanged(model, before)  # hooks sit on the copy
        assert len(run.model[1]._forward_hooks) == 1
        assert len(run.model[4]._forward_pre_hooks) == 1
        thresholded = run.model(x)
    assert len(run.model[1]._forward_hooks) == 0 and len(run.model[4]._forward_pre_hooks) == 0
    assert not torch.equal(thresholded, model(x))
    table = run.per_layer().set_index("layer")
    assert table.loc["1", "sparsity"] > table.loc["1", "natural_sparsity"] > 0
    with pytest.raises(RuntimeError, match="boom"), activation_threshold(model, ["1"], 0.3) as run:
        raise RuntimeError("boom")
    assert len(run.model[1]._forward_hooks) == 0
    assert_unchanged(model, before)


def test_wrapper_matches_the_context_manager_and_handles_tuple_outputs(mlp_data):
    model = make_mlp().eval()
    x = mlp_data[0]
    with activation_threshold(model, ["1"], 0.2) as run:
        expected = run.model(x)
    wrapped = copy_model(model)
    wrapped[1] = ThresholdActivation(wrapped[1], threshold=0.2)
    assert torch.equal(wrapped(x), expected)
    assert "threshold=0.2" in repr(wrapped[1])

    lstm = make_lstm().eval()
    tokens = torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(0))
    wrapper = ThresholdActivation(lstm.lstm, threshold=0.1)
    output, (hidden, _) = wrapper(lstm.embed(tokens))
    assert output.shape == (3, 5, 12) and bool(((output == 0) | (output.abs() >= 0.1)).all())
    assert hidden.shape == (2, 3, 12)


def test_effect_compares_with_the_dense_model():
    model = make_mlp().eval()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(64, 12, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    before = snapshot(model)
    none = activation_sparsity_effect(model, (x, y), ["1", "3"], 0.0)
    assert none["agreement"] == 1.0 and none["kl"] == pytest.approx(0.0, abs=1e-7)
    assert none["sparsity"] == none["natural_sparsity"] > 0
    assert none["accuracy"] == none["dense_accuracy"]
    strong = activation_sparsity_effect(model, (x, y), ["1", "3"], 0.5)
    assert strong["sparsity"] > none["sparsity"] and strong["kl"] > 0
    everything = activation_sparsity_effect(model, x, "3", 1e9)
    assert everything["sparsity"] == 1.0 and "accuracy" not in everything
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.6)
    masked = activation_sparsity_effect(model, (x, y), ["1"], 0.0, masks=masks)
    reference = prunelab.evaluate(model, (x, y), masks=masks)
    assert masked["accuracy"] == reference["accuracy"]
    assert masked["agreement"] == reference["agreement"]
    assert masked["kl"] == pytest.approx(reference["kl"], rel=1e-4)
    assert_unchanged(model, before)


def test_bad_thresholds_and_layers_give_clear_errors():
    model = make_mlp().eval()
    for bad, error in ((-0.1, ValueError), (float("nan"), ValueError), (True, TypeError)):
        with pytest.raises(error, match="threshold must be"), activation_threshold(model, "1", bad):
            pass
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['relu'\]"):
        activation_sparsity_effect(model, torch.zeros(2, 12), ["relu"], 0.1)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        ThresholdActivation(torch.relu, threshold=0.1)
    with activation_threshold(model, ["1"], 0.1) as run:
        with pytest.raises(ValueError, match="run data through"):
            run.sparsity()
        run.model(torch.zeros(2, 12))
        with pytest.raises(ValueError, match="not thresholded here"):
            run.sparsity("3")
