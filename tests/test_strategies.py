"""The registry, custom strategies, and the behaviour of each built-in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import prunelab
from prunelab.core.granularity import NM
from prunelab.core.options import HIDDEN, Option
from prunelab.core.strategies import _REGISTRY, strategy_options
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
        "criterion",
        "scope",
        "granularity",
        "needs",
        "by threshold",
        "options",
    ]
    rows = table.set_index("name")
    assert rows.loc["weight-norm-channel", "granularity"] == "channel"
    assert rows.loc["global-magnitude", ["criterion", "scope"]].tolist() == ["magnitude", "global"]
    assert rows.loc["weight-norm-channel", "options"] == "granularity, scope, p"
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


# -- scope is an option; the built-in names are presets ---------------------------------------


def test_scope_is_an_option_and_the_classic_names_are_presets():
    for criterion in ("magnitude", "magnitude-gradient", "activation-magnitude"):
        for scope in ("layer", "global"):
            made = prunelab.get_strategy(criterion, scope=scope)
            preset = prunelab.get_strategy(f"{scope}-{criterion}")
            assert made == preset and made.scope == scope
            assert made.name == preset.name == f"{scope}-{criterion}"  # recipes keep the name
        assert criterion not in prunelab.list_strategies()  # listed through its presets
    threshold = prunelab.get_strategy("threshold")
    assert threshold.scope == "global" and threshold.name == "threshold"
    channel = prunelab.get_strategy("global-magnitude", granularity="channel")
    assert (channel.name, channel.scope, str(channel.granularity)) == (
        "global-magnitude",
        "global",
        "channel",
    )
    assert prunelab.get_strategy("weight-norm-channel", scope="global").scope == "global"


def test_a_preset_refuses_a_scope_it_does_not_have():
    with pytest.raises(ValueError, match="use 'magnitude' with scope='layer'"):
        prunelab.get_strategy("global-magnitude", scope="layer")
    assert prunelab.get_strategy("global-magnitude", scope="global").scope == "global"
    with pytest.raises(ValueError, match=r"scope must be one of \('layer', 'global'\)"):
        prunelab.get_strategy("magnitude", scope="model")


def _digest(masks: prunelab.Masks) -> str:
    h = hashlib.sha256()
    for tensors in (masks, masks.coupled):
        for fqn in sorted(tensors):
            h.update(fqn.encode())
            h.update(np.packbits(tensors[fqn].flatten().numpy()).tobytes())
    return h.hexdigest()


def _requests_digest(name: str, model, data) -> str:
    """Masks of ``name`` with every granularity, by sparsity, threshold and per layer."""
    calibration = prunelab.Calibration(model, data)
    default = prunelab.get_strategy(name)
    variants: list[dict] = [{}]
    if not isinstance(default.granularity, NM):
        variants += [{"granularity": g} for g in ("unstructured", "channel", "input-channel")]
        variants += [{"granularity": "2:4"}, {"granularity": "channel", "prune_outputs": True}]
    h = hashlib.sha256()
    for options in variants:
        strategy = prunelab.get_strategy(name, **options)
        try:
            pruner = prunelab.Pruner(
                model, strategy, calibration=calibration if strategy.needs else None, seed=3
            )
        except ValueError as exc:
            h.update(str(exc).encode())
            continue
        fqns = [t.fqn for t in pruner.targets if t.fqn not in pruner.left_out.fqns]
        requests: list[dict] = [{}]
        if strategy.fixed_sparsity is None:
            requests = [{"sparsity": 0.3}, {"sparsity": 0.7}]
            requests.append({"sparsity": 0.5, "per_layer": {fqns[0]: 0.9}})
            if strategy.by_threshold:
                scores = torch.cat([s.flatten() for s in pruner.scores().values()])
                requests.append({"threshold": float(scores.median())})
        for request in requests:
            h.update(_digest(pruner.masks(**request)).encode())
    return h.hexdigest()[:16]


# Recorded with the six scope classes (GlobalMagnitude, LayerMagnitude, ...) and
# ThresholdStrategy that presets replaced: every built-in name gives the masks it gave then.
BEFORE_PRESETS = {
    "random": ("7d75806189134d68", "e6cfcc214b6e6235"),
    "global-magnitude": ("03e13d3f16fd534d", "949084c6cdef24ac"),
    "layer-magnitude": ("f195f69a784a5e9b", "46e8f4bcc3a994f0"),
    "global-magnitude-gradient": ("419f506e8c2731db", "9ba30a80ef4bb412"),
    "layer-magnitude-gradient": ("35164a37c86d5288", "c93a0156f7a8e866"),
    "global-activation-magnitude": ("ecff218527546ff3", "750bc2b9f8557d73"),
    "layer-activation-magnitude": ("0f4fc2c3a4b24f1d", "a736eddfd1599411"),
    "weight-norm-channel": ("9dfcfd7ef5e59b56", "517fd7519d413e95"),
    "activation-norm-channel": ("31bfbc8bb297b774", "96082e3704ed4911"),
    "threshold": ("03e13d3f16fd534d", "949084c6cdef24ac"),
    "n:m": ("4ffe9060ec1e3760", "2a9cf5a19634b183"),
}


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_name_gives_the_masks_it_gave_as_a_class(name, mlp_data, cnn_data):
    got = (
        _requests_digest(name, make_mlp(), mlp_data),
        _requests_digest(name, make_cnn(), cnn_data),
    )
    assert got == BEFORE_PRESETS[name]


def test_layer_and_global_scope_on_a_seeded_model():
    model = make_mlp(seed=4)
    layer = prunelab.Pruner(model, prunelab.get_strategy("magnitude")).masks(sparsity=0.6)
    whole = prunelab.Pruner(model, prunelab.get_strategy("magnitude", scope="global"))
    global_ = whole.masks(sparsity=0.6)
    weights = {f: model.get_parameter(f).detach().abs() for f in layer}
    for fqn, weight in weights.items():  # layerwise: torch's l1_unstructured, layer by layer
        pruned = round(0.6 * weight.numel())
        assert int((~layer[fqn]).sum()) == pruned
        assert weight[~layer[fqn]].max() <= weight[layer[fqn]].min()
    every = torch.cat([w.flatten() for w in weights.values()])
    cut = every.sort().values[round(0.6 * every.numel()) - 1]
    for fqn, weight in weights.items():  # global: one cut-off for all layers
        assert torch.equal(global_[fqn], weight > cut)
    assert whole.implied_thresholds(0.6) == dict.fromkeys(weights, pytest.approx(float(cut)))


def test_selects_by_says_how_masks_are_asked_for():
    assert prunelab.get_strategy("layer-magnitude").selects_by == ("sparsity", "threshold")
    assert prunelab.get_strategy("random").selects_by == ("sparsity",)
    assert prunelab.get_strategy("n:m").selects_by == ()
    assert prunelab.get_strategy("layer-magnitude", granularity="2:4").selects_by == ()


# -- options described for controls ------------------------------------------------------------


def _described(name: str) -> list[tuple[str, object, tuple]]:
    return [(o.name, o.default, o.choices) for o in strategy_options(name)]


def test_each_built_in_describes_the_options_left_to_choose():
    granularities = ("unstructured", "channel", "input-channel", "2:4", "1:4", "4:8")
    scopes = ("layer", "global")
    assert _described("global-magnitude") == [("granularity", "unstructured", granularities)]
    assert _described("random") == [
        ("granularity", "unstructured", granularities),
        ("scope", "layer", scopes),
    ]
    assert _described("weight-norm-channel") == [
        ("granularity", "channel", granularities),
        ("scope", "layer", scopes),
        ("p", 1, (1, 2)),
    ]
    assert _described("n:m") == [("granularity", "2:4", ("2:4", "1:4", "4:8"))]
    norm = strategy_options("weight-norm-channel")[-1]
    assert (norm.label, norm.show(2)) == ("Norm", "L2")
    assert prunelab.get_strategy("random").seeded
    assert not prunelab.get_strategy("layer-magnitude").seeded
    assert prunelab.get_strategy("threshold").magnitude_scores
    assert not prunelab.get_strategy("weight-norm-channel").magnitude_scores


def test_a_user_strategy_describes_its_own_options(registry_sandbox):
    @prunelab.register_strategy("power")
    @dataclass(frozen=True)
    class Power(prunelab.ScoredStrategy):
        """Prune the smallest |w| ** k."""

        granularity: str = "channel"  # redeclared: still the granularity menu
        k: float = field(default=2.0, metadata={"option": Option("Power k", choices=(1.0, 2.0))})
        shift: float = 0.0  # no description: a number box named after the field
        inverted: bool = False
        note: str = field(default="", metadata=HIDDEN)  # set in code only

        def scores(self, layer):
            return (layer.weight.abs() + self.shift) ** self.k

    options = {o.name: o for o in strategy_options("power")}
    assert list(options) == ["granularity", "scope", "k", "shift", "inverted"]
    assert options["granularity"].label == "Granularity" and options["granularity"].choices
    assert options["granularity"].default == "channel"
    assert (options["k"].label, options["k"].default) == ("Power k", 2.0)
    assert (options["shift"].label, options["shift"].choices) == ("Shift", ())
    assert options["inverted"].default is False
    # scope comes with every scored strategy, a user's too
    masks = prunelab.Pruner(
        make_mlp(),
        prunelab.get_strategy("power", k=1.0, scope="global", granularity="unstructured"),
    ).masks(sparsity=0.5)
    reference = prunelab.prune(make_mlp(), "global-magnitude", sparsity=0.5)
    assert all(torch.equal(masks[f], reference[f]) for f in masks)
    assert prunelab.get_strategy("power", scope="global").name == "power"


def test_menus_offer_only_the_values_a_strategy_is_built_with(registry_sandbox):
    @dataclass(frozen=True)
    class Channels(prunelab.ScoredStrategy):
        """Whole channels: refuses the other granularities when built."""

        granularity: str = "channel"
        p: float = 1  # a float written as an int: a float box, not an int one
        allowed = ("channel", "input-channel")

        def __post_init__(self):
            super().__post_init__()
            if str(self.granularity) not in self.allowed:
                raise ValueError(f"channels only, got {self.granularity}")

        def scores(self, layer):
            return layer.weight.abs() ** self.p

    prunelab.register_strategy("channels")(Channels)
    options = {o.name: o for o in strategy_options("channels")}
    assert options["granularity"].choices == ("channel", "input-channel")
    assert options["p"].default == 1.0 and isinstance(options["p"].default, float)

    @prunelab.register_strategy("outputs")
    @dataclass(frozen=True)
    class Outputs(Channels):
        """Output channels only: a menu of one value is no choice, the option is fixed."""

        allowed = ("channel",)

    assert [o.name for o in strategy_options("outputs")] == ["scope", "p"]
    assert prunelab.strategy_table().set_index("name").loc["outputs", "granularity"] == "channel"


def test_strategies_without_dataclass_fields_have_no_options(registry_sandbox):
    @prunelab.register_strategy("plain")
    class Plain(prunelab.LayerwiseStrategy):
        """No options."""

        def layer_masks(self, layer, sparsity):
            return torch.ones(layer.weight.shape, dtype=torch.bool)

    assert strategy_options("plain") == ()
    assert prunelab.strategy_table().set_index("name").loc["plain", "options"] == "-"


def test_menu_order_does_not_depend_on_which_module_is_imported_first():
    # heads, head_scores and sparsegpt_strategy import one another: whichever a program
    # imports first used to register first, and moved in the app's menus
    import subprocess
    import sys

    script = (
        "import importlib, sys; importlib.import_module(sys.argv[1]); "
        "from prunelab.core.strategies import list_strategies; print(list_strategies())"
    )
    modules = (
        "prunelab.core.heads",
        "prunelab.core.head_scores",
        "prunelab.core.sparsegpt_strategy",
    )
    orders = {
        subprocess.run(
            [sys.executable, "-c", script, module], capture_output=True, text=True, check=True
        ).stdout
        for module in modules
    }
    assert len(orders) == 1, orders
    assert orders.pop().strip().endswith("'head-magnitude', 'head-taylor', 'sparsegpt']")
