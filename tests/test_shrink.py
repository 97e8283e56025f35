"""shrink: a smaller model that computes what the masked model computes."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import prunelab
from prunelab.analysis.speed import COLUMNS, semi_structured_support, speed_report
from prunelab.core.apply import masked_forward
from prunelab.core.masks import Masks
from prunelab.io import zoo
from prunelab.shrinking import coupled_groups, extend_channel_masks, plan_shrink, shrink
from tests.conftest import assert_unchanged, make_cnn, snapshot


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check(model: nn.Module, x: torch.Tensor, sparsity: float = 0.5) -> nn.Module:
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=sparsity)
    before = snapshot(model)
    plan = plan_shrink(model, masks, example_input=x)
    small = shrink(model, masks, example_input=x)
    assert_unchanged(model, before)
    assert _params(small) == plan.parameters < _params(model)
    with torch.no_grad():
        expected = masked_forward(model, plan.masks, x)
        torch.testing.assert_close(small(x), expected, rtol=1e-4, atol=1e-5)
    return small


def test_digits_resnet_shrinks_and_matches_masked():
    bundle = zoo.load("sample:digits-resnet")
    _check(bundle.model, bundle.example_input(batch_size=4))


@pytest.mark.slow
def test_torchvision_resnet18_residual_groups():
    model = zoo.load("torchvision:resnet18?num_classes=10").model
    small = _check(model, torch.rand(2, 3, 32, 32))
    # convs feeding the same residual add keep the same channels
    assert small.layer1[0].conv2.out_channels == small.layer1[1].conv2.out_channels
    assert small.layer1[0].bn2.num_features == small.layer1[0].conv2.out_channels
    assert small.fc.out_features == 10  # the classifier keeps its outputs


def test_torchvision_mobilenet_v2_depthwise():
    model = zoo.load("torchvision:mobilenet_v2?num_classes=10").model
    small = _check(model, torch.rand(1, 3, 32, 32))
    block = small.features[2].conv
    assert block[1][0].groups == block[1][0].out_channels == block[0][0].out_channels


def test_plain_cnn_prediction_by_hand():
    model = make_cnn().eval()
    keep0 = torch.tensor([True, False] * 4)  # 4 of 8 channels of the first conv
    masks = Masks({"0.weight": keep0.reshape(8, 1, 1, 1).expand(8, 3, 3, 3).clone()})
    plan = plan_shrink(model, masks, example_input=torch.randn(1, 3, 6, 6))
    # conv0 loses 4x(27+1), its BatchNorm 4x2, conv3 loses 12x4x9 input weights
    assert plan.dense_parameters - plan.parameters == 4 * 28 + 4 * 2 + 12 * 4 * 9
    assert plan.removed == {"0": 4, "1": 4}
    extended = plan.masks
    assert extended.coupled["1.weight"].tolist() == keep0.tolist()
    assert not extended["3.weight"][:, ~keep0].any()


def test_extension_leaves_the_given_masks_alone():
    model = make_cnn().eval()
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    before = {fqn: mask.clone() for fqn, mask in masks.all().items()}
    plan = plan_shrink(model, masks, example_input=torch.randn(1, 3, 6, 6))
    # conv 3's mask gains the input columns of conv 0's removed channels, in a copy
    assert not torch.equal(plan.masks["3.weight"], masks["3.weight"])
    assert plan.masks is plan.masks  # built once, on first use
    for fqn, mask in masks.all().items():
        assert torch.equal(mask, before[fqn]), fqn


def test_union_semantics_in_a_residual_group():
    bundle = zoo.load("sample:digits-resnet")
    x = bundle.example_input(batch_size=2)
    groups = coupled_groups(bundle.model, x)
    residual = groups[groups["layers"].str.contains(r"layer1\.conv2 \(out\)")].iloc[0]
    assert "stem.0 (out)" in residual["layers"]
    # prune a channel in one coupled layer only: it survives in the other, as zeros
    masks = {t.fqn: torch.ones(t.shape, dtype=torch.bool) for t in prunelab.targets(bundle.model)}
    masks["layer1.conv2.weight"][0] = False
    extended = extend_channel_masks(bundle.model, Masks(masks), example_input=x)
    assert not extended["layer1.conv2.weight"][0].any()
    assert extended["stem.0.weight"][0].all()
    assert plan_shrink(bundle.model, Masks(masks), example_input=x).removed == {}


def test_unstructured_masks_are_refused_with_the_reason():
    bundle = zoo.load("sample:digits-cnn")
    masks = prunelab.prune(bundle.model, "global-magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match=r"scattered.*channel strategy"):
        shrink(bundle.model, masks, example_input=bundle.example_input())


def test_removing_every_channel_is_refused():
    model = make_cnn().eval()
    masks = Masks({"0.weight": torch.zeros(8, 3, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"all 8 output channels of 0 \(out\)"):
        shrink(model, masks, example_input=torch.randn(1, 3, 6, 6))


def test_classifier_channels_stay_as_zero_rows():
    model = make_cnn().eval()
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    x = torch.randn(3, 3, 6, 6)
    small = shrink(model, masks, example_input=x)
    assert small[7].out_features == 4
    assert small(x).shape == (3, 4)


def test_bad_arguments():
    model = make_cnn()
    with pytest.raises(TypeError, match=r"prunelab\.Masks"):
        shrink(model, {"0.weight": None}, example_input=torch.randn(1, 3, 6, 6))
    with pytest.raises(TypeError, match="example_input"):
        coupled_groups(model, [1, 2])


# -- what the output check runs on ------------------------------------------------------------

shrink_module = importlib.import_module("prunelab.shrinking.remove")


@contextlib.contextmanager
def _inputs_seen(model: nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """Shapes of the inputs of every forward of ``model`` and of its copies (hooks are copied)."""
    seen: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    try:
        yield seen
    finally:
        handle.remove()


def _flatten_cnn() -> nn.Module:
    """Flatten -> Linear without adaptive pooling: only the example input's size runs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 8, stride=8),
        nn.Flatten(),
        nn.Linear(4 * 9 * 9, 3),
    ).eval()


