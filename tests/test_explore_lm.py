"""The notebook explorer on a causal language model: perplexity leads its numbers and its
recipe, as everywhere else for token data."""

from __future__ import annotations

import re

import pytest
import torch

import prunelab
from tests.conftest import tiny_gpt2


@pytest.fixture(scope="module")
def gpt_and_tokens():
    pytest.importorskip("transformers")
    model = tiny_gpt2(vocab_size=64)
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.roll(-1, dims=1)  # next-token ids; -100: the last position is not scored
    labels[:, -1] = -100
    return model, (ids, labels)


def _cards(lab):
    return re.findall(r'class="prunelab-card"[^>]*><div[^>]*>([^<]+)</div>', lab.cards.value)


@pytest.mark.slow
def test_a_language_model_is_explored_by_perplexity(gpt_and_tokens):
    model, data = gpt_and_tokens
    lab = prunelab.explore(model, data, strategy="layer-magnitude", sparsity=0.5)
    labels = _cards(lab)
    assert labels.index("Perplexity") < labels.index("Next-token accuracy")
    assert "Accuracy" not in labels  # it is next-token accuracy here, and says so
    expected = prunelab.evaluate(model, data, masks=lab.masks)["perplexity"]
    assert f"{expected:.2f}" in lab.cards.value
    lab.sparsity_slider.value = 0.8
    provenance = lab.recipe().provenance
    assert provenance.metric == "perplexity"
    assert provenance.measured == pytest.approx(lab.metrics["perplexity"])
    assert provenance.baseline == pytest.approx(lab.dense_metrics["perplexity"])
    assert provenance.measured != provenance.baseline  # the pruned model, not the dense one


def test_a_classifier_keeps_accuracy_first(mlp, mlp_data):
    lab = prunelab.explore(mlp, mlp_data, sparsity=0.5)
    assert "Perplexity" not in _cards(lab) and "Accuracy" in _cards(lab)
    assert lab.recipe().provenance.metric == "accuracy"
