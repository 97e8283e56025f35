"""Hugging Face models: GPT-2's Conv1D as a target, tied heads, ``hf:`` specs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.targets import targets, weight_dims

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def tiny_gpt2(seed: int = 0) -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, tie_word_embeddings=True
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def conv1d_and_linear() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    conv = Conv1D(12, 8)  # nf=12 outputs, nx=8 inputs: weight (8, 12)
    linear = nn.Linear(8, 12)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    return nn.Sequential(conv), nn.Sequential(linear)


def test_conv1d_is_a_target_with_transposed_layout():
    conv, _ = conv1d_and_linear()
    (target,) = targets(conv)
    assert target.module_type == "Conv1D" and target.shape == (8, 12)
    assert (target.out_dim, target.in_dim) == weight_dims(conv[0]) == (1, 0)
    assert target.bias == "0.bias"


@pytest.mark.parametrize(
    "strategy",
    [
        prunelab.get_strategy("layer-magnitude"),
        prunelab.get_strategy("layer-magnitude", granularity="channel", prune_outputs=True),
        prunelab.get_strategy("layer-magnitude", granularity="input-channel", prune_outputs=True),
        prunelab.get_strategy("layer-magnitude", granularity="2:4"),
        prunelab.get_strategy("weight-norm-channel", prune_outputs=True),
    ],
    ids=str,
)
def test_conv1d_masks_are_the_transposed_linear_masks(strategy):
    conv, linear = conv1d_and_linear()
    got = prunelab.prune(conv, strategy, sparsity=0.5)["0.weight"]
    want = prunelab.prune(linear, strategy, sparsity=0.5)["0.weight"]
    assert torch.equal(got, want.T)
    assert 0.4 <= 1 - got.float().mean().item() <= 0.6


def test_conv1d_wanda_scores_use_input_norms_along_its_input_dim():
    conv, linear = conv1d_and_linear()
    inputs = torch.randn(64, 8) * torch.linspace(0.1, 3, 8)
    data = (inputs, torch.zeros(64, dtype=torch.long))
    got = prunelab.prune(
        conv,
        "layer-activation-magnitude",
        sparsity=0.5,
        calibration=prunelab.Calibration(conv, data, batches=1, batch_size=64),
    )["0.weight"]
    want = prunelab.prune(
        linear,
        "layer-activation-magnitude",
        sparsity=0.5,
        calibration=prunelab.Calibration(linear, data, batches=1, batch_size=64),
    )["0.weight"]
    assert torch.equal(got, want.T)


def test_apply_and_masked_forward_on_conv1d_agree():
    conv, _ = conv1d_and_linear()
    masks = prunelab.prune(conv, "layer-magnitude", sparsity=0.5)
    pruned = prunelab.apply(conv, masks)
    assert hasattr(pruned[0], "weight_mask") and not hasattr(conv[0], "weight_mask")
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(pruned(x), prunelab.masked_forward(conv, masks, x))
    torch.testing.assert_close(pruned(x), x @ (conv[0].weight * masks["0.weight"]) + conv[0].bias)


def test_gpt2_targets_skip_embeddings_and_the_tied_head():
    model = tiny_gpt2()
    fqns = [t.fqn for t in targets(model)]
    assert "lm_head.weight" not in fqns
    assert not any("wte" in f or "wpe" in f for f in fqns)
    assert fqns[:4] == [
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight",
    ]
    assert {t.module_type for t in targets(model)} == {"Conv1D"}


def test_an_untied_head_is_a_target():
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2, tie_word_embeddings=False
    )
    model = transformers.GPT2LMHeadModel(config)
    assert "lm_head.weight" in [t.fqn for t in targets(model)]


def test_apply_and_bake_keep_the_head_tied():
    model = tiny_gpt2()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    pruned = prunelab.apply(model, masks)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    baked = prunelab.bake(pruned)
    assert baked.lm_head.weight is baked.transformer.wte.weight
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(baked(ids).logits, prunelab.masked_forward(model, masks, ids).logits)
    assert model.lm_head.weight is model.transformer.wte.weight  # the model given, untouched
    assert not hasattr(model.transformer.h[0].attn.c_attn, "weight_mask")
