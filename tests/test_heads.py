"""Attention heads as prunable groups: importance, head masks, the head-magnitude strategy and
shrinking that removes heads (torchvision ViT, Hugging Face GPT-2)."""

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.heads import (
    attention_layers,
    head_importance,
    heads_of,
    masks_for_heads,
    select_heads,
)
from prunelab.errors import ShrinkError
from prunelab.shrinking import shrink
from tests.conftest import tiny_gpt2


def _vit():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10,
    )  # fmt: skip
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero: outputs would be 0
    return vit.eval()


def _gpt2():
    return tiny_gpt2(n_head=4, vocab_size=100, n_positions=1024)


def test_finds_the_heads_of_vit_and_gpt2():
    assert [(a.kind, a.num_heads, a.head_dim) for a in attention_layers(_vit())] == [
        ("mha", 4, 16)
    ] * 2
    assert [(a.kind, a.num_heads, a.head_dim) for a in attention_layers(_gpt2())] == [
        ("conv1d", 4, 8)
    ] * 2
    assert attention_layers(nn.Sequential(nn.Linear(2, 2))) == []


def test_importance_is_the_norm_of_the_heads_weights():
    mha = nn.MultiheadAttention(8, 2)
    with torch.no_grad():
        mha.in_proj_weight.fill_(1.0)
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.fill_(1.0)
        mha.in_proj_weight[4:8] = 0  # head 1's queries
    score = head_importance(mha)[""]
    # head 0: 3 * 4 rows * 8 + 8 rows * 4 columns ones; head 1 loses 4 * 8 of them
    assert torch.allclose(score, torch.tensor([128.0, 96.0]).sqrt())


def test_select_heads_global_layer_and_keeps_one_per_layer():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([10.0, 20.0, 30.0])}
    assert select_heads(scores, sparsity=0.5)["a"].tolist() == [False, False, True]
    assert select_heads(scores, sparsity=1.0).pruned() == 4  # one head per layer stays
    layer = select_heads(scores, sparsity=1 / 3, scope="layer")
    assert layer["a"].tolist() == layer["b"].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="scope"):
        select_heads(scores, sparsity=0.5, scope="row")


def test_head_magnitude_strategy_masks_the_heads():
    vit = _vit()
    masks = prunelab.prune(vit, "head-magnitude", sparsity=0.5)
    heads = heads_of(vit, masks)
    assert heads.pruned() == 4 and heads.total() == 8
    # q/k/v rows are coupled masks (in_proj_weight is not a target), out columns a target's
    attn = "encoder.layers.encoder_layer_0.self_attention"
    kept = heads[attn]
    rows = masks.coupled[f"{attn}.in_proj_weight"].reshape(3, 4, 16, 64)
    assert rows.all(dim=(0, 2, 3)).tolist() == kept.tolist()
    assert prunelab.get_strategy("head-magnitude").granularity == prunelab.parse_granularity("head")
    with pytest.raises(ValueError, match="head-magnitude"):
        prunelab.prune(vit, prunelab.get_strategy("magnitude", granularity="head"), sparsity=0.5)


def test_masked_heads_equal_a_model_without_them():
    """Zeroing a head's output columns is removing it: compare with heads removed by hand."""
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    masks = masks_for_heads(mha, {"": torch.tensor([True, False])})
    x = torch.randn(2, 5, 8)
    masked = prunelab.masked_forward(mha, masks, x, x, x)[0]
    weights, biases = mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
    q, k, v = (x @ w.T + b for w, b in zip(weights, biases, strict=True))
    att = (q[..., :4] @ k[..., :4].transpose(1, 2) / 2).softmax(-1) @ v[..., :4]
    by_hand = att @ mha.out_proj.weight[:, :4].T + mha.out_proj.bias
    assert torch.allclose(masked, by_hand, atol=1e-5)


def test_shrink_removes_vit_heads_and_equals_the_masked_model():
    vit = _vit()
    masks = prunelab.prune(vit, "head-magnitude", sparsity=0.5)
    small = shrink(vit, masks, example_input=torch.randn(2, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(small(x), prunelab.masked_forward(vit, masks, x), atol=1e-4)
    attn = small.encoder.layers[0].self_attention
    kept = int(heads_of(vit, masks)["encoder.layers.encoder_layer_0.self_attention"].sum())
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (64, kept, 16)
    assert attn.in_proj_weight.shape == (3 * 16 * kept, 64)
    assert attn.out_proj.in_features == 16 * kept
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in vit.parameters())
    small.train()(x)  # runs in train mode too
    assert isinstance(vit.encoder.layers[0].self_attention, nn.MultiheadAttention)  # untouched


def test_shrink_heads_and_mlp_channels_together():
    vit = _vit()
    mlp = prunelab.Pruner(vit, "weight-norm-channel", targets=["*mlp.0.weight"])
    heads = select_heads(head_importance(vit), sparsity=0.25)
    masks = masks_for_heads(vit, heads, base=mlp.masks(sparsity=0.5))
    small = shrink(vit, masks, example_input=torch.randn(2, 3, 32, 32))
    assert small.encoder.layers[0].mlp[0].out_features == 64
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(small(x), prunelab.masked_forward(vit, masks, x), atol=1e-4)


def test_shrink_removes_gpt2_heads():
    gpt = _gpt2()
    masks = prunelab.prune(gpt, "head-magnitude", sparsity=0.5)
    ids = torch.randint(0, 100, (2, 7))
    small = shrink(gpt, masks, example_input=ids)
    attn = small.transformer.h[0].attn
    assert attn.num_heads == 2 and attn.c_attn.weight.shape == (32, 48)
    assert attn.c_proj.weight.shape == (16, 32)
    masked = prunelab.masked_forward(gpt, masks, ids).logits
    dense = gpt(ids).logits
    assert not torch.allclose(masked, dense, atol=1e-4)  # the heads mattered
    assert torch.allclose(small(ids).logits, masked, atol=1e-4)


def test_swin_style_heads_are_masked_but_not_shrunk():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.qkv, self.proj = 2, nn.Linear(8, 24), nn.Linear(8, 8)

        def forward(self, x):
            q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).unbind(-3)
            att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)).softmax(-1)
            return self.proj((att @ v.transpose(1, 2)).transpose(1, 2).flatten(2))

    net = nn.Sequential(Attn()).eval()
    masks = prunelab.prune(net, "head-magnitude", sparsity=0.5)
    assert heads_of(net, masks).pruned() == 1
    with pytest.raises(ShrinkError, match="heads of 0"):
        shrink(net, masks, example_input=torch.randn(1, 3, 8))


