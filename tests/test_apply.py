"""masked_forward, apply and bake agree, and none of them touches the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.errors import InputError
from tests.conftest import (
    assert_unchanged,
    make_cnn,
    make_lstm,
    make_mlp,
    masked_applied_baked,
    snapshot,
)


def _inputs(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    if name == "mlp":
        return torch.randn(6, 12, generator=gen)
    if name == "cnn":
        return torch.randn(6, 3, 6, 6, generator=gen)
    return torch.randint(0, 20, (6, 7), generator=gen)


@pytest.mark.parametrize("name,make", [("mlp", make_mlp), ("cnn", make_cnn), ("lstm", make_lstm)])
@pytest.mark.parametrize("strategy", ["global-magnitude", "weight-norm-channel", "random"])
def test_masked_equals_applied_equals_baked(name, make, strategy):
    model = make().eval()
    x = _inputs(name)
    masks = prunelab.prune(model, strategy, sparsity=0.6)
    before = snapshot(model)
    masked, applied, baked = masked_applied_baked(model, masks, x)
    assert_unchanged(model, before)
    assert torch.allclose(masked, applied, atol=1e-6)
    assert torch.allclose(applied, baked, atol=1e-6)
    dense = model(x)
    assert not torch.allclose(dense, masked)


def test_apply_carries_torch_prune_buffers_and_keeps_zeros_in_training(mlp_data):
    model = make_mlp()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    pruned = prunelab.apply(model, masks)
    layer = pruned[0]
    assert hasattr(layer, "weight_orig") and hasattr(layer, "weight_mask")
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.5)
    x, y = mlp_data
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(pruned(x), y).backward()
        optimizer.step()
    pruned(x)  # the pre-hook recomputes weight from weight_orig * weight_mask
    assert torch.all(layer.weight[~masks["0.weight"]] == 0)


def test_bake_removes_reparametrisation_and_writes_zeros():
    model = make_cnn()
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    baked = prunelab.bake(prunelab.apply(model, masks))
    assert not any(name.endswith("_orig") for name, _ in baked.named_parameters())
    assert not any(name.endswith("_mask") for name, _ in baked.named_buffers())
    assert torch.all(baked[0].weight[~masks["0.weight"]] == 0)
    assert torch.all(baked[0].bias[~masks.coupled["0.bias"]] == 0)
    assert isinstance(baked[0].weight, nn.Parameter)


def test_pruning_a_model_that_carries_torch_prune_masks_says_to_bake_it_first():
    model = make_mlp()
    applied = prunelab.apply(model, prunelab.prune(model, "layer-magnitude", sparsity=0.5))
    by_torch = make_mlp()
    torch.nn.utils.prune.l1_unstructured(by_torch[2], "weight", amount=0.3)
    for carrier, fqn in ((applied, "0.weight"), (by_torch, "2.weight")):
        for call in (
            lambda m: prunelab.prune(m, "global-magnitude", sparsity=0.5),
            lambda m: prunelab.Pruner(m, "weight-norm-channel"),
        ):
            with pytest.raises(InputError, match=r"model = prunelab\.bake\(model\)") as info:
                call(carrier)
            assert f"({fqn}_orig and {fqn}_mask" in str(info.value)
    # baked, it prunes like any model: the zeros it carries are the lowest magnitudes
    again = prunelab.prune(prunelab.bake(applied), "layer-magnitude", sparsity=0.5)
    assert torch.equal(again["0.weight"], applied[0].weight_mask.bool())


def test_masked_forward_in_training_mode_leaves_batchnorm_stats_alone():
    model = make_cnn().train()
    before = snapshot(model)
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    prunelab.masked_forward(model, masks, _inputs("cnn"))
    assert_unchanged(model, before)


def test_masked_forward_on_an_explicit_device():
    model = make_mlp().eval()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    out = prunelab.masked_forward(model, masks, _inputs("mlp"), device="cpu")
    assert out.device.type == "cpu"


def test_mask_of_the_wrong_shape_is_refused():
    model = make_mlp()
    bad = prunelab.Masks({"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        prunelab.masked_forward(model, bad, _inputs("mlp"))


def test_masks_must_be_masks():
    with pytest.raises(TypeError, match="Masks"):
        prunelab.apply(make_mlp(), {"0.weight": torch.ones(16, 12, dtype=torch.bool)})


class TwoLinearsOneWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class TiedDecoder(nn.Module):
    """The classic tie: the output layer shares the embedding's (vocab, dim) weight."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(10, 6)
        self.mix = nn.Linear(6, 6)
        self.decoder = nn.Linear(6, 10)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.mix(self.embed(tokens).mean(1))))


@pytest.mark.parametrize(
    "make, x",
    [
        (TwoLinearsOneWeight, torch.randn(5, 6, generator=torch.Generator().manual_seed(0))),
        (TiedDecoder, torch.randint(0, 10, (5, 3), generator=torch.Generator().manual_seed(0))),
    ],
)
def test_tied_weight_is_masked_in_every_module_that_uses_it(make, x):
    model = make().eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.6)
    tied = [fqn for fqn in masks if fqn in ("a.weight", "decoder.weight")]
    # a head tied to the embedding table is not a target (it would prune the embeddings)
    assert len(tied) == (0 if make is TiedDecoder else 1)  # else one target, one mask
    before = snapshot(model)
    masked, applied, baked = masked_applied_baked(model, masks, x)
    assert_unchanged(model, before)
    torch.testing.assert_close(applied, masked, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(baked, masked, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(model(x), masked)


def test_applied_tied_weight_is_one_parameter_and_stays_tied_when_trained_and_baked():
    model = TwoLinearsOneWeight()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    pruned = prunelab.apply(model, masks)
    assert pruned.a.weight_orig is pruned.b.weight_orig
    assert pruned.a.weight_mask is pruned.b.weight_mask
    names = [name for name, _ in pruned.named_parameters()]
    assert names.count("a.weight_orig") == 1 and "b.weight_orig" not in names  # shared once
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.5)
    x = torch.randn(8, 6)
    for _ in range(2):
        optimizer.zero_grad()
        pruned(x).square().sum().backward()
        optimizer.step()
    pruned(x)
    pruned_out = ~masks["a.weight"]
    assert torch.all(pruned.a.weight[pruned_out] == 0) and torch.all(
        pruned.b.weight[pruned_out] == 0
    )
    baked = prunelab.bake(pruned)
    assert baked.a.weight is baked.b.weight
    assert isinstance(baked.a.weight, nn.Parameter)
    assert torch.all(baked.a.weight[pruned_out] == 0)
    assert sorted(name for name, _ in baked.named_parameters()) == ["a.bias", "a.weight", "b.bias"]
