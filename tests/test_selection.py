"""Selection: achieved sparsity, nesting, thresholds, granularities, per-layer overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import prunelab
from prunelab.core.select import Ranking, WeightedRanking, sort_scores
from tests.conftest import make_cnn, make_mlp

GRANULARITIES = ["unstructured", "channel", "input-channel"]


def _linear_model(shapes: list[tuple[int, int]], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(i, o) for o, i in shapes])


shapes_st = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_st, sparsity=st.floats(0, 1), seed=st.integers(0, 1000))
def test_layerwise_sparsity_within_one_element_per_layer(shapes, sparsity, seed):
    model = _linear_model(shapes, seed)
    table = prunelab.prune(model, "layer-magnitude", sparsity=sparsity).per_layer()
    for row in table.itertuples():
        assert abs((row.elements - row.kept) - sparsity * row.elements) <= 0.5 + 1e-9


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_st, sparsity=st.floats(0, 1), seed=st.integers(0, 1000))
def test_global_sparsity_within_one_element(shapes, sparsity, seed):
    model = _linear_model(shapes, seed)
    masks = prunelab.prune(model, "global-magnitude", sparsity=sparsity)
    total = sum(m.numel() for m in masks.values())
    pruned = total - sum(int(m.sum()) for m in masks.values())
    assert abs(pruned - sparsity * total) <= 0.5 + 1e-9


@settings(max_examples=40, deadline=None)
@given(
    shapes=shapes_st,
    sparsity=st.floats(0, 1),
    granularity=st.sampled_from(["channel", "input-channel"]),
    seed=st.integers(0, 1000),
)
def test_channel_sparsity_within_one_channel_per_layer(shapes, sparsity, granularity, seed):
    model = _linear_model(shapes, seed)
    # the selection arithmetic on every layer, the output layer included
    strategy = prunelab.get_strategy("layer-magnitude", granularity=granularity, prune_outputs=True)
    masks = prunelab.Pruner(model, strategy).masks(sparsity=sparsity)
    dim = 0 if granularity == "channel" else 1
    for fqn, mask in masks.items():
        channels = mask.shape[dim]
        other = 1 - dim
        kept_channels = mask.any(dim=other)
        # whole channels: every channel is all-kept or all-pruned
        assert torch.equal(mask.all(dim=other), kept_channels), fqn
        assert abs((channels - int(kept_channels.sum())) - sparsity * channels) <= 0.5 + 1e-9


@settings(max_examples=40, deadline=None)
@given(
    shapes=shapes_st,
    low=st.floats(0, 1),
    high=st.floats(0, 1),
    strategy=st.sampled_from(["layer-magnitude", "global-magnitude", "random"]),
    granularity=st.sampled_from(GRANULARITIES),
    seed=st.integers(0, 100),
)
def test_masks_are_nested(shapes, low, high, strategy, granularity, seed):
    low, high = sorted((low, high))
    model = _linear_model(shapes, seed)
    chosen = prunelab.get_strategy(strategy, granularity=granularity, prune_outputs=True)
    pruner = prunelab.Pruner(model, chosen)
    small, large = pruner.masks(sparsity=low), pruner.masks(sparsity=high)
    for fqn in small:
        # everything kept at the larger sparsity is kept at the smaller one
        assert bool((large[fqn] <= small[fqn]).all()), fqn


def test_nested_even_with_ties():
    model = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.arange(100).reshape(10, 10) // 10 / 10.0)  # runs of 10 ties
    pruner = prunelab.Pruner(model, "layer-magnitude")
    previous = None
    for s in np.linspace(0, 1, 41):
        mask = pruner.masks(sparsity=float(s))["weight"]
        assert 100 - int(mask.sum()) == round(s * 100)
        if previous is not None:
            assert bool((mask <= previous).all())
        previous = mask


def test_threshold_prunes_scores_at_or_below():
    model = make_mlp(0)
    t = 0.1
    masks = prunelab.prune(model, "threshold", threshold=t)
    for fqn, mask in masks.items():
        weight = dict(model.named_parameters())[fqn].detach()
        assert torch.equal(mask, weight.abs() > t)


def test_threshold_and_sparsity_agree_through_implied_values():
    model = make_cnn(0)
    pruner = prunelab.Pruner(model, "global-magnitude")
    thresholds = pruner.implied_thresholds(0.4)
    assert len(set(thresholds.values())) == 1  # global: one cut for every layer
    by_threshold = pruner.masks(threshold=next(iter(thresholds.values())))
    by_sparsity = pruner.masks(sparsity=0.4)
    assert all(torch.equal(by_threshold[f], by_sparsity[f]) for f in by_sparsity)
    assert pruner.implied_sparsity(next(iter(thresholds.values()))) == pytest.approx(
        by_sparsity.sparsity()
    )


def test_layerwise_implied_thresholds_differ_per_layer():
    pruner = prunelab.Pruner(make_mlp(0), "layer-magnitude")
    thresholds = pruner.implied_thresholds(0.5)
    masks = pruner.masks(sparsity=0.5)
    for fqn, t in thresholds.items():
        weight = dict(make_mlp(0).named_parameters())[fqn].detach()
        assert torch.equal(masks[fqn], weight.abs() > t)


def test_sparsity_one_is_allowed_and_flagged():
    masks = prunelab.prune(make_mlp(0), "layer-magnitude", sparsity=1.0)
    table = masks.per_layer()
    assert table["empty"].all()
    assert masks.sparsity() == 1.0


def test_sparsity_zero_keeps_everything():
    masks = prunelab.prune(make_cnn(0), "global-magnitude", sparsity=0.0)
    assert masks.sparsity() == 0.0


def test_channel_masks_cover_the_bias_so_pruned_channels_output_zero(mlp_data):
    model = make_mlp(0)
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    assert set(masks.coupled) == {"0.bias", "2.bias", "4.bias"}
    x = mlp_data[0]
    first = nn.Sequential(*list(model)[:1])
    with torch.no_grad():
        out = prunelab.masked_forward(
            first,
            prunelab.Masks(
                {"0.weight": masks["0.weight"]}, coupled={"0.bias": masks.coupled["0.bias"]}
            ),
            x,
        )
    dead = ~masks.coupled["0.bias"]
    assert dead.any()
    assert torch.all(out[:, dead] == 0)


def test_unstructured_masks_leave_biases_alone():
    masks = prunelab.prune(make_mlp(0), "layer-magnitude", sparsity=0.9)
    assert masks.coupled == {}


def test_per_layer_overrides():
    model = make_cnn(0)
    pruner = prunelab.Pruner(model, "global-magnitude")
    masks = pruner.masks(sparsity=0.5, per_layer={"0.weight": 0.1})
    table = masks.per_layer().set_index("fqn")
    assert table.loc["0.weight", "kept"] == 216 - round(0.1 * 216)
    rest = table.drop("0.weight")
    assert (rest.elements - rest.kept).sum() == round(0.5 * rest.elements.sum())


def test_per_layer_covering_everything_needs_no_sparsity():
    model = make_mlp(0)
    fqns = [t.fqn for t in prunelab.targets(model)]
    per_layer = dict(zip(fqns, [0.25, 0.5, 0.75], strict=True))
    masks = prunelab.Pruner(model, "layer-magnitude").masks(per_layer=per_layer)
    for row in masks.per_layer().itertuples():
        assert row.elements - row.kept == round(per_layer[row.fqn] * row.elements)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8)])
def test_nm_keeps_n_largest_of_every_m(n, m):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 6), nn.Conv2d(8, 4, 3))
    masks = prunelab.prune(model, prunelab.get_strategy("n:m", n=n, m=m))
    assert masks.sparsity() == pytest.approx(1 - n / m)
    weight = model[0].weight.detach()
    groups = weight.reshape(6, 16 // m, m)
    kept = masks["0.weight"].reshape(6, 16 // m, m)
    assert bool((kept.sum(-1) == n).all())
    top = groups.abs().topk(n, dim=-1).indices
    assert bool(kept.gather(-1, top).all())
    conv = masks["1.weight"].movedim(1, -1).reshape(-1, m)  # groups run along input channels
    assert bool((conv.sum(-1) == n).all())


def test_nm_as_a_granularity_of_another_criterion(mlp_data):
    model = nn.Sequential(nn.Linear(12, 8))
    cal = prunelab.Calibration(model, mlp_data)
    strategy = prunelab.get_strategy("layer-activation-magnitude", granularity="2:4")
    masks = prunelab.Pruner(model, strategy, calibration=cal).masks()
    assert masks.sparsity() == 0.5


def test_weighted_ranking_counts_elements():
    # two layers whose channels hold 10 and 1 elements: sparsity counts elements
    layers = sort_scores({"a": np.array([0.1, 0.2]), "b": np.array([0.15, 0.3])})
    ranking = WeightedRanking(list(layers.values()), [10, 1])
    assert ranking.total == 22
    k = ranking.count_for_sparsity(10 / 22)
    assert ranking.sparsity_at(k) == pytest.approx(10 / 22)
    assert ranking.keep(k)["a"].tolist() == [False, True]


def test_global_channel_pruning_counts_elements():
    model = make_cnn(0)
    strategy = prunelab.get_strategy("global-magnitude", granularity="channel", prune_outputs=True)
    masks = prunelab.Pruner(model, strategy).masks(sparsity=0.5)
    total = sum(m.numel() for m in masks.values())
    largest_channel = max(m[0].numel() for m in masks.values())
    assert abs(masks.sparsity() * total - 0.5 * total) <= largest_channel / 2


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    k_frac=st.floats(0, 1),
    distinct=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    negative=st.booleans(),
)
def test_multi_layer_ranking_equals_one_sorted_array(sizes, k_frac, distinct, seed, negative):
    # few distinct values force ties across layers; the result must equal a stable argsort
    rng = np.random.default_rng(seed)
    arrays = {
        f"l{i}": rng.integers(0, distinct, n).astype(np.float32) - (3 if negative else 0)
        for i, n in enumerate(sizes)
    }
    ranking = Ranking(list(sort_scores(arrays).values()), group_size=1)
    flat = np.concatenate(list(arrays.values()))
    k = round(k_frac * flat.size)
    expected = np.ones(flat.size, dtype=bool)
    expected[np.argsort(flat, kind="stable")[:k]] = False
    got = np.concatenate(list(ranking.keep(k).values()))
    assert np.array_equal(got, expected)
    if k > 0:
        assert ranking.kth(k) == np.sort(flat)[k - 1]


def test_sorting_rejects_nan_scores():
    with pytest.raises(ValueError, match="scores of bad contain NaN"):
        sort_scores({"good": np.array([0.1]), "bad": np.array([0.1, math.nan])})


def test_argument_checks_name_the_argument_and_refuse_bools_nan_and_out_of_range():
    from prunelab.runtime import checks

    assert checks.check_sparsity(np.float32(0.25)) == 0.25
    assert type(checks.check_sparsity(np.int64(1))) is float
    assert checks.check_count(np.int32(3), what="bins") == 3
    assert checks.check_number(2, what="lr", minimum=0, strict=True) == 2.0
    refused = [
        (lambda: checks.check_sparsity(True), TypeError, "sparsity must be a number in [0, 1]"),
        (lambda: checks.check_sparsity(float("nan")), ValueError, "(fraction of weights zeroed)"),
        (lambda: checks.check_fraction(-0.1, what="keep"), ValueError, "keep must be in [0, 1],"),
        (lambda: checks.check_threshold("1"), TypeError, "threshold must be a number, got '1'"),
        (lambda: checks.check_threshold(math.inf), ValueError, "must be a finite number, got inf"),
        (lambda: checks.check_number(-1, what="t", minimum=0), ValueError, "t must be a finite "),
        (lambda: checks.check_number(0, what="lr", minimum=0, strict=True), ValueError, "> 0"),
        (lambda: checks.check_count(2.0, what="bins"), TypeError, "bins must be an integer,"),
        (lambda: checks.check_count(0, what="bins"), ValueError, "bins must be at least 1, got 0"),
        (lambda: checks.check_count(17, what="bits", maximum=16), ValueError, "from 1 to 16"),
    ]
    for call, error, message in refused:
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value)
    # the old home still answers (prunelab.select was their public module)
    from prunelab.core import select

    assert select.check_sparsity is checks.check_sparsity


def test_grouped_convolution_ranks_positions_summed_over_groups():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, groups=4)  # 4 groups of 3 positions
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(12, 2, 1))
    pruner = prunelab.Pruner(model, "weight-norm-channel", targets=["0.weight"])
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    position = norms.reshape(4, 3).sum(dim=0)
    keep = pruner.masks(sparsity=1 / 3)["0.weight"].flatten(1).all(dim=1).reshape(4, 3)
    assert (keep == (position > position.min())).all()  # the weakest position, in every group
    # one score per output channel still: each channel shows its position's score
    torch.testing.assert_close(pruner.scores()["0.weight"], position.repeat(4))


def test_depthwise_and_transposed_convolutions_keep_per_channel_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, groups=6), nn.ConvTranspose2d(6, 4, 3, groups=2))
    strategy = prunelab.get_strategy("weight-norm-channel", prune_outputs=True)
    masks = prunelab.Pruner(model, strategy).masks(sparsity=0.5)
    depthwise = masks["0.weight"].flatten(1).all(dim=1)
    norms = model[0].weight.detach().abs().sum(dim=(1, 2, 3))
    assert (depthwise == (norms > norms.median())).all()
    assert masks["1.weight"].shape == (6, 2, 3, 3)