def test_a_recipe_of_head_masks_reapplies():
    from prunelab.io.recipes import Recipe

    vit = _vit()
    pruner = prunelab.Pruner(vit, "head-magnitude")
    masks = pruner.masks(sparsity=0.5)
    again = Recipe.loads(Recipe.from_masks(masks, pruner.strategy).dumps()).masks(vit)
    assert all(torch.equal(heads_of(vit, again)[k], v) for k, v in heads_of(vit, masks).items())
    assert all(torch.equal(again.all()[f], m) for f, m in masks.all().items())


@pytest.mark.parametrize("batch_first", [True, False])
def test_head_pruned_attention_with_every_head_is_multihead_attention(batch_first):
    from prunelab.shrinking.heads import HeadPrunedAttention

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    same = HeadPrunedAttention.from_mha(mha, [0, 1]).eval()
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    for kwargs in ({}, {"key_padding_mask": padding}, {"attn_mask": causal}):
        out, weights = mha(x, x, x, **kwargs)
        out2, weights2 = same(x, x, x, **kwargs)
        assert torch.allclose(out, out2, atol=1e-5) and torch.allclose(weights, weights2, atol=1e-5)
    assert same(x, x, x, need_weights=False)[1] is None


def test_head_pruning_leaves_the_model_untouched():
    from tests.conftest import assert_unchanged, snapshot

    vit = _vit().train()
    before = snapshot(vit)
    pruner = prunelab.Pruner(vit, "head-magnitude")
    masks = pruner.masks(sparsity=0.5)
    pruner.scores()
    x = torch.randn(2, 3, 32, 32)
    prunelab.masked_forward(vit, masks, x)
    prunelab.bake(prunelab.apply(vit, masks))
    shrink(vit, masks, example_input=x)
    assert_unchanged(vit, before)


def test_a_model_without_attention_is_refused_clearly():
    with pytest.raises(ValueError, match=r"can prune none of the 2 layer.*no attention layer"):
        prunelab.prune(
            nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "head-magnitude", sparsity=0.5
        )


def test_shrink_removes_gpt2_mlp_units_and_keeps_the_tie():
    gpt = _gpt2()
    ids = torch.randint(0, 100, (2, 7))
    masks = prunelab.prune(gpt, "weight-norm-channel", sparsity=0.5)  # every Conv1D
    both = masks_for_heads(gpt, select_heads(head_importance(gpt), sparsity=0.5), base=masks)
    for given in (masks, both):
        small = shrink(gpt, given, example_input=ids)
        mlp = small.transformer.h[0].mlp
        assert mlp.c_fc.weight.shape == (32, 64) and mlp.c_proj.weight.shape == (64, 32)
        assert small.config.n_inner == 64 and gpt.config.n_inner is None  # original untouched
        assert small.lm_head.weight is small.transformer.wte.weight
        masked = prunelab.masked_forward(gpt, given, ids).logits
        assert not torch.allclose(masked, gpt(ids).logits, atol=1e-4)  # the pruning mattered
        assert torch.allclose(small(ids).logits, masked, atol=1e-5)
    assert small.transformer.h[0].attn.num_heads == 2


@pytest.mark.parametrize("version", [1, 2])
def test_shrink_removes_torchvision_swin_heads(version):
    from torchvision.models import SwinTransformer
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    torch.manual_seed(0)
    v2 = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2}
    swin = SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 1], num_heads=[2, 4], window_size=[4, 4],
        num_classes=10, **(v2 if version == 2 else {}),
    ).eval()  # fmt: skip
    masks = prunelab.prune(swin, "head-magnitude", sparsity=0.5)
    x = torch.randn(2, 3, 32, 32)
    small = shrink(swin, masks, example_input=x)
    # the second block of stage 1 shifts its windows: the shift mask is covered too
    assert swin.features[1][1].attn.shift_size == [2, 2]
    kept = int(heads_of(swin, masks)["features.3.0.attn"].sum())
    attn = small.features[3][0].attn
    assert (attn.num_heads, attn.head_dim, attn.proj.in_features) == (kept, 12, 12 * kept)
    assert attn.qkv.weight.shape == (36 * kept, 48)
    masked = prunelab.masked_forward(swin, masks, x)
    assert not torch.allclose(masked, swin(x), atol=1e-4)  # the heads mattered
    assert torch.allclose(small(x), masked, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in swin.parameters())
    small.train()(x)
    assert type(swin.features[3][0].attn).__name__.startswith("ShiftedWindowAttention")
