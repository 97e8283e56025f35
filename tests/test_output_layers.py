"""Channel pruning leaves the model's output layers alone unless asked (issue 16)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cnn, make_mlp
from torch import nn

import prunelab
from prunelab.core.pruner import left_out
from prunelab.core.targets import output_layers
from prunelab.io import data, zoo
from prunelab.io.recipes import Recipe
from prunelab.sweeps import SensitivityConfig, estimate_sensitivity, sensitivity, solve


class _Residual(nn.Module):
    # the output is conv2's output plus conv1's: both reach it without another prunable layer
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        return self.conv2(y) + y


class _Functional(nn.Module):
    # the classifier's weight is used through F.linear, not by calling its module
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return F.linear(torch.relu(self.body(x)), self.head.weight).softmax(-1)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.b(self.a(x))


def test_output_layers_found_through_the_graph():
    assert output_layers(make_mlp(0)).fqns == ("4.weight",)
    assert output_layers(make_cnn(0)).fqns == ("7.weight",)
    assert output_layers(_Residual()).fqns == ("conv1.weight", "conv2.weight")
    assert output_layers(_Functional()).fqns == ("head.weight",)
    for name in ("digits-cnn", "digits-resnet", "sentiment-lstm"):
        found = output_layers(zoo.load(f"sample:{name}").model)
        assert found.fqns == ("fc.weight",) and found.how == "traced"


def test_untraceable_model_falls_back_to_its_last_layer_and_says_so():
    found = output_layers(_Untraceable())
    assert found.fqns == ("b.weight",)
    assert "could not be traced" in found.how
    reason = left_out(_Untraceable(), "weight-norm-channel", prunelab.targets(_Untraceable()))
    assert "could not be traced" in reason.reason


def test_digits_cnn_keeps_every_class_by_default():
    bundle = zoo.load("sample:digits-cnn")
    test = data.load(bundle.default_data)
    masks = prunelab.prune(bundle.model, "weight-norm-channel", sparsity=0.5)
    assert int(masks["fc.weight"].any(dim=1).sum()) == 10
    assert int(masks["conv1.weight"].flatten(1).any(dim=1).sum()) == 8
    accuracy = prunelab.evaluate(bundle.model, test, masks=masks)["accuracy"]
    assert accuracy > 0.8  # 86.7%; with the classifier pruned it was 53.1%

    explicit = prunelab.get_strategy("weight-norm-channel", prune_outputs=True)
    pruned = prunelab.prune(bundle.model, explicit, sparsity=0.5)
    assert int(pruned["fc.weight"].any(dim=1).sum()) == 5
    assert not bool(pruned.coupled["fc.bias"].all())  # the bias of removed rows goes too
    assert prunelab.evaluate(bundle.model, test, masks=pruned)["accuracy"] < 0.6


@pytest.mark.parametrize("options", [{"granularity": "channel"}, {}])
def test_every_output_channel_strategy_leaves_the_classifier(options):
    model = make_mlp(0)
    calibration = prunelab.Calibration(model, torch.randn(32, 12))
    for name in ("weight-norm-channel", "activation-norm-channel", "layer-magnitude", "random"):
        strategy = prunelab.get_strategy(name, **options)
        pruner = prunelab.Pruner(model, strategy, calibration=calibration)
        masks = pruner.masks(sparsity=0.5)
        if str(strategy.granularity) == "channel":
            assert pruner.left_out.fqns == ("4.weight",)
            assert (
                "4.weight" in pruner.left_out.reason and "prune_outputs" in pruner.left_out.reason
            )
            assert bool(masks["4.weight"].all())
            assert "4.weight" not in pruner.scores()
        else:
            assert pruner.left_out.fqns == ()
            assert not bool(masks["4.weight"].all())


def test_input_channel_and_unstructured_pruning_still_touch_the_classifier():
    model = make_mlp(0)
    for granularity in ("input-channel", "unstructured", "2:4"):
        strategy = prunelab.get_strategy("layer-magnitude", granularity=granularity)
        assert not bool(prunelab.Pruner(model, strategy).masks(sparsity=0.5)["4.weight"].all())


def test_naming_a_left_out_layer_is_an_error_not_a_silent_no_op():
    model = make_mlp(0)
    pruner = prunelab.Pruner(model, "weight-norm-channel")
    with pytest.raises(ValueError, match=r"4\.weight.*prune_outputs"):
        pruner.masks(sparsity=0.5, per_layer={"4.weight": 0.5})
    pruner.masks(sparsity=0.5, per_layer={"4.weight": 0.0})  # keeping it whole is fine
    with pytest.raises(ValueError, match=r"nothing to prune.*prune_outputs=True"):
        prunelab.Pruner(model, "weight-norm-channel", targets=["4.weight"])
    with pytest.raises(ValueError, match="prune_outputs must be True or False"):
        prunelab.get_strategy("weight-norm-channel", prune_outputs="yes")


def test_recipes_record_and_reapply_the_choice(tmp_path):
    model = make_cnn(0)
    for include in (False, True):
        strategy = prunelab.get_strategy("weight-norm-channel", prune_outputs=include)
        masks = prunelab.prune(model, strategy, sparsity=0.5)
        recipe = Recipe.from_masks(masks, strategy)
        path = tmp_path / f"r{include}.yaml"
        recipe.save(path)
        assert f"prune_outputs: {str(include).lower()}" in path.read_text()
        again = Recipe.load(path)
        assert again.prune_outputs is include
        assert again.build_strategy().prune_outputs is include
        reapplied = again.masks(model)
        assert all(torch.equal(masks[f], reapplied[f]) for f in masks)
    old = Recipe(strategy="weight-norm-channel", granularity="channel", layers={"7.weight": 0.5})
    with pytest.raises(ValueError, match="prune_outputs: true"):
        old.masks(model)


def test_sensitivity_and_solve_leave_the_outputs_out():
    model = make_mlp(0)
    inputs = torch.randn(40, 12)
    labelled = (inputs, model(inputs).argmax(1))
    table = sensitivity(model, labelled, strategy="weight-norm-channel", sparsities=[0.25, 0.5])
    assert set(table["layer"]) == {"0.weight", "2.weight"}
    assert table.attrs["left_out"] == ["4.weight"] and not table.attrs["prune_outputs"]
    estimate = estimate_sensitivity(
        model, inputs, sparsities=[0.25, 0.5], strategy="weight-norm-channel"
    )
    assert estimate.evaluations == len(table) == 4
    recipe = solve(table, target_sparsity=0.2)
    assert "4.weight" not in recipe.layers and not recipe.prune_outputs
    assert "4.weight" in recipe.provenance.left_out
    recipe.masks(model)  # re-applies

    included = prunelab.get_strategy("weight-norm-channel", prune_outputs=True)
    table = sensitivity(model, labelled, strategy=included, sparsities=[0.5])
    assert set(table["layer"]) == {"0.weight", "2.weight", "4.weight"}
    assert table.attrs["left_out"] == [] and solve(table, target_sparsity=0.2).prune_outputs
    with pytest.raises(ValueError, match="no layer to analyse"):
        sensitivity(
            model,
            labelled,
            strategy="weight-norm-channel",
            config=SensitivityConfig(layers=["4.weight"]),
        )


def test_cli_leaves_the_classifier_out_and_includes_it_on_request(capsys):
    from prunelab.cli.commands import main

    command = ["prune", "sample:digits-cnn", "--strategy", "weight-norm-channel"]
    assert main([*command, "--sparsity", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Left out fc.weight" in out and "--prune-outputs" in out
    assert "86.67%" in out
    assert main([*command, "--sparsity", "0.5", "--prune-outputs"]) == 0
    out = capsys.readouterr().out
    assert "Left out" not in out and "53.11%" in out


def test_the_estimate_counts_the_layers_sensitivity_analyses():
    # n:m cannot prune a layer whose inputs do not divide into groups of 4 (the first here):
    # the estimate counted it anyway, and promised more evaluations than the run makes
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    data = (torch.randn(20, 6), torch.randint(0, 3, (20,)))
    plan = prunelab.estimate_sensitivity(net, data, sparsities=[0.5], strategy="n:m")
    table = prunelab.sensitivity(net, data, sparsities=[0.5], strategy="n:m")
    assert plan.evaluations == len(table) == 1
