"""The computations of lessons 5-8 (prunelab.teach): what each lesson claims holds on its sample."""

from __future__ import annotations

import pytest
import torch

import prunelab
from prunelab.teach import activations, recovery, sensitivity, speed


def _sample(spec: str):
    bundle = prunelab.zoo.load(spec)
    return bundle, prunelab.data.load(bundle.default_data, split="test")


@pytest.fixture(scope="module")
def mlp():
    return _sample(recovery.SAMPLE_MODEL)


def _unchanged(model: torch.nn.Module):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return lambda: all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sensitivity_names_the_layers_that_break_and_marks_the_choice():
    bundle, test = _sample(sensitivity.SAMPLE_MODEL)
    table = sensitivity.layer_sensitivity(bundle.model, test, sparsities=(0.5, 0.9), subset=200)
    assert set(table["sparsity"]) == {0.5, 0.9}
    at_90 = sensitivity.broken_layers(table, 0.88, tolerance=0.02)  # the nearest level: 90%
    assert list(at_90.columns) == ["layer", "elements", "drop", "broken"]
    assert at_90["broken"].any() and not at_90["broken"].all()  # layers differ
    assert at_90.set_index("layer")["broken"]["stem.0.weight"]  # the first conv is fragile
    assert (
        sensitivity.broken_layers(table, 0.5, tolerance=0.02)["broken"].sum()
        < at_90["broken"].sum()
    )
    fig = sensitivity.sensitivity_figure(table, 0.9, tolerance=0.05)
    lines = {(s.x0, s.y0) for s in fig.layout.shapes}
    assert (90.0, 0) in lines and any(y == pytest.approx(5.0) for _, y in lines)


def test_recovery_training_wins_back_what_one_shot_pruning_lost(mlp):
    bundle, test = mlp
    train = prunelab.data.load(bundle.default_data, split="train")
    same = _unchanged(bundle.model)
    result = recovery.recover(bundle.model, train, test, sparsity=0.9, epochs=1)
    assert same()
    assert result.sparsity == pytest.approx(0.9, abs=0.01)
    assert result.fine_tuned > result.one_shot + 0.1 and result.gradual > result.one_shot + 0.1
    assert result.one_shot == recovery.one_shot(bundle.model, test, sparsity=0.9)[1]
    gradual = result.histories["gradual"]["sparsity"]
    assert gradual.iloc[0] < 0.9 and gradual.iloc[-1] == pytest.approx(0.9, abs=0.01)
    assert len(result.histories["fine-tuned"]) == len(gradual) == result.steps
    bars = recovery.recovery_figure(result.accuracies(), dense=result.dense)
    assert list(bars.data[0].x) == ["one-shot", "fine-tuned", "gradual"]


def test_weight_zeros_are_fixed_activation_zeros_differ_per_input(mlp):
    bundle, test = mlp
    plain = activations.weight_vs_activation(bundle.model, test, weight_sparsity=0.5, threshold=0.0)
    assert plain.weight_sparsity == pytest.approx(0.5, abs=0.01)
    # no threshold: the only zeros between layers are ReLU's own, and nothing else changed
    assert plain.activation_sparsity == plain.natural_sparsity > 0
    assert plain.flowing.shape == (activations.IMAGES, 300)
    assert len({tuple(row.tolist()) for row in plain.flowing}) > 1  # each input its own zeros
    cut = activations.weight_vs_activation(bundle.model, test, weight_sparsity=0.5, threshold=0.5)
    assert cut.activation_sparsity > plain.activation_sparsity
    assert torch.equal(cut.weight_mask, plain.weight_mask)  # the threshold leaves weights alone
    assert (~cut.flowing >= ~plain.flowing).all()  # a zero stays a zero; more join it
    fig = activations.contrast_figure(cut)
    assert [trace.type for trace in fig.data] == ["heatmap", "heatmap"]


def test_speed_lesson_counts_bytes_and_measures_every_form(mlp):
    bundle, _ = mlp
    seen = speed.measure(
        bundle.model, sparsity=0.5, example_input=bundle.example_input(), repeats=3
    )
    sizes = seen.sizes
    assert next(iter(sizes)) == "dense" and sizes["masked"] == sizes["dense"]
    assert sizes["bitmask"] < sizes["dense"] < sizes["COO"]  # indices can cost more than zeros
    assert sizes["shrunk"] < sizes["bitmask"]
    params = seen.parameters()
    assert params["shrunk"] < params["masked"] < params["dense"]
    assert {"dense", "masked", "shrunk"} <= set(seen.report["variant"])
    assert all(", batch " in line and " ms, " in line for line in seen.verdicts())
    assert "CPU" in speed.two_four_note("cpu")
