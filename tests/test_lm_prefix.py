"""Per-layer sensitivity for transformers: block prefix caching, block x projection groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunelab.figures import block_heatmap
from prunelab.runtime.functional import functional_forward
from prunelab.sweeps import prefix as prefix_module
from prunelab.sweeps import sensitivity
from prunelab.sweeps.blocks import block_stack, layer_group
from prunelab.sweeps.prefix import BlockPlan, PrefixPlan
from tests.conftest import tiny_gpt2


@pytest.fixture(scope="module")
def gpt2():
    pytest.importorskip("transformers")
    return tiny_gpt2(n_layer=3, vocab_size=64)


@pytest.mark.slow
def test_block_plan_equals_a_full_forward_on_gpt2(gpt2):
    inputs = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    plan = PrefixPlan.for_model(gpt2, inputs)
    assert isinstance(plan, BlockPlan)  # fx cannot trace Hugging Face models
    recorded = plan.record([1, 2], inputs)
    for block in (1, 2):
        for name in ("attn.c_attn.weight", "mlp.c_proj.weight"):
            fqn = f"transformer.h.{block}.{name}"
            assert plan.cut_for(fqn) == block
            weight = gpt2.get_parameter(fqn)
            overrides = {fqn: weight * (torch.rand_like(weight) > 0.5)}
            with torch.no_grad():
                full = functional_forward(gpt2, overrides, inputs).logits
                cached = plan.suffix(block, recorded[block], overrides).logits
                again = plan.suffix(block, plan.prefix(block, inputs), overrides).logits
            torch.testing.assert_close(cached, full, atol=1e-6, rtol=0)
            torch.testing.assert_close(again, full, atol=1e-6, rtol=0)
    assert plan.cut_for("transformer.h.0.mlp.c_fc.weight") is None  # nothing before it
    assert plan.cut_for("lm_head.weight") is None
    # the model given is untouched: no hooks left, blocks in place
    assert all(not b._forward_hooks for b in gpt2.transformer.h)
    assert all(isinstance(b, type(gpt2.transformer.h[0])) for b in gpt2.transformer.h)


def test_gpt2_projections(gpt2):
    assert block_stack(gpt2)[0] == "transformer.h"
    names = {
        "transformer.h.2.attn.c_attn.weight": (2, "qkv"),  # q, k, v fused
        "transformer.h.2.attn.c_proj.weight": (2, "o"),
        "transformer.h.0.mlp.c_fc.weight": (0, "up"),
        "transformer.h.0.mlp.c_proj.weight": (0, "down"),
    }
    for fqn, group in names.items():
        assert layer_group(gpt2, fqn) == group
    assert layer_group(gpt2, "lm_head.weight") is None


class Block(nn.Module):
    """A pre-norm transformer block with separate q, k, v, o, up, down projections."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.o_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.up_proj, self.down_proj = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        h = self.norm(x)
        scores = self.q_proj(h) @ self.k_proj(h).transpose(1, 2) / h.shape[-1] ** 0.5
        x = x + self.o_proj(scores.masked_fill(mask, -1e9).softmax(-1) @ self.v_proj(h))
        return x + self.down_proj(torch.relu(self.up_proj(x))), None  # a tuple, as HF's were


class TinyTransformer(nn.Module):
    """Untraceable by fx (it branches on a tensor's value), like Hugging Face models."""

    def __init__(self, vocab: int = 32, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(blocks))
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if bool(ids.max() < 0):  # data-dependent control flow: fx gives up
            raise ValueError("negative ids")
        t = ids.shape[1]
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask)[0]
        return self.head(x)


def test_sensitivity_with_block_caching_equals_full_passes(monkeypatch):
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    ids = torch.randint(0, 32, (6, 9), generator=torch.Generator().manual_seed(2))
    data = (ids, torch.roll(ids, -1, dims=1))
    assert isinstance(PrefixPlan.for_model(model, ids), BlockPlan)
    cached = sensitivity(model, data, sparsities=[0.7])
    monkeypatch.setattr(prefix_module.BlockPlan, "for_model", classmethod(lambda c, m, e: None))
    full = sensitivity(model, data, sparsities=[0.7])
    assert cached.attrs["metric"] == "perplexity"
    for column in ("perplexity", "agreement", "kl", "drop"):
        assert cached[column].to_numpy() == pytest.approx(full[column].to_numpy(), abs=1e-6)
    rows = cached.set_index("layer")
    assert (
        rows.loc["layers.1.v_proj.weight", "block"],
        rows.loc["layers.1.v_proj.weight", "projection"],
    ) == (1, "v")
    assert rows.loc["head.weight", "block"] == -1
    fig = block_heatmap(cached)
    assert list(fig.data[0].x) == ["q", "k", "v", "o", "up", "down"]
    assert len(fig.data[0].y) == 3 and "rise in perplexity" in fig.layout.title.text.lower()


def test_figures_say_rise_for_perplexity():
    import pandas as pd

    from prunelab.figures import sensitivity_heatmap, sparsity_curves

    table = pd.DataFrame(
        {"layer": ["a", "a"], "sparsity": [0.5, 0.9], "perplexity": [20.0, 35.5], "drop": [1, 9]}
    )
    table.attrs["metric"] = "perplexity"
    heat = sensitivity_heatmap(table)
    assert heat.data[0].colorbar.title.text == "rise"
    assert "rise in perplexity" in heat.layout.title.text
    curve = sparsity_curves(table, metric="perplexity", by="layer")
    assert "%" not in (curve.layout.yaxis.title.text or "")


@pytest.mark.parametrize(
    ("metric", "words"), [("loss", "mean loss"), ("kl", "KL(dense || pruned)")]
)
def test_every_lower_is_better_drop_is_called_a_rise(metric, words):
    # the sweeps store a loss's drop as value minus dense (a rise): its title must say so
    import pandas as pd

    from prunelab.figures import plan_steps, sensitivity_heatmap

    table = pd.DataFrame({"layer": ["a"], "sparsity": [0.5], metric: [2.5], "drop": [0.4]})
    table.attrs["metric"] = metric
    assert f"rise in {words}" in sensitivity_heatmap(table).layout.title.text
    steps = pd.DataFrame(
        {"step": [0], "summed_drop": [0.3], "predicted_drop": [0.35], "measured_drop": [0.4]}
    )
    fig = plan_steps(steps, metric=metric)
    assert fig.layout.title.text.startswith("Rise in") and fig.layout.yaxis.title.text == "rise"
    assert fig.data[0].name == "sum of single-layer rises"
