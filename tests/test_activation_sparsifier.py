"""The activation sparsifier: masks equal a hand computation and PyTorch's own sparsifier,
per tensor and per feature; the given model is never hooked; bad input is refused clearly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunelab.activations import (
    AGGREGATE_FNS,
    MASK_FNS,
    REDUCE_FNS,
    ActivationSparsifier,
    sparsity_mask,
    threshold_mask,
)
from tests.conftest import assert_unchanged, make_cnn, make_mlp, snapshot

try:
    from torch.ao.pruning._experimental.activation_sparsifier.activation_sparsifier import (
        ActivationSparsifier as TorchSparsifier,
    )
except ImportError:  # pragma: no cover - depends on the torch build
    TorchSparsifier = None


def _batches(n: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, *shape, generator=gen) for _ in range(n)]


def _inputs_of(model: nn.Module, name: str, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(
        lambda m, args: seen.append(args[0].clone())
    )
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        handle.remove()
    return seen


def test_per_tensor_mask_matches_a_hand_computation():
    model = make_mlp().eval()
    batches = _batches(3, (12,))
    sparsifier = ActivationSparsifier(model, threshold=0.4)
    sparsifier.register_layer("2")  # the input of the second Linear: ReLU(Linear(x))
    for x in batches:
        with torch.no_grad():
            sparsifier.model(x)
    sparsifier.step()
    inputs = _inputs_of(model, "2", batches)
    expected = torch.stack(inputs).sum(0).mean(0).abs() >= 0.4  # sum, mean over batch, |.|
    assert torch.equal(sparsifier.get_mask("2"), expected)
    assert 0 < int(expected.sum()) < 16

    sparse = sparsifier.squash_mask()
    x = batches[0]
    with torch.no_grad():
        hidden = model[1](model[0](x)) * expected
        reference = model[4](model[3](model[2](hidden)))
        assert torch.allclose(sparse(x), reference)


def test_per_feature_masks_match_a_hand_computation():
    model = make_cnn().eval()
    batches = _batches(2, (3, 6, 6))
    sparsifier = ActivationSparsifier(
        model,
        aggregate_fn=AGGREGATE_FNS["sum of |x|"],
        reduce_fn=REDUCE_FNS["max over batch"],
        mask_fn=MASK_FNS["sparsity level"],
        sparsity_level=0.5,
    )
    sparsifier.register_layer("3", features=[0, 5, 7], feature_dim=1)
    assert sparsifier.observe(torch.cat(batches), batch_size=4) == 8
    sparsifier.step()
    inputs = torch.stack(_inputs_of(model, "3", batches))  # (batches, 4, 8, 6, 6)
    masks = sparsifier.get_mask(model[3])  # a module of the given model works too
    assert isinstance(masks, list) and len(masks) == 3
    for mask, feature in zip(masks, [0, 5, 7], strict=True):
        reduced = inputs[:, :, feature : feature + 1].abs().sum(0).amax(0)  # (1, 6, 6)
        assert mask.shape == (1, 6, 6)
        assert int(mask.sum()) == 18  # half of the 36 positions
        assert torch.equal(mask, sparsity_mask(reduced, sparsity_level=0.5))

    sparse = sparsifier.squash_mask()
    x = batches[0].clone()
    kept = x.clone()
    with torch.no_grad():
        hidden = model[2](model[1](model[0](x)))
        masked = hidden.clone()
        for mask, feature in zip(masks, [0, 5, 7], strict=True):
            masked[:, feature : feature + 1] *= mask
        expected = model[7](model[6](model[5](model[4](model[3](masked)))))
        assert torch.allclose(sparse(x), expected, atol=1e-6)
    assert torch.equal(x, kept)  # the caller's tensors are not written into


@pytest.mark.skipif(TorchSparsifier is None, reason="torch.ao activation sparsifier missing")
@pytest.mark.parametrize("features", [None, [1, 3, 4]])
def test_same_masks_as_pytorchs_sparsifier(features):
    model = make_cnn().eval()
    batches = _batches(3, (3, 6, 6), seed=2)

    def aggregate(a, b):
        return a + b

    def reduce(t):
        return t.mean(0)

    def mask_fn(t, *, sparsity_level):
        return sparsity_mask(t, sparsity_level=sparsity_level)

    options = {"features": features, "feature_dim": 1 if features else None}
    reference_model = copy.deepcopy(model)  # PyTorch's hooks the model it is given
    theirs = TorchSparsifier(
        reference_model, aggregate_fn=aggregate, reduce_fn=reduce, mask_fn=mask_fn, **options
    )
    theirs.register_layer(reference_model[3], sparsity_level=0.3)
    ours = ActivationSparsifier(model, aggregate_fn=aggregate, reduce_fn=reduce, mask_fn=mask_fn)
    ours.register_layer("3", sparsity_level=0.3, **options)
    with torch.no_grad():
        for x in batches:
            reference_model(x)
            ours.model(x)
    theirs.step()
    ours.step()
    expected, got = theirs.get_mask(layer=reference_model[3]), ours.get_mask("3")
    if features is None:
        assert torch.equal(got, expected)
    else:
        assert len(got) == len(expected) == 3
        assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    theirs.squash_mask()
    sparse = ours.squash_mask()
    x = _batches(1, (3, 6, 6), seed=9)[0]
    with torch.no_grad():
        assert torch.allclose(sparse(x.clone()), reference_model(x.clone()), atol=1e-6)


def test_the_given_model_is_never_hooked_or_changed():
    model = make_mlp().eval()
    before = snapshot(model)
    sparsifier = ActivationSparsifier(model, threshold=0.1)
    sparsifier.register_layer(model[2])
    sparsifier.observe(torch.randn(8, 12))
    sparsifier.step()
    sparsifier.squash_mask()
    assert_unchanged(model, before)
    assert sparsifier.model is not model and len(sparsifier.model[2]._forward_pre_hooks) == 1
    plain = sparsifier.squash_mask(attach_sparsify_hook=False)
    assert len(plain[2]._forward_pre_hooks) == 0
    x = torch.randn(3, 12)
    assert torch.allclose(plain(x), model(x))


def test_observe_skips_a_smaller_last_batch_and_steps_start_afresh():
    model = make_mlp().eval()
    sparsifier = ActivationSparsifier(model)
    sparsifier.register_layer("0")
    assert sparsifier.observe(torch.randn(10, 12), batch_size=4) == 8
    sparsifier.step()
    assert bool(sparsifier.get_mask("0").all())  # threshold 0 keeps everything
    with pytest.raises(ValueError, match="since the last step"):
        sparsifier.step()
    sparsifier.unregister_layer("0")
    assert sparsifier.layers == [] and len(sparsifier.model[0]._forward_pre_hooks) == 0


def test_bad_input_gives_clear_errors():
    model = make_mlp().eval()
    sparsifier = ActivationSparsifier(model)
    with pytest.raises(ValueError, match=r"unknown layer 'fc'.*accepted: 0, 1, 2"):
        sparsifier.register_layer("fc")
    with pytest.raises(ValueError, match="not a submodule"):
        sparsifier.register_layer(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="need feature_dim"):
        sparsifier.register_layer("2", features=[0])
    with pytest.raises(ValueError, match="indices >= 0"):
        sparsifier.register_layer("2", features=[-1], feature_dim=1)
    with pytest.raises(TypeError, match="reduce_fn must be callable"):
        sparsifier.register_layer("2", reduce_fn="mean")
    with pytest.raises(ValueError, match="cannot take the sparse config"):
        sparsifier.register_layer("2", sparsity_level=0.5)  # the default mask_fn: threshold
    with pytest.raises(ValueError, match="not registered"):
        sparsifier.get_mask("2")

    sparsifier.register_layer("2", features=[3, 16], feature_dim=1)
    with pytest.raises(ValueError, match=r"feature index \[16\] out of range.*0 to 15"):
        sparsifier.observe(torch.randn(4, 12))

    sparsifier.register_layer("2", mask_fn=lambda t, **_: torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no mask for '2' yet"):
        sparsifier.get_mask("2")
    with pytest.raises(ValueError, match="call step"):
        sparsifier.squash_mask()
    sparsifier.observe(torch.randn(4, 12))
    with pytest.raises(ValueError, match=r"mask_fn returned a mask of shape \(5,\).*\(16,\)"):
        sparsifier.step()

    uneven = ActivationSparsifier(model)
    uneven.register_layer("2")
    uneven.model(torch.randn(4, 12))
    with pytest.raises(ValueError, match="batches must all have the same shape"):
        uneven.model(torch.randn(3, 12))
    assert threshold_mask(torch.tensor([1.0]), threshold=0.5).tolist() == [True]
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        sparsity_mask(torch.ones(3), sparsity_level=2)