def _fully_convolutional() -> nn.Module:
    """The output's size follows the input's: a crop gives another output shape."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)
    ).eval()


# (model, example input, the input the check must run on: the crop or the example input, with
# a variant of it in the same batch)
CHECK_CASES = {
    "adaptive pooling: one sample, cropped": (
        lambda: make_cnn().eval(),
        (2, 3, 80, 72),
        (2, 3, 64, 64),
    ),
    "flatten to linear: the example input": (_flatten_cnn, (1, 3, 72, 72), (2, 3, 72, 72)),
    "output follows the input's size: one sample, not cropped": (
        _fully_convolutional,
        (2, 3, 72, 72),
        (2, 3, 72, 72),
    ),
    "output follows the input's size, larger: the example input": (
        _fully_convolutional,
        (2, 3, 144, 144),
        (4, 3, 144, 144),
    ),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_runs_on_the_smallest_input_that_tests_the_same(case):
    build, shape, checked_on = CHECK_CASES[case]
    model = build()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    with _inputs_seen(model) as seen:
        small = shrink(model, masks, example_input=x)
    # the graph is traced on the example input, then masked and shrunk run on the check input
    assert seen[0] == shape and seen[-2:] == [checked_on, checked_on]
    assert _params(small) < _params(model)
    with torch.no_grad():
        expected = masked_forward(model, plan_shrink(model, masks, example_input=x).masks, x)
        torch.testing.assert_close(small(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_catches_a_wrong_shrink(case, monkeypatch):
    build, shape, checked_on = CHECK_CASES[case]
    model = build()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    remove = shrink_module._remove

    def remove_the_wrong_channels(graph, groups):
        # as many channels as planned (so the parameter count agrees), but the neighbours of
        # the pruned ones: only the output check can tell
        for item in groups:
            if item.keep is not None and not bool(item.keep.all()):
                item.keep = item.keep.roll(1)
        remove(graph, groups)

    monkeypatch.setattr(shrink_module, "_remove", remove_the_wrong_channels)
    with _inputs_seen(model) as seen, pytest.raises(ValueError, match="differs from the masked"):
        shrink(model, masks, example_input=x)
    assert seen[-1] == checked_on
    assert shrink(model, masks, example_input=x, check=False) is not None  # unchecked: no error


def test_check_false_runs_only_the_trace():
    model = make_cnn().eval()
    x = torch.rand(2, 3, 80, 80)
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    with _inputs_seen(model) as seen:
        small = shrink(model, masks, example_input=x, check=False)
    assert seen == [(2, 3, 80, 80)]
    with torch.no_grad():
        torch.testing.assert_close(small(x), shrink(model, masks, example_input=x)(x))


def test_speed_report_rows_and_reasons():
    bundle = zoo.load("sample:digits-resnet")
    masks = prunelab.prune(bundle.model, "weight-norm-channel", sparsity=0.5)
    before = snapshot(bundle.model)
    report = speed_report(
        bundle.model, masks, example_input=bundle.example_input(), batch_sizes=(1, 4), repeats=2
    )
    assert_unchanged(bundle.model, before)
    assert list(report.columns) == COLUMNS
    assert report["variant"].tolist() == ["dense", "masked", "shrunk"] * 2
    table = report[report["batch"] == 4].set_index("variant")
    assert (
        table.loc["shrunk", "params"] < table.loc["masked", "params"] < table.loc["dense", "params"]
    )
    assert (
        table.loc["shrunk", "flops"] < table.loc["dense", "flops"] == table.loc["masked", "flops"]
    )
    assert table.loc["dense", "flops"] == 4 * report.loc[0, "flops"]
    assert (report["median_ms"] > 0).all() and report["why"].str.len().min() > 20
    assert "do not skip zeros" in table.loc["masked", "why"]
    assert "2:4" in report.attrs["explanation"] and "CPU" in report.attrs["explanation"]


def test_speed_report_without_channel_masks_explains_the_missing_row():
    model = make_cnn().eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    report = speed_report(
        model, masks, example_input=torch.randn(1, 3, 6, 6), batch_sizes=(2,), repeats=1
    )
    assert report["variant"].tolist() == ["dense", "masked"]
    assert "No shrunk model" in report.attrs["explanation"]
    assert semi_structured_support("cpu") is not None
    with pytest.raises(ValueError, match="batch_sizes"):
        speed_report(model, masks, example_input=torch.randn(1, 3, 6, 6), batch_sizes=(0,))
