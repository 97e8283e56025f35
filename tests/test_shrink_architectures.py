"""shrink on the structures of torchvision's harder architectures, built tiny: grouped
convolutions (ResNeXt, RegNet), LayerNorm over channels (ConvNeXt), GroupNorm, auxiliary heads
that run in training only (GoogLeNet, Inception), and heads whose outputs prove nothing (a
zero-initialised ViT head, a random MobileNet's 1e-12 logits)."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.apply import masked_forward
from prunelab.core.masks import Masks
from prunelab.errors import ShrinkError
from prunelab.shrinking import coupled_groups, extend_channel_masks, plan_shrink, shrink

remove_module = importlib.import_module("prunelab.shrinking.remove")


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _keep_rows(model: nn.Module, fqn: str, kept: list[bool]) -> torch.Tensor:
    weight = model.get_parameter(fqn)
    keep = torch.tensor(kept)
    return keep.reshape(-1, *[1] * (weight.ndim - 1)).expand(weight.shape).clone()


def _agrees(model: nn.Module, masks: Masks, x: torch.Tensor) -> nn.Module:
    """shrink, checked against the masked model with the extended masks, in eval mode."""
    small = shrink(model, masks, example_input=x)
    extended = extend_channel_masks(model, masks, example_input=x)
    assert _params(small) == plan_shrink(model, masks, example_input=x).parameters
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked_forward(model.eval(), extended, x))
    return small


# -- grouped convolutions ---------------------------------------------------------------------


def _grouped() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 4 groups of 2 channels, as ResNeXt's conv2
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_grouped_convolution_loses_the_same_positions_in_every_group():
    model, x = _grouped(), torch.randn(1, 3, 8, 8)
    # position 1 of every group of 2, in the grouped conv's input (conv 0) and output (conv 3)
    every_second = [True, False] * 4
    masks = Masks(
        {
            "0.weight": _keep_rows(model, "0.weight", every_second),
            "3.weight": _keep_rows(model, "3.weight", every_second),
        }
    )
    small = _agrees(model, masks, x)
    assert (small[3].in_channels, small[3].out_channels, small[3].groups) == (4, 4, 4)
    assert small[3].weight.shape == (4, 1, 3, 3)


def test_grouped_convolution_keeps_a_position_any_group_keeps():
    model, x = _grouped(), torch.randn(1, 3, 8, 8)
    # channel 1 (group 0, position 1) goes; channel 3 (group 1, position 1) stays: position 1
    # stays in every group, and channel 1 stays as zeros (the union rule)
    kept = [True, False, True, True, True, False, True, False]
    masks = Masks({"0.weight": _keep_rows(model, "0.weight", kept)})
    plan = plan_shrink(model, masks, example_input=x)
    assert plan.removed == {}
    assert not plan.masks["0.weight"][1].any()
    small = _agrees(model, masks, x)
    assert small[3].in_channels == 8


def _wide_grouped() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 16, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # 4 groups of 4 positions
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 6, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_channel_strategy_prunes_grouped_positions_and_shrink_removes_them():
    model, x = _wide_grouped(), torch.randn(2, 3, 8, 8)
    masks = prunelab.Pruner(model, "weight-norm-channel", targets=["3.weight"]).masks(sparsity=0.5)
    rows = masks["3.weight"].flatten(1).any(dim=1).reshape(4, 4)  # (group, position)
    assert (rows == rows[0]).all() and int(rows[0].sum()) == 2  # the same 2 positions go
    small = _agrees(model, masks, x)
    kept = rows.reshape(-1)
    assert (small[3].out_channels, small[3].groups) == (8, 4)
    torch.testing.assert_close(small[3].weight, model[3].weight[kept])
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked_forward(model, masks, x))


def test_the_layer_a_grouped_convolution_reads_is_pruned_by_position_too():
    model, x = _wide_grouped(), torch.randn(2, 3, 8, 8)
    masks = prunelab.Pruner(model, "weight-norm-channel").masks(sparsity=0.5)
    producer = masks["0.weight"].flatten(1).any(dim=1).reshape(4, 4)  # (group, position)
    assert (producer == producer[0]).all() and int(producer[0].sum()) == 2
    small = _agrees(model, masks, x)
    assert (small[3].in_channels, small[3].out_channels, small[3].groups) == (8, 8, 4)


# -- channel-normalised layers ----------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, as ConvNeXt's LayerNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    """A ConvNeXt block: depthwise conv, LayerNorm over channels, an MLP, a residual add."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(y))).permute(0, 3, 1, 2)


