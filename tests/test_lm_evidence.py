"""Evidence for the language-model methods on a tiny GPT-2 built here (issue 20): SparseGPT
damages the model less than magnitude pruning at 50%, and a recipe with per-layer sparsities
re-applies with SparseGPT to the same weights, masks and perplexity."""

from __future__ import annotations

import pytest
import torch

import prunelab
from prunelab.io.recipes import Recipe

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT = 48, 16


def _tokens(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences with structure to learn: each token is the previous one plus a small step."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=generator)
    steps = torch.randint(1, 4, (n, CONTEXT), generator=generator)
    ids = (start + steps.cumsum(1)) % VOCAB
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


@pytest.fixture(scope="module")
def lm():
    """A 2-layer GPT-2 (n_embd 32) trained for a few seconds, so perplexity means something."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2
    )
    model = transformers.GPT2LMHeadModel(config)
    inputs, labels = _tokens(0, 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(60):
        batch = slice((step % 8) * 32, (step % 8 + 1) * 32)
        logits = model(inputs[batch]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), labels[batch].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_sparsegpt_beats_magnitude_at_half(lm):
    calibration = prunelab.Calibration(lm, _tokens(1, 64), batches=2, batch_size=32)
    test = _tokens(2, 64)
    dense = prunelab.evaluate(lm, test)["perplexity"]
    assert dense < VOCAB / 4  # trained: far better than guessing
    scores = {}
    for name in ("layer-magnitude", "sparsegpt"):
        masks = prunelab.prune(lm, name, sparsity=0.5, calibration=calibration)
        scores[name] = prunelab.evaluate(lm, test, masks=masks)
    assert scores["sparsegpt"]["perplexity"] < scores["layer-magnitude"]["perplexity"]
    assert scores["sparsegpt"]["kl"] < scores["layer-magnitude"]["kl"]  # nearer the dense model


def test_per_layer_recipe_reapplies_with_sparsegpt(lm):
    calibration = prunelab.Calibration(lm, _tokens(1, 64), batches=2, batch_size=32)
    layers = [t.fqn for t in prunelab.core.targets.targets(lm)]
    per_layer = {fqn: (0.3, 0.5, 0.7)[i % 3] for i, fqn in enumerate(layers)}
    recipe = Recipe(strategy="sparsegpt", layers=per_layer)
    first = recipe.masks(lm, calibration)
    again = Recipe.loads(recipe.dumps()).masks(lm, calibration)
    assert isinstance(again, prunelab.Reconstructed)
    for fqn in layers:
        assert torch.equal(first[fqn], again[fqn])
        assert torch.equal(first.weights[fqn], again.weights[fqn])
        pruned = 1 - first[fqn].float().mean().item()
        assert pruned == pytest.approx(per_layer[fqn], abs=0.02)
    test = _tokens(2, 32)
    one = prunelab.evaluate(lm, test, masks=first)["perplexity"]
    assert prunelab.evaluate(lm, test, masks=again)["perplexity"] == one
    # the recipe read back from the masks re-applies to the same result, too
    from_masks = Recipe.from_masks(first, prunelab.get_strategy("sparsegpt"))
    assert prunelab.evaluate(lm, test, masks=from_masks.masks(lm, calibration))["perplexity"] == (
        pytest.approx(one, rel=1e-6)
    )
