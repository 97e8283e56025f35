"""prunelab gives the same masks as torch.nn.utils.prune where both do the same thing."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunelab
from prunelab.core.granularity import Channel
from prunelab.core.targets import grouped_readers
from tests.conftest import make_cnn, make_lstm, make_misc, make_mlp

MODELS = {"mlp": make_mlp, "cnn": make_cnn, "lstm": make_lstm, "misc": make_misc}
SEEDS = [0, 1, 2]


def _torch_layer_masks(model: nn.Module, prune_fn) -> dict[str, torch.Tensor]:
    copy_ = copy.deepcopy(model)
    out = {}
    for target in prunelab.targets(model):
        module = copy_.get_submodule(target.module_fqn) if target.module_fqn else copy_
        prune_fn(module, target.param_name)
        out[target.fqn] = getattr(module, target.param_name + "_mask").bool()
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("amount", [0.1, 0.37, 0.5, 0.9])
def test_layer_magnitude_matches_l1_unstructured(name, seed, amount):
    model = MODELS[name](seed)
    ours = prunelab.prune(model, "layer-magnitude", sparsity=amount)
    theirs = _torch_layer_masks(
        model, lambda m, p: torch_prune.l1_unstructured(m, p, amount=amount)
    )
    assert ours.keys() == theirs.keys()
    for fqn in theirs:
        assert torch.equal(ours[fqn], theirs[fqn]), fqn


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("amount", [0.2, 0.5, 0.8])
def test_global_magnitude_matches_global_unstructured(name, seed, amount):
    model = MODELS[name](seed)
    ours = prunelab.prune(model, "global-magnitude", sparsity=amount)
    copy_ = copy.deepcopy(model)
    pairs = []
    for target in prunelab.targets(model):
        module = copy_.get_submodule(target.module_fqn) if target.module_fqn else copy_
        pairs.append((module, target.param_name))
    torch_prune.global_unstructured(pairs, torch_prune.L1Unstructured, amount=amount)
    for target, (module, pname) in zip(prunelab.targets(model), pairs, strict=True):
        assert torch.equal(ours[target.fqn], getattr(module, pname + "_mask").bool())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["mlp", "cnn", "misc"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75])
def test_weight_norm_channel_matches_ln_structured(name, seed, p, amount):
    model = MODELS[name](seed)
    # torch prunes every module it is given, the output layer too: include it explicitly
    strategy = prunelab.get_strategy("weight-norm-channel", p=p, prune_outputs=True)
    pruner = prunelab.Pruner(model, strategy, targets=[t.fqn for t in _dim0_targets(model)])
    ours = pruner.masks(sparsity=amount)
    theirs = {}
    copy_ = copy.deepcopy(model)
    for target in _dim0_targets(model):
        module = copy_.get_submodule(target.module_fqn)
        torch_prune.ln_structured(module, target.param_name, amount=amount, n=p, dim=0)
        theirs[target.fqn] = getattr(module, target.param_name + "_mask").bool()
    assert ours.keys() == theirs.keys()
    for fqn in theirs:
        assert torch.equal(ours[fqn], theirs[fqn]), fqn


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_weight_norm_channel_by_default_matches_ln_structured_except_the_output_layer(name):
    model = MODELS[name](0)
    output = prunelab.targets(model)[-1].fqn
    ours = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    copy_ = copy.deepcopy(model)
    for target in prunelab.targets(model):
        if target.fqn == output:
            assert bool(ours[output].all())  # every class kept
            continue
        module = copy_.get_submodule(target.module_fqn)
        torch_prune.ln_structured(module, target.param_name, amount=0.5, n=1, dim=0)
        assert torch.equal(ours[target.fqn], getattr(module, target.param_name + "_mask").bool())


def _dim0_targets(model):
    # torch's ln_structured(dim=0) prunes output channels only where dim 0 *is* the output.
    # A grouped convolution, and a layer a grouped convolution reads, are pruned by position
    # instead (every group loses the same positions, which is what shrink can remove), a
    # choice torch's per-channel pruning does not make: those are left out of the comparison.
    found = [t for t in prunelab.targets(model) if t.out_dim == 0]
    readers = grouped_readers(model, found)
    found = [replace(t, out_groups=readers.get(t.fqn, 1)) for t in found]
    return [t for t in found if Channel.positions(t) is None]


def test_random_is_reproducible_from_its_seed():
    model = make_cnn(0)
    a = prunelab.prune(model, "random", sparsity=0.5, seed=3)
    b = prunelab.prune(model, "random", sparsity=0.5, seed=3)
    c = prunelab.prune(model, "random", sparsity=0.5, seed=4)
    assert all(torch.equal(a[f], b[f]) for f in a)
    assert not all(torch.equal(a[f], c[f]) for f in a)


def test_random_layer_masks_do_not_depend_on_other_layers():
    model = make_cnn(0)
    alone = prunelab.Pruner(model, "random", targets=["3.weight"], seed=7).masks(sparsity=0.4)
    together = prunelab.Pruner(model, "random", seed=7).masks(sparsity=0.4)
    assert torch.equal(alone["3.weight"], together["3.weight"])


def test_masks_through_torch_prune_give_the_same_forward(cnn, cnn_data):
    masks = prunelab.prune(cnn, "layer-magnitude", sparsity=0.6)
    x = cnn_data[0][:4]
    cnn.eval()
    copy_ = copy.deepcopy(cnn)
    for target in prunelab.targets(cnn):
        module = copy_.get_submodule(target.module_fqn)
        torch_prune.l1_unstructured(module, target.param_name, amount=0.6)
    with torch.no_grad():
        assert torch.allclose(prunelab.masked_forward(cnn, masks, x), copy_(x), atol=1e-6)
