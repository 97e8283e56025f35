"""SparseGPT against a plain implementation of the paper's equations, on small seeded layers.

The reference below follows Frantar & Alistarh (2023), Algorithm 1 without its shortcuts: no
Cholesky trick and no lazy batching. For every column ``j`` in order it inverts the Hessian of
the columns not yet visited, ``H_F = H[j:, j:]``, explicitly; the mask of each block of ``B``
columns is chosen when the block is reached, by the OBS saliency ``w^2 / [H_F^-1]_jj`` (the
paper's ``w^2 / [chol(H^-1)]_jj^2``); then ``err = w_j / [H_F^-1]_jj`` for the pruned
entries and ``W[:, j:] -= err [H_F^-1]_{j, j:}`` on every column after it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.granularity import NM
from prunelab.core.obs import solve_layer
from prunelab.core.sparsegpt import Reconstructed, SparseGPTConfig, reconstruct
from prunelab.core.targets import targets
from tests.conftest import tiny_gpt2

D = torch.float64


def _layer(rows=12, cols=64, samples=256, seed=0, dead=()):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=D)
    # correlated inputs, so that the second-order update matters
    x = torch.randn(samples, cols, generator=gen, dtype=D) @ torch.randn(
        cols, cols, generator=gen, dtype=D
    )
    x[:, list(dead)] = 0
    return w, x


def _hessian(x, percdamp=0.01):
    h = 2 * x.T @ x / x.shape[0]
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    return h + percdamp * h.diagonal().mean() * torch.eye(len(h), dtype=D), dead


def paper_sparsegpt(w, x, *, sparsity=0.5, pattern=None, block=16):
    """Algorithm 1 of the paper, column by column, with explicit inverses."""
    w = w.clone()
    h, dead = _hessian(x)
    w[:, dead] = 0
    rows, cols = w.shape
    inv = [torch.linalg.inv(h[j:, j:]) for j in range(cols)]  # H_F^-1 for F = {j, ...}
    diag = torch.tensor([inv[j][0, 0] for j in range(cols)], dtype=D)
    drop = torch.zeros_like(w, dtype=torch.bool)
    for j in range(cols):
        if pattern is None and j % block == 0:
            end = min(j + block, cols)
            saliency = (w[:, j:end] ** 2 / diag[j:end]).flatten()
            # the layer's exact count, shared out by block as the running total rounds
            k = round(sparsity * rows * end) - round(sparsity * rows * j)
            chosen = torch.zeros(saliency.numel(), dtype=torch.bool)
            chosen[torch.argsort(saliency)[:k]] = True
            drop[:, j:end] = chosen.reshape(rows, end - j)
        if pattern is not None and j % pattern.m == 0:
            saliency = w[:, j : j + pattern.m] ** 2 / diag[j : j + pattern.m]
            lowest = torch.argsort(saliency, dim=1)[:, : pattern.m - pattern.n]
            drop[:, j : j + pattern.m].scatter_(1, lowest, True)
        err = torch.where(drop[:, j], w[:, j], 0.0) / inv[j][0, 0]
        w[:, j:] -= err[:, None] * inv[j][0][None, :]
        w[:, j][drop[:, j]] = 0
    return w, ~drop


@pytest.mark.parametrize("pattern", [None, NM(2, 4)], ids=["unstructured", "2:4"])
def test_blocked_solver_equals_the_papers_equations(pattern):
    w, x = _layer(dead=(5,))
    h = 2 * x.T @ x / x.shape[0]
    expected, expected_keep = paper_sparsegpt(w, x, pattern=pattern)
    got, keep = solve_layer(w, h, sparsity=0.5, pattern=pattern, blocksize=16)
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert int((~keep).sum()) == w.numel() // 2  # exact sparsity
    if pattern is not None:
        assert bool((keep.reshape(12, -1, 4).sum(-1) == 2).all())  # every group keeps 2 of 4


def test_cholesky_rows_are_the_sequence_of_inverses():
    _, x = _layer(cols=10)
    h, _ = _hessian(x)
    upper = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    for j in range(10):
        torch.testing.assert_close(upper[j, j] * upper[j, j:], torch.linalg.inv(h[j:, j:])[0])


def _linear(seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(64, 16).double().eval()
    # correlated features of different scales (as a transformer's are)
    x = torch.randn(512, 64, dtype=D) @ torch.randn(64, 64, dtype=D) * torch.logspace(-1, 1, 64)
    return layer, x


def test_reconstruction_error_beats_magnitude_and_wanda():
    layer, x = _linear()
    with torch.no_grad():
        dense = layer(x)
    calibration = prunelab.Calibration(layer, x, batches=1, batch_size=512)
    errors = {}
    for name in ("sparsegpt", "layer-magnitude", "wanda"):
        masks = prunelab.prune(layer, name, sparsity=0.5, calibration=calibration)
        assert masks.sparsity() == 0.5
        errors[name] = float((prunelab.masked_forward(layer, masks, x) - dense).detach().norm())
    assert errors["sparsegpt"] < errors["wanda"] < errors["layer-magnitude"], errors


def test_model_unchanged_and_result_is_new_weights_plus_masks():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).double().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(128, 8, dtype=D)
    result = prunelab.prune(
        net,
        prunelab.get_strategy("sparsegpt", granularity="2:4"),
        calibration=prunelab.Calibration(net, x),
    )
    assert isinstance(result, Reconstructed) and result.sparsity() == 0.5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    for fqn, mask in result.items():
        assert bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all())
        assert not torch.equal(result.weights[fqn][mask], net.get_parameter(fqn)[mask])
    pruned = result.apply(net)  # a copy carrying the new weights and the masks
    assert pruned is not net and hasattr(pruned[0], "weight_mask")
    torch.testing.assert_close(pruned(x), prunelab.masked_forward(net, result, x))
    assert not hasattr(net[0], "weight_mask")


def test_layers_see_the_pruned_outputs_of_earlier_layers():
    # "layer" order: the second layer's Hessian comes from the first layer's pruned outputs
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)).double().eval()
    x = torch.randn(64, 8, dtype=D)
    found = targets(net)
    both = dict.fromkeys([t.fqn for t in found], 0.5)
    result = reconstruct(net, [x], found, sparsity=both, config=SparseGPTConfig(sequential="layer"))
    first = x @ prunelab.core.apply.masked_weights(net, result)["0.weight"].T + net[0].bias
    expected, keep = solve_layer(
        net[1].weight.detach(), 2 * first.T @ first / 64, sparsity=0.5, blocksize=128
    )
    torch.testing.assert_close(result.weights["1.weight"], expected)
    assert torch.equal(result["1.weight"], keep)


def test_hooks_are_removed_and_errors_are_clear():
    net = nn.Sequential(nn.Linear(8, 8), nn.Conv1d(1, 1, 3))
    with pytest.raises(ValueError, match="needs calibration"):
        prunelab.prune(net, "sparsegpt", sparsity=0.5)
    found = targets(net)
    with pytest.raises(ValueError, match="reconstructs linear layers"):
        reconstruct(net, [torch.randn(2, 8)], found, sparsity={})
    assert prunelab.get_strategy("sparsegpt").unsupported(found[1]) is not None
    with pytest.raises(ValueError, match="unstructured or N:M"):
        prunelab.get_strategy("sparsegpt", granularity="channel")
    linear = nn.Linear(8, 8)
    reconstruct(linear, [torch.randn(4, 8)], targets(linear), sparsity={"weight": 0.5})
    assert not linear._forward_hooks and not linear._forward_pre_hooks


@pytest.mark.slow  # imports transformers (seconds)
def test_gpt2_conv1d_layout_gives_the_same_result_as_linear():
    # Conv1D stores (in, out); linear_rows transposes it: same masks and weights, transposed
    from transformers.pytorch_utils import Conv1D

    from prunelab.core.targets import Target

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = tiny_gpt2(vocab_size=64).transformer

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).last_hidden_state

    conv = Hidden().eval()
    linear = Hidden().eval()
    linear.load_state_dict(conv.state_dict())
    for name, module in list(linear.named_modules()):
        if isinstance(module, Conv1D):
            swapped = nn.Linear(*module.weight.shape)
            with torch.no_grad():
                swapped.weight.copy_(module.weight.T)
                swapped.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(linear.get_submodule(parent), child, swapped)
    found = [
        Target(
            f"{n}.weight", "Conv1D", tuple(m.weight.shape), m.weight.numel(), out_dim=1, in_dim=0
        )
        for n, m in conv.named_modules()
        if isinstance(m, Conv1D)
    ]
    as_linear = [Target(t.fqn, "Linear", t.shape[::-1], t.numel) for t in found]
    data = [torch.randint(0, 64, (4, 16)) for _ in range(2)]
    half = {t.fqn: 0.5 for t in found}
    a = reconstruct(conv, data, found, sparsity=half)
    b = reconstruct(linear, data, as_linear, sparsity=half)
    for fqn in half:
        assert torch.equal(a[fqn], b[fqn].T)
        torch.testing.assert_close(a.weights[fqn], b.weights[fqn].T)


def test_recipe_reapplies_sparsegpt_with_its_new_weights(tmp_path):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(128, 8)
    calibration = prunelab.Calibration(net, x)
    strategy = prunelab.get_strategy("sparsegpt", granularity="2:4")
    result = prunelab.Pruner(net, strategy, calibration=calibration).masks()
    prunelab.Recipe.from_masks(result, strategy).save(tmp_path / "r.yaml")
    again = prunelab.Recipe.load(tmp_path / "r.yaml").masks(net, calibration)
    assert isinstance(again, Reconstructed)
    assert all(torch.equal(again.weights[f], w) for f, w in result.weights.items())


def test_recipe_keeps_the_solvers_options(tmp_path):
    # a recipe that forgot percdamp and blocksize re-applied with the defaults: other weights
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(96, 64) @ torch.randn(64, 64)  # correlated: the options matter
    calibration = prunelab.Calibration(net, x)
    strategy = prunelab.get_strategy("sparsegpt", blocksize=32, percdamp=0.3, sequential="layer")
    result = prunelab.Pruner(net, strategy, calibration=calibration).masks(sparsity=0.5)
    recipe = prunelab.Recipe.from_masks(result, strategy)
    assert recipe.options == {"blocksize": 32, "percdamp": 0.3, "sequential": "layer"}
    recipe.save(tmp_path / "r.yaml")
    again = prunelab.Recipe.load(tmp_path / "r.yaml").masks(net, calibration)
    assert all(torch.equal(again.weights[f], w) for f, w in result.weights.items())
    plain = prunelab.Recipe(strategy="sparsegpt", layers=recipe.layers).masks(net, calibration)
    assert not torch.equal(plain.weights["0.weight"], result.weights["0.weight"])


def test_saved_result_loads_back_as_masks_or_with_its_weights(tmp_path):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    calibration = prunelab.Calibration(net, torch.randn(64, 8))
    result = prunelab.prune(net, "sparsegpt", sparsity=0.5, calibration=calibration)
    result.save(tmp_path / "r.pt")
    masks = prunelab.Masks.load(tmp_path / "r.pt")  # the masks alone, as for any masks file
    assert type(masks) is prunelab.Masks and all(torch.equal(masks[f], result[f]) for f in result)
    again = Reconstructed.load(tmp_path / "r.pt")
    assert all(torch.equal(again.weights[f], w) for f, w in result.weights.items())
    result.masks().save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="without SparseGPT's weights"):
        Reconstructed.load(tmp_path / "m.pt")
