"""The registry, custom strategies, and the behaviour of each built-in."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import prunelab
from prunelab.core.strategies import _REGISTRY
from tests.conftest import make_cnn, make_lstm, make_mlp

BUILT_IN = [
    "random",
    "global-magnitude",
    "layer-magnitude",
    "global-magnitude-gradient",
    "layer-magnitude-gradient",
    "global-activation-magnitude",
    "layer-activation-magnitude",
    "weight-norm-channel",
    "activation-norm-channel",
    "threshold",
    "n:m",
]


@pytest.fixture
def registry_sandbox():
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_built_ins_are_registered_in_order():
    assert prunelab.list_strategies()[: len(BUILT_IN)] == BUILT_IN
    table = prunelab.strategy_table()
    assert list(table.columns) == [
        "name",
        "description",
        "scope",
        "granularity",
        "needs",
        "by threshold",
    ]
    assert table.set_index("name").loc["weight-norm-channel", "granularity"] == "channel"
    assert table["description"].str.len().gt(10).all()


def test_user_layerwise_strategy_registered_and_used_through_pruner(registry_sandbox):
    @prunelab.register_strategy("keep-positive")
    class KeepPositive(prunelab.LayerwiseStrategy):
        """Prune the most negative weights first."""

        def layer_masks(self, layer, sparsity):
            flat = layer.weight.flatten()
            k = round(sparsity * flat.numel())
            keep = torch.ones_like(flat, dtype=torch.bool)
            keep[flat.argsort()[:k]] = False
            return keep.reshape(layer.weight.shape)

    assert "keep-positive" in prunelab.list_strategies()
    assert prunelab.strategy_table().iloc[-1]["description"].startswith("Prune the most negative")
    model = make_mlp()
    masks = prunelab.Pruner(model, "keep-positive").masks(sparsity=0.25)
    weight = model[0].weight.detach()
    assert masks.sparsity() == pytest.approx(0.25, abs=0.01)
    assert weight[~masks["0.weight"]].max() <= weight[masks["0.weight"]].min()


def test_user_global_strategy(registry_sandbox):
    @prunelab.register_strategy("first-layers-first")
    class FirstLayersFirst(prunelab.GlobalStrategy):
        """Empty layers in order until the budget is spent."""

        def model_masks(self, layers, sparsity):
            budget = round(sparsity * sum(layer.weight.numel() for layer in layers))
            out = {}
            for layer in layers:
                n = layer.weight.numel()
                keep = torch.ones(n, dtype=torch.bool)
                keep[: min(budget, n)] = False
                budget -= min(budget, n)
                out[layer.fqn] = keep.reshape(layer.weight.shape)
            return out

    masks = prunelab.Pruner(make_mlp(), "first-layers-first").masks(sparsity=0.5)
    assert masks.per_layer()["kept"].tolist() == [192 - 172, 128, 24]  # 172 = half of 344


def test_user_scored_strategy_gets_every_scope_and_granularity(registry_sandbox):
    @prunelab.register_strategy("squared")
    @dataclass(frozen=True)
    class Squared(prunelab.ScoredStrategy):
        """Prune the smallest w^2."""

        def scores(self, layer):
            return layer.weight.square()

    model = make_cnn()
    ours = prunelab.Pruner(model, prunelab.get_strategy("squared", granularity="channel"))
    reference = prunelab.Pruner(
        model, prunelab.get_strategy("layer-magnitude", granularity="channel")
    )
    # sum of w^2 and sum of |w| rank channels differently, but both keep whole channels
    masks = ours.masks(sparsity=0.5)
    assert set(masks.coupled) == {"0.bias", "3.bias", "7.bias"}
    assert reference.masks(sparsity=0.5).sparsity() == pytest.approx(masks.sparsity())


def test_custom_mask_of_the_wrong_shape_is_reported(registry_sandbox):
    @prunelab.register_strategy("broken")
    class Broken(prunelab.LayerwiseStrategy):
        """Returns a wrong shape."""

        def layer_masks(self, layer, sparsity):
            return torch.ones(3, dtype=torch.bool)

    with pytest.raises(ValueError, match=r"returned shape \(3,\) for '0\.weight'"):
        prunelab.Pruner(make_mlp(), "broken").masks(sparsity=0.5)


def test_duplicate_names_need_replace(registry_sandbox):
    class Dup(prunelab.LayerwiseStrategy):
        """dup"""

    with pytest.raises(ValueError, match="replace=True"):
        prunelab.register_strategy("layer-magnitude")(Dup)
    prunelab.register_strategy("layer-magnitude", replace=True)(Dup)
    assert isinstance(prunelab.get_strategy("layer-magnitude"), Dup)


def test_register_refuses_non_strategies():
    with pytest.raises(TypeError, match="Strategy subclasses"):
        prunelab.register_strategy("x")(object)


def test_gradient_criterion_prefers_weights_the_loss_depends_on(mlp_data):
    model = make_mlp()
    cal = prunelab.Calibration(model, mlp_data)
    pruner = prunelab.Pruner(model, "layer-magnitude-gradient", calibration=cal)
    scores = pruner.scores()["4.weight"]
    expected = (model[4].weight.detach() * cal.gradient("4.weight")).abs()
    assert torch.allclose(scores, expected)


def test_global_and_layer_scopes_differ():
    model = make_mlp()
    with torch.no_grad():
        model[0].weight.mul_(100)  # one layer with much larger weights
    global_ = prunelab.prune(model, "global-magnitude", sparsity=0.5).per_layer()
    layer = prunelab.prune(model, "layer-magnitude", sparsity=0.5).per_layer()
    # the 172 pruned (half of 344) are all of layers 2 and 4 (152) plus 20 of layer 0
    assert global_["kept"].tolist() == [192 - 20, 0, 0]
    assert layer["sparsity"].round(2).tolist() == [0.5, 0.5, 0.5]


def test_activation_norm_channel_prunes_quiet_channels(mlp_data):
    model = make_mlp()
    with torch.no_grad():
        model[0].weight[:4] *= 1e-3  # channels 0-3 barely respond
        model[0].bias[:4] = 0
    cal = prunelab.Calibration(model, mlp_data)
    masks = prunelab.Pruner(model, "activation-norm-channel", calibration=cal).masks(sparsity=0.25)
    kept_channels = masks["0.weight"].all(dim=1)
    assert not kept_channels[:4].any() and kept_channels[4:].all()


def test_pruner_scores_are_channel_scores_for_channel_strategies():
    pruner = prunelab.Pruner(make_cnn(), prunelab.get_strategy("weight-norm-channel", p=2))
    scores = pruner.scores()
    weight = make_cnn()[3].weight.detach()
    assert torch.allclose(scores["3.weight"], weight.flatten(1).norm(dim=1))


@pytest.mark.parametrize(
    ("strategy", "pruned"),
    [
        ("layer-activation-magnitude", ["lstm.weight_ih_l0", "head.weight"]),
        ("global-activation-magnitude", ["lstm.weight_ih_l0", "head.weight"]),
        # its one supported layer is the head: kept whole by default (see test_output_layers)
        (prunelab.get_strategy("activation-norm-channel", prune_outputs=True), ["head.weight"]),
        (
            "layer-magnitude",
            [
                "lstm.weight_ih_l0",
                "lstm.weight_hh_l0",
                "lstm.weight_ih_l1",
                "lstm.weight_hh_l1",
                "head.weight",
            ],
        ),
    ],
)
def test_default_layers_are_the_ones_the_strategy_can_prune(strategy, pruned):
    # the gates of an LSTM are internal to it: activation statistics see only the first
    # layer's input, so activation strategies leave the other recurrent weights out
    model = make_lstm()
    calibration = prunelab.Calibration(model, torch.randint(0, 20, (8, 6)))
    pruner = prunelab.Pruner(model, strategy, calibration=calibration)
    assert [t.fqn for t in pruner.targets] == pruned
    assert pruner.masks(sparsity=0.5).sparsity() == pytest.approx(0.5, abs=0.05)


def test_unsupported_says_why_and_an_explicit_choice_still_fails_clearly():
    model = make_lstm()
    strategy = prunelab.get_strategy("activation-norm-channel")
    hh = next(t for t in prunelab.targets(model) if t.fqn == "lstm.weight_hh_l0")
    assert "internal to its LSTM module" in strategy.unsupported(hh)
    calibration = prunelab.Calibration(model, torch.randint(0, 20, (8, 6)))
    with pytest.raises(ValueError, match="internal to a LSTM"):
        prunelab.Pruner(model, strategy, calibration=calibration, targets=[hh.fqn])


def test_n_m_leaves_out_layers_whose_inputs_do_not_divide():
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 2))
    pruner = prunelab.Pruner(model, "n:m")
    assert [t.fqn for t in pruner.targets] == ["1.weight"]
    with pytest.raises(ValueError, match="none of the 1 layer"):
        prunelab.Pruner(torch.nn.Linear(6, 2), "n:m")


def test_sensitivity_defaults_to_the_layers_the_strategy_can_prune():
    model = make_lstm()
    tokens = torch.randint(0, 20, (8, 6))
    table = prunelab.sensitivity(
        model,
        (tokens, torch.randint(0, 2, (8,))),
        strategy="layer-activation-magnitude",
        sparsities=[0.5],
    )
    assert list(table["layer"]) == ["lstm.weight_ih_l0", "head.weight"]
