"""Data-aware head importance (Michel et al., 2019) and the strategy head-taylor.

The scores are checked against the paper's definition taken literally: a gate xi_h = 1
multiplies each head's output, and I_h = sum over batches |dL/dxi_h|, each layer divided by
its L2 norm. The engine never inserts a gate (it reads the output projections' weight
gradients), so agreeing with a gated reference is the test that the Taylor identity and the
head layout are right."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab
from prunelab.core.head_scores import head_taylor_importance
from prunelab.core.heads import head_importance, heads_of
from tests.conftest import assert_unchanged, snapshot, tiny_gpt2


class Attend(nn.Module):
    """Embedding -> nn.MultiheadAttention -> mean over positions -> classifier."""

    def __init__(self, width=8, heads=2, classes=3, vocab=11):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(dim=1))


def _gated_attend(model: Attend, ids: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """``model``'s forward written out, with ``xi[h]`` multiplying head h's output."""
    attn = model.attn
    x = model.embed(ids)
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, t, _ = x.shape
    split = lambda z: z.reshape(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
    weights = (split(q) @ split(k).transpose(-1, -2) / attn.head_dim**0.5).softmax(dim=-1)
    heads = (weights @ split(v)) * xi[None, :, None, None]  # (batch, head, position, dim)
    merged = heads.transpose(1, 2).reshape(b, t, -1)
    return model.head(attn.out_proj(merged).mean(dim=1))


def _layer_normalised(totals: dict) -> dict:
    return {k: v / (v.norm() + 1e-20) for k, v in totals.items()}


def _batches(n=24, size=8, vocab=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, 5), generator=g), torch.randint(0, 3, (n,), generator=g)


def test_mha_scores_are_the_summed_abs_gradients_of_a_gate_on_each_head():
    torch.manual_seed(0)
    model = Attend().eval()
    ids, labels = _batches()
    xi = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(_gated_attend(model, ids, xi), model(ids))  # same model
    total = torch.zeros(2)
    for start in range(0, 24, 8):  # per batch: |dL/dxi| of the batch's mean loss
        loss = F.cross_entropy(_gated_attend(model, ids[start : start + 8], xi), labels[start:][:8])
        (grad,) = torch.autograd.grad(loss, xi)
        total += grad.abs()
    before = snapshot(model)
    wanted = [p.requires_grad for p in model.parameters()]
    cal = prunelab.Calibration(model, (ids, labels), batch_size=8, batches=3)
    scores = head_taylor_importance(model, cal)
    torch.testing.assert_close(scores, _layer_normalised({"attn": total}), rtol=1e-5, atol=1e-7)
    raw = head_taylor_importance(model, cal, normalize=False)
    torch.testing.assert_close(raw["attn"], total, rtol=1e-5, atol=1e-7)
    assert_unchanged(model, before)
    assert [p.requires_grad for p in model.parameters()] == wanted


def test_gpt2_scores_match_gates_on_c_proj_inputs_and_ignore_minus_100():
    model = tiny_gpt2(n_head=4, n_layer=2, vocab_size=50)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50, (12, 10), generator=g)
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    labels[:3, :4] = -100  # unscored positions must change nothing
    blocks = model.transformer.h
    xi = torch.ones(len(blocks), 4, requires_grad=True)

    def gate(i):
        def pre(module, args):
            (x,) = args
            return (x.unflatten(-1, (4, -1)).mul(xi[i][:, None]).flatten(-2),)

        return pre

    handles = [b.attn.c_proj.register_forward_pre_hook(gate(i)) for i, b in enumerate(blocks)]
    total = torch.zeros(len(blocks), 4)
    try:
        for start in range(0, 12, 4):
            logits = model(ids[start : start + 4]).logits
            loss = F.cross_entropy(logits.flatten(0, 1), labels[start : start + 4].reshape(-1))
            (grad,) = torch.autograd.grad(loss, xi)
            total += grad.abs()
    finally:
        for handle in handles:
            handle.remove()
    model.zero_grad(set_to_none=True)
    before = snapshot(model)
    cal = prunelab.Calibration(model, (ids, labels), batch_size=4, batches=3)
    scores = head_taylor_importance(model, cal)
    wanted = _layer_normalised({f"transformer.h.{i}.attn": total[i] for i in range(len(blocks))})
    torch.testing.assert_close(scores, wanted, rtol=1e-4, atol=1e-6)
    minmax = head_taylor_importance(model, cal, minmax=True)
    every = torch.cat(list(minmax.values()))
    assert float(every.min()) == 0.0 and float(every.max()) == pytest.approx(1.0)
    # the strategy prunes the lowest scores: here the 4 lowest of 8, ranked globally
    masks = prunelab.prune(model, "head-taylor", sparsity=0.5, calibration=cal)
    order = sorted((float(s), f, h) for f, v in scores.items() for h, s in enumerate(v))
    lowest = {(f, h) for _, f, h in order[:4]}
    pruned = {(f, h) for f, kept in heads_of(model, masks).items() for h in range(4) if not kept[h]}
    assert pruned == lowest
    assert_unchanged(model, before)


def _loud_useless_head() -> Attend:
    """Head 1 has ten times head 0's weights, but it writes only to features the classifier
    does not read: pruning it changes nothing, pruning head 0 changes the outputs."""
    torch.manual_seed(0)
    model = Attend(width=8, heads=2).eval()
    with torch.no_grad():
        model.attn.in_proj_weight[4:8].mul_(10)  # head 1's queries, keys and values
        model.attn.in_proj_weight[12:16].mul_(10)
        model.attn.in_proj_weight[20:24].mul_(10)
        out = model.attn.out_proj.weight
        out.zero_()
        out[:4, :4] = torch.randn(4, 4)  # head 0 -> features 0-3
        out[4:, 4:] = 10 * torch.randn(4, 4)  # head 1 -> features 4-7
        model.head.weight[:, 4:] = 0  # read by nobody
    return model


def test_a_loud_head_the_loss_ignores_is_kept_by_magnitude_and_pruned_by_taylor():
    model = _loud_useless_head()
    ids, labels = _batches()
    cal = prunelab.Calibration(model, (ids, labels), batch_size=8, batches=3)
    norms = head_importance(model)["attn"]
    taylor = head_taylor_importance(model, cal)["attn"]
    assert norms[1] > 5 * norms[0] and float(taylor[1]) == 0.0 < float(taylor[0])
    by_norm = prunelab.prune(model, "head-magnitude", sparsity=0.5)
    by_taylor = prunelab.prune(model, "head-taylor", sparsity=0.5, calibration=cal)
    assert heads_of(model, by_norm)["attn"].tolist() == [False, True]  # loses the useful head
    assert heads_of(model, by_taylor)["attn"].tolist() == [True, False]
    with torch.no_grad():
        dense = model(ids)
        torch.testing.assert_close(prunelab.masked_forward(model, by_taylor, ids), dense)
        assert not torch.allclose(prunelab.masked_forward(model, by_norm, ids), dense)


def test_head_taylor_says_what_it_needs():
    model = Attend()
    ids, labels = _batches()
    with pytest.raises(ValueError, match="needs calibration data"):
        prunelab.prune(model, "head-taylor", sparsity=0.5)
    with pytest.raises(ValueError, match="labelled calibration data"):
        head_taylor_importance(model, prunelab.Calibration(model, ids))
    with pytest.raises(TypeError, match=r"prunelab.Calibration\(model, \(inputs, labels\)\)"):
        head_taylor_importance(model, (ids, labels))
    other = Attend()
    with pytest.raises(ValueError, match="different model"):
        head_taylor_importance(model, prunelab.Calibration(other, (ids, labels)))
    mlp = nn.Sequential(nn.Linear(4, 3))
    data = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="no attention layer"):
        prunelab.prune(
            mlp, "head-taylor", sparsity=0.5, calibration=prunelab.Calibration(mlp, data)
        )


def test_head_taylor_is_listed_with_its_options_and_prunes_per_layer():
    assert prunelab.list_strategies().index("head-taylor") == (
        prunelab.list_strategies().index("head-magnitude") + 1
    )
    strategy = prunelab.get_strategy("head-taylor", scope="layer", normalize=False)
    assert strategy.needs == frozenset({"gradients"}) and str(strategy.granularity) == "head"
    model = tiny_gpt2(n_head=4)
    ids = torch.randint(0, 50, (8, 6))
    cal = prunelab.Calibration(model, (ids, ids.roll(-1, dims=1)), batch_size=4)
    masks = prunelab.prune(model, strategy, sparsity=0.5, calibration=cal)
    assert [int((~k).sum()) for k in heads_of(model, masks).values()] == [2, 2]


@pytest.mark.parametrize("name", ["head-magnitude", "head-taylor"])
def test_gpt2_head_recipes_re_apply_the_same_heads(name):
    from prunelab.io.recipes import Recipe

    model = tiny_gpt2(n_head=4)
    ids = torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(3))
    cal = prunelab.Calibration(model, (ids, ids.roll(-1, dims=1)), batch_size=4)
    strategy = prunelab.get_strategy(name)
    masks = prunelab.prune(model, strategy, sparsity=0.5, calibration=cal)
    # c_attn is a target too: its recorded sparsity is its layer's fraction of heads pruned
    recipe = Recipe.loads(Recipe.from_masks(masks, strategy).dumps())
    again = recipe.masks(model, cal)
    assert masks.all().keys() == again.all().keys()
    assert all(torch.equal(m, again.all()[fqn]) for fqn, m in masks.all().items())
    pruner = prunelab.Pruner(model, strategy, calibration=cal)
    disagree = {
        "transformer.h.0.attn.c_attn.weight": 0.5,
        "transformer.h.0.attn.c_proj.weight": 0.25,
    }
    with pytest.raises(ValueError, match="sparsities must agree"):
        pruner.masks(sparsity=0.0, per_layer=disagree)
