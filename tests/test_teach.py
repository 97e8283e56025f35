"""The teaching computations behind Learn lessons 1-4 (prunelab.teach): what the lessons and
the concept notebooks show is what the engine computes."""

from __future__ import annotations

import pytest
import torch

from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.teach import criteria, masks, patterns, scope


@pytest.fixture(scope="module")
def digits():
    bundle = zoo.load("sample:digits-cnn")
    return bundle, data_lib.load(bundle.default_data, split="test")


def test_toy_layer_is_seeded_and_leaves_the_global_random_state():
    state = torch.random.get_rng_state()
    first, second = masks.toy_layer(), masks.toy_layer()
    assert torch.equal(first[0].weight, second[0].weight)
    assert not torch.equal(first[0].weight, masks.toy_layer(seed=1)[0].weight)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_toy_mask_keeps_the_largest_weights():
    layer = masks.toy_layer()
    mask = masks.toy_mask(layer, 0.75)
    assert mask.shape == (16, 32) and (~mask).sum() == 384
    magnitude = layer[0].weight.detach().abs()
    assert magnitude[mask].min() >= magnitude[~mask].max()


def test_gains_size_and_flops_fall_with_sparsity_and_the_metric_is_the_cost(digits):
    bundle, data = digits
    table = masks.gains(bundle.model, data, example_input=bundle.example_input())
    assert table["requested"].tolist() == list(masks.LEVELS)
    assert table.loc[0, "size"] == 1 and table.loc[0, "flops"] == 1
    assert table["size"].is_monotonic_decreasing and table["flops"].is_monotonic_decreasing
    assert masks.shown_metric(table) == "accuracy"
    assert table["accuracy"].iloc[-1] < table["accuracy"].iloc[0] - 0.5
    fig = masks.gains_figure(table, marked=0.35)
    assert [t.name for t in fig.data] == [
        "stored size (sparse format)",
        "effective FLOPs",
        "accuracy",
    ]
    assert [s.x0 for s in fig.layout.shapes] == [35.0]
    bare = masks.gains(bundle.model, example_input=bundle.example_input(), levels=[0.0, 0.5])
    assert "accuracy" not in bare and len(masks.gains_figure(bare).data) == 2


@pytest.mark.parametrize(("sparsity", "nm"), [(0.5, "2:4"), (0.3, "3:4"), (0.9, "1:4")])
def test_patterns_reach_the_sparsity_where_they_can(sparsity, nm):
    layer = masks.toy_layer()
    found = patterns.pattern_masks(layer, sparsity)
    assert list(found) == ["unstructured", "channel", nm]
    table = patterns.pattern_table(layer[0].weight, found, sparsity).set_index("pattern")
    assert table.loc["unstructured", "sparsity"] == pytest.approx(sparsity, abs=1 / 512)
    assert table.loc["unstructured", "why"] == ""
    rows = found["channel"].all(dim=1) | ~found["channel"].any(dim=1)
    assert rows.all()  # whole rows kept or pruned
    n, m = (int(k) for k in nm.split(":"))
    assert (found[nm].reshape(-1, m).sum(dim=1) == n).all()  # N of every M
    assert table.loc[nm, "sparsity"] == pytest.approx(1 - n / m)
    assert (table.loc[nm, "why"] == "") == (abs(1 - n / m - sparsity) < 1e-3)
    if table.loc[nm, "why"] == "":  # the same sparsity: unstructured keeps the most |w|
        assert table.loc["unstructured", "magnitude_kept"] >= table.loc[nm, "magnitude_kept"]


def test_pattern_curves_prune_the_same_layers(digits):
    bundle, data = digits
    table = patterns.pattern_curves(bundle.model, data, m=4, levels=[0.0, 0.5])
    assert table["strategy"].tolist() == ["unstructured"] * 2 + ["channel"] * 2 + ["N:4"] * 3
    nm = table[table["strategy"] == "N:4"].set_index("requested")
    # over the layers N:M can prune, so 2:4 is exactly 50% as unstructured's 50% is
    assert nm.loc[0.5, "sparsity"] == pytest.approx(0.5)
    channel = table[table["strategy"] == "channel"].set_index("requested")
    assert 0 < channel.loc[0.5, "sparsity"] < 0.5  # the classifier keeps its channels


def test_scopes_prune_the_same_share_but_spread_it_differently(digits):
    bundle, _ = digits
    found = scope.scope_masks(bundle.model, 0.6)
    assert all(m.sparsity() == pytest.approx(0.6, abs=1e-3) for m in found.values())
    table = scope.scope_table(found).set_index("layer")
    assert table["layerwise"].round(2).tolist() == [0.6, 0.6, 0.6]
    assert table.loc["conv1.weight", "global"] < 0.6 < table.loc["fc.weight", "global"]


def test_criterion_curves_and_a_level_read_off_them(digits):
    bundle, data = digits
    table = criteria.criterion_curves(
        bundle.model, data, ["magnitude", "random", "activation"], levels=[0.0, 0.7]
    )
    assert set(table["strategy"]) == {"magnitude", "random", "activation"}
    at = criteria.at_sparsity(table, "accuracy", 0.68)
    assert list(at.index) == ["magnitude", "random", "activation"]  # in the order asked
    assert at["magnitude"] > at["random"]
    with pytest.raises(ValueError, match="unknown criteria"):
        criteria.criterion_curves(bundle.model, data, ["taylor"])
    curves = scope.scope_curves(bundle.model, data, levels=[0.0, 0.7])
    assert set(curves["strategy"]) == {"layerwise", "global"}
