"""Wanda with the paper's comparison group (each output row) against a from-the-paper version.

Sun et al. (2024): score ``S_ij = |W_ij| * ||X_j||_2`` (the norm of input feature ``j`` over
all calibration tokens) and, within each output row ``i``, prune the ``s`` fraction of lowest
scores.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.strategies import strategy_options


def paper_wanda(weight: torch.Tensor, x: torch.Tensor, sparsity: float) -> torch.Tensor:
    score = weight.abs() * x.norm(dim=0)  # |W_ij| * ||X_j||_2, broadcast over rows
    pruned = torch.argsort(score, dim=1)[:, : int(weight.shape[1] * sparsity)]
    return torch.ones_like(weight, dtype=torch.bool).scatter_(1, pruned, False)


def _setup(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 6)).eval()
    # inputs of very different scales per feature: the outliers Wanda is about
    x = torch.randn(200, 16) * torch.logspace(-1, 1, 16)
    return net, x


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_wanda_equals_the_papers_per_row_selection(sparsity):
    net, x = _setup()
    masks = prunelab.prune(
        net, "wanda", sparsity=sparsity, calibration=prunelab.Calibration(net, x)
    )
    hidden = torch.relu(net[0](x)).detach()
    assert torch.equal(masks["0.weight"], paper_wanda(net[0].weight.detach(), x, sparsity))
    assert torch.equal(masks["2.weight"], paper_wanda(net[2].weight.detach(), hidden, sparsity))
    rows = masks["0.weight"].sum(dim=1)
    assert bool((rows == rows[0]).all())  # every row loses the same share


def test_per_layer_ranking_is_kept_and_differs():
    net, x = _setup()
    cal = prunelab.Calibration(net, x)
    layer = prunelab.prune(net, "layer-activation-magnitude", sparsity=0.5, calibration=cal)
    rows = prunelab.prune(net, "wanda", sparsity=0.5, calibration=cal)
    assert layer.sparsity() == rows.sparsity() == 0.5
    assert not torch.equal(layer["0.weight"], rows["0.weight"])
    kept_per_row = layer["0.weight"].sum(dim=1)
    assert kept_per_row.min() < kept_per_row.max()  # one ranking: rows lose different shares


def test_names_options_and_refusals():
    assert prunelab.get_strategy("activation-magnitude", comparison="row").name == "wanda"
    assert prunelab.get_strategy("activation-magnitude").name == "layer-activation-magnitude"
    assert "comparison" in [o.name for o in strategy_options("activation-magnitude")]
    assert "comparison" not in [o.name for o in strategy_options("wanda")]
    with pytest.raises(ValueError, match="scope='layer'"):
        prunelab.get_strategy("activation-magnitude", comparison="row", scope="global")
    with pytest.raises(ValueError, match="scope='layer'"):
        prunelab.get_strategy("wanda", granularity="channel")
    with pytest.raises(ValueError, match="comparison must be"):
        prunelab.get_strategy("activation-magnitude", comparison="column")
    # N:M groups lie within a row: the same masks either way
    net, x = _setup()
    cal = prunelab.Calibration(net, x)
    a = prunelab.prune(net, prunelab.get_strategy("wanda", granularity="2:4"), calibration=cal)
    b = prunelab.prune(
        net, prunelab.get_strategy("layer-activation-magnitude", granularity="2:4"), calibration=cal
    )
    assert all(torch.equal(a[f], b[f]) for f in a)


def test_a_fraction_of_a_weight_per_row_still_gives_the_layers_exact_count():
    # 0.5 of 5 inputs is 2.5 per row: the layer loses round(0.5 * 15) = 8 weights, each row 2
    # or 3, the extra ones in the rows whose third-lowest score is lowest
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 3)).eval()
    x = torch.randn(50, 5)
    masks = prunelab.prune(net, "wanda", sparsity=0.5, calibration=prunelab.Calibration(net, x))
    pruned = (~masks["0.weight"]).sum(dim=1)
    assert int(pruned.sum()) == 8 and set(pruned.tolist()) <= {2, 3}
    score = net[0].weight.detach().abs() * x.norm(dim=0)
    third = score.sort(dim=1).values[:, 2]
    assert pruned.tolist() == [3 if third[i] <= third.sort().values[1] else 2 for i in range(3)]
