"""Calibration statistics equal direct computations; hooks never outlive their block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.runtime.hooks import forward_hooks
from tests.conftest import make_cnn, make_lstm, make_mlp


def test_gradients_equal_autograd_summed_over_batches(mlp_data):
    model = make_mlp()
    x, y = mlp_data
    cal = prunelab.Calibration(model, (x, y), batches=3, batch_size=16)
    reference = make_mlp()
    expected = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
    for start in range(0, 40, 16):
        reference.zero_grad()
        loss = nn.functional.cross_entropy(reference(x[start : start + 16]), y[start : start + 16])
        loss.backward()
        for n, p in reference.named_parameters():
            expected[n] += p.grad
    for fqn, grad in cal.gradients().items():
        assert torch.allclose(grad, expected[fqn], atol=1e-6), fqn


def test_input_and_output_norms_equal_stored_activations(cnn_data):
    model = make_cnn().eval()
    x = cnn_data[0]
    cal = prunelab.Calibration(model, x, batches=10, batch_size=8)
    seen = {}
    with (
        torch.no_grad(),
        forward_hooks(model, {"3": lambda m, i, o: seen.setdefault("in", []).append(i[0])}),
    ):
        model(x)
    stored = torch.cat(seen["in"])
    expected_in = stored.transpose(0, 1).reshape(8, -1).norm(dim=1)
    assert torch.allclose(cal.input_norm("3.weight"), expected_in, rtol=1e-5)
    with torch.no_grad():
        out = model[3](model[2](model[1](model[0](x))))
    expected_out = out.transpose(0, 1).reshape(12, -1).norm(dim=1)
    assert torch.allclose(cal.output_norm("3.weight"), expected_out, rtol=1e-5)
    linear_in = torch.flatten(model[5](model[4](out)), 1)
    assert torch.allclose(cal.input_norm("7.weight"), linear_in.norm(dim=0), rtol=1e-5)


def test_activation_magnitude_is_wanda_score(mlp_data):
    model = make_mlp()
    cal = prunelab.Calibration(model, mlp_data)
    pruner = prunelab.Pruner(model, "layer-activation-magnitude", calibration=cal)
    x = mlp_data[0]
    expected = model[0].weight.detach().abs() * x.norm(dim=0)
    assert torch.allclose(pruner.scores()["0.weight"], expected, rtol=1e-5)


def test_grouped_conv_activation_scores_use_each_groups_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 1, groups=2, bias=False))
    x = torch.randn(5, 4, 3, 3)
    cal = prunelab.Calibration(model, x)
    score = prunelab.Pruner(model, "layer-activation-magnitude", calibration=cal).scores()
    norms = x.transpose(0, 1).reshape(4, -1).norm(dim=1)
    w = model[0].weight.detach().abs()[:, :, 0, 0]
    expected = torch.stack([w[o] * norms[(o // 3) * 2 : (o // 3) * 2 + 2] for o in range(6)])
    assert torch.allclose(score["0.weight"][:, :, 0, 0], expected, rtol=1e-5)


def test_calibration_is_computed_once(mlp_data):
    cal = prunelab.Calibration(make_mlp(), mlp_data)
    assert cal.gradients() is cal.gradients()
    assert cal.input_norms() is cal.input_norms()


def test_one_shot_iterator_data_is_read_once():
    model = make_mlp()
    gen = torch.Generator().manual_seed(0)
    batches = iter([(torch.randn(4, 12, generator=gen), torch.tensor([0, 1, 2, 0]))] * 2)
    cal = prunelab.Calibration(model, batches)
    cal.gradients()
    assert set(cal.input_norms()) == {t.fqn for t in prunelab.targets(model)}


def test_hooks_are_removed_after_an_exception():
    model = make_mlp()
    with (
        pytest.raises(RuntimeError, match="boom"),
        forward_hooks(model, {"0": lambda m, i, o: None, "2": lambda m, i, o: None}),
    ):
        assert len(model[0]._forward_hooks) == 1
        raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_hooks_are_removed_when_the_model_raises(mlp_data):
    model = make_mlp()
    cal = prunelab.Calibration(model, torch.randn(4, 5))  # wrong feature count
    with pytest.raises(ValueError, match="cannot run on this data"):
        cal.input_norms()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_recurrent_weights_without_visible_inputs_give_a_clear_error():
    model = make_lstm()
    tokens = torch.randint(0, 20, (4, 6))
    cal = prunelab.Calibration(model, tokens)
    assert cal.input_norm("head.weight").shape == (12,)
    with pytest.raises(ValueError, match="internal to a LSTM"):
        prunelab.Pruner(
            model, "layer-activation-magnitude", calibration=cal, targets=["lstm.weight_hh_l0"]
        )
    pruner = prunelab.Pruner(
        model, "layer-activation-magnitude", calibration=cal, targets=["head.weight"]
    )
    assert pruner.masks(sparsity=0.5).sparsity() == 0.5


def test_gradients_need_labels():
    cal = prunelab.Calibration(make_mlp(), torch.randn(8, 12))
    with pytest.raises(ValueError, match="labelled"):
        cal.gradients()
