"""Known allocations, each checked against a straightforward version written from its paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import prunelab
from prunelab.sweeps.allocations import allocation, layer_weights, outlier_ratios


def _weights(sizes=((20, 10), (30, 20), (8, 4, 3, 3))):
    gen = torch.Generator().manual_seed(0)
    return {f"l{i}": torch.randn(*s, generator=gen) * (i + 1) for i, s in enumerate(sizes)}


def _overall(per_layer, weights):
    total = sum(w.numel() for w in weights.values())
    return sum(per_layer[k] * w.numel() for k, w in weights.items()) / total


@pytest.mark.parametrize("name", ["uniform", "global-magnitude", "lamp", "erk", "owl"])
@pytest.mark.parametrize("target", [0.5, 0.8])
def test_every_allocation_meets_the_overall_target(name, target):
    weights = _weights()
    per_layer = allocation(name, weights, target)
    assert _overall(per_layer, weights) == pytest.approx(target, abs=1e-3)
    assert all(0.0 <= s <= 1.0 for s in per_layer.values())


def test_lamp_matches_the_papers_scores():
    # Lee et al. 2021, eq. (1): score(u) = W[u]^2 / sum_{v >= u} W[v]^2, the weights of the
    # layer sorted in ascending magnitude; prune the lowest scores over all layers
    weights = _weights()
    scores = []
    for name, w in weights.items():
        flat = sorted(float(x) ** 2 for x in w.flatten())
        for u, value in enumerate(flat):
            scores.append((value / sum(flat[u:]), name))
    k = round(0.7 * len(scores))
    pruned = {name: 0 for name in weights}
    for _, name in sorted(scores)[:k]:
        pruned[name] += 1
    expected = {name: pruned[name] / weights[name].numel() for name in weights}
    got = allocation("lamp", weights, 0.7)
    for name in weights:
        assert got[name] == pytest.approx(expected[name], abs=1.5 / weights[name].numel())
    # LAMP keeps every layer's largest weight (score 1)
    assert all(s < 1.0 for s in allocation("lamp", weights, 0.99).values())


def test_erk_matches_rigl():
    # Evci et al. 2020: density_l = eps * (sum of dims) / (product of dims), eps chosen so the
    # kept weights are (1 - target) of all; a layer above dense is fixed dense and eps redone
    shapes = {"a": (4, 3), "b": (64, 32), "c": (128, 64, 3, 3)}
    weights = {k: torch.ones(s) for k, s in shapes.items()}
    target = 0.9
    n = {k: float(np.prod(s)) for k, s in shapes.items()}
    raw = {k: sum(s) / n[k] for k, s in shapes.items()}
    dense = set()
    while True:
        eps = ((1 - target) * sum(n.values()) - sum(n[k] for k in dense)) / sum(
            raw[k] * n[k] for k in shapes if k not in dense
        )
        over = [k for k in shapes if k not in dense and eps * raw[k] > 1]
        if not over:
            break
        dense |= set(over)
    expected = {k: 0.0 if k in dense else 1 - eps * raw[k] for k in shapes}
    got = allocation("erk", weights, target)
    assert got == pytest.approx(expected)
    assert got["a"] == 0.0  # the small layer is kept dense


def test_owl_matches_the_papers_code():
    # Yin et al. 2023 (OWL's lib/prune.py): ratio = mean(W_metric > M * mean(W_metric)),
    # W_metric = |W| * sqrt(scaler_row); ratios scaled to [0, 2 * lambda], shifted so their
    # mean density is 1 - target. Equal-sized layers: the plain and the weighted mean agree.
    gen = torch.Generator().manual_seed(1)
    weights = {f"l{i}": torch.randn(16, 12, generator=gen) ** (1 + i) for i in range(4)}
    norms = {f"l{i}": torch.rand(12, generator=gen) * 3 for i in range(4)}

    class Norms:
        def input_norm(self, fqn):
            return norms[fqn]

    m, lam, target = 5.0, 0.08, 0.7
    ratios = []
    for name, w in weights.items():
        metric = w.abs() * norms[name].reshape(1, -1)
        ratios.append(float((metric > m * metric.mean()).float().mean()))
    ratios = np.array(ratios)
    ratios = (ratios - ratios.min()) * (1 / (ratios.max() - ratios.min()) * lam * 2)
    density = ratios - np.mean(ratios) + (1 - target)
    expected = dict(zip(weights, 1 - density, strict=True))
    got = allocation("owl", weights, target, calibration=Norms(), owl=(m, lam))
    assert got == pytest.approx(expected)
    assert outlier_ratios(weights, Norms())["l3"] > outlier_ratios(weights, Norms())["l0"]


def test_global_magnitude_matches_the_strategy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    layers = [t.fqn for t in prunelab.targets(net)]
    got = allocation("global-magnitude", layer_weights(net, layers), 0.6)
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.6)
    for fqn in layers:
        assert got[fqn] == pytest.approx(1 - masks[fqn].float().mean().item(), abs=1 / 64)


def test_unknown_allocation_and_solver_without_table_are_refused():
    with pytest.raises(ValueError, match="unknown allocation"):
        allocation("magic", _weights(), 0.5)
    with pytest.raises(ValueError, match="sensitivity table"):
        allocation("solver", _weights(), 0.5)