def _convnext() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 2, stride=2),
        ChannelLayerNorm(8),
        Block(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()


def test_layernorm_channels_stay_and_the_mlp_shrinks():
    model, x = _convnext(), torch.randn(1, 3, 16, 16)
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    groups = coupled_groups(model, x)
    residual = groups[groups["layers"].str.contains(r"2\.norm \(out\)")].iloc[0]
    assert not residual["removable"]  # the LayerNorms count every channel in their statistics
    small = _agrees(model, masks, x)
    assert small[0].out_channels == 8 and small[1].normalized_shape == (8,)
    assert small[2].fc1.out_features < 32  # the MLP's hidden units are not normalised


def _group_normed() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.GroupNorm(4, 8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


@pytest.mark.parametrize(
    ("kept", "left", "groups"),
    [
        ([True, True, False, False, True, True, True, True], 6, 3),  # norm group 1 goes whole
        ([True, True, False, True, True, True, True, True], 8, 4),  # channel 3 keeps group 1
    ],
)
def test_groupnorm_loses_whole_norm_groups(kept, left, groups):
    model, x = _group_normed(), torch.randn(1, 3, 8, 8)
    small = _agrees(model, Masks({"0.weight": _keep_rows(model, "0.weight", kept)}), x)
    assert (small[1].num_channels, small[1].num_groups) == (left, groups)


# -- branches that run in training only -------------------------------------------------------


class WithAux(nn.Module):
    """A classifier with an auxiliary head that runs in training only, as GoogLeNet's."""

    def __init__(self, *, declared: bool = False) -> None:
        super().__init__()
        if declared:  # as torchvision says it: shrink then traces once, in train mode
            self.aux_logits = True
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.aux = nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, 16),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(16, 3),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        aux = self.aux(x) if self.training else None
        out = self.head(self.body(x))
        return (out, aux) if self.training else out


@pytest.mark.parametrize("declared", [False, True], ids=["found by tracing", "aux_logits"])
def test_auxiliary_head_is_shrunk_and_the_model_trains(declared):
    torch.manual_seed(0)
    model, x = WithAux(declared=declared).eval(), torch.randn(1, 3, 8, 8)
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    small = _agrees(model, masks, x)
    assert small.aux[2].in_features < 32 and small.aux[2].out_features < 16
    assert not small.stem[1].running_mean.any()  # the check's train-mode runs were undone
    out, aux = small.train()(torch.randn(2, 3, 8, 8))
    assert out.shape == aux.shape == (2, 3)
    assert small.stem[1].running_mean.any()  # a real training step ran


# -- a check that cannot pass vacuously -------------------------------------------------------


def _zero_head() -> nn.Module:
    model = _grouped()
    nn.init.zeros_(model[9].weight)  # as ViT's head: the output is exactly 0 for any input
    nn.init.zeros_(model[9].bias)
    return model


def _tiny_outputs() -> nn.Module:
    model = _grouped()
    with torch.no_grad():  # as a random MobileNet: logits around 1e-12
        model[9].weight.mul_(1e-12)
        model[9].bias.mul_(1e-12)
    return model


@pytest.mark.parametrize("build", [_zero_head, _tiny_outputs])
def test_check_sees_a_wrong_shrink_behind_degenerate_outputs(build, monkeypatch):
    model, x = build(), torch.randn(1, 3, 8, 8)
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    assert shrink(model, masks, example_input=x) is not None  # correct: passes
    remove = remove_module._remove

    def remove_the_wrong_channels(graph, groups):
        for item in groups:  # the same number of channels, the neighbours of the planned ones
            if item.keep is not None and not bool(item.keep.all()):
                item.keep = item.keep.roll(1)
        remove(graph, groups)

    monkeypatch.setattr(remove_module, "_remove", remove_the_wrong_channels)
    with pytest.raises(ValueError, match="differs from the masked"):
        shrink(model, masks, example_input=x)


def test_check_refuses_to_pass_when_nothing_depends_on_the_input():
    model, x = _grouped(), torch.randn(1, 3, 8, 8)
    nn.init.zeros_(model[0].weight)  # every later value is the same for every input
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    with pytest.raises(ShrinkError, match="do not depend on the input"):
        shrink(model, masks, example_input=x)
    assert shrink(model, masks, example_input=x, check=False) is not None
