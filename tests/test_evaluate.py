"""prunelab.evaluate (accuracy, loss, fidelity), size, FLOPs and latency on tiny models."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunelab
from prunelab.analysis.speed import latency
from prunelab.io.data import TensorData

# the module, not the function prunelab.evaluate that shares its name
ev = importlib.import_module("prunelab.analysis.evaluation")
fl = importlib.import_module("prunelab.analysis.flops")


@pytest.fixture(autouse=True)
def _empty_cache():
    ev.clear_cache()
    yield
    ev.clear_cache()


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _data(n: int = 50, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 4, (n,), generator=generator)


class _Tally:
    calls = 0


class Counting(nn.Module):
    """Counts forward calls (so tests can see what the dense-output cache saves).

    The count lives in a shared object: prunelab runs a structural copy of the model, and the
    copy's own attributes are the copy's.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.tally = _Tally()

    @property
    def calls(self) -> int:
        return self.tally.calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tally.calls += 1
        return self.inner(x)


def test_dense_evaluation_matches_a_hand_computation():
    model, (x, y) = _mlp(), _data()
    with torch.no_grad():
        logits = model(x)
    result = ev.evaluate(model, (x, y), batch_size=16)
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert result["agreement"] == 1.0 and result["kl"] == 0.0 and result["samples"] == 50


def test_masked_evaluation_matches_a_pruned_copy_and_leaves_the_model_alone():
    model, (x, y) = _mlp(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.7)
    result = ev.evaluate(model, TensorData(x, y), masks=masks)
    with torch.no_grad():
        dense, pruned = model(x), prunelab.apply(model, masks)(x)
    expected_kl = F.kl_div(
        F.log_softmax(pruned, 1), F.log_softmax(dense, 1), log_target=True, reduction="batchmean"
    )
    assert result["accuracy"] == pytest.approx(float((pruned.argmax(1) == y).float().mean()))
    assert result["loss"] == pytest.approx(float(F.cross_entropy(pruned, y)), rel=1e-5)
    assert result["agreement"] == pytest.approx(
        float((pruned.argmax(1) == dense.argmax(1)).float().mean())
    )
    assert result["kl"] == pytest.approx(float(expected_kl), rel=1e-4)
    assert result["kl"] > 0.0 and result["agreement"] < 1.0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_no_pruning_means_perfect_fidelity():
    model, (x, y) = _mlp(), _data()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.0)
    result = ev.evaluate(model, (x, y), masks=masks)
    assert result["agreement"] == 1.0 and result["kl"] == pytest.approx(0.0, abs=1e-7)
    assert result["accuracy"] == ev.evaluate(model, (x, y))["accuracy"]


def test_unlabelled_data_is_judged_by_fidelity_only():
    model, (x, _) = _mlp(), _data()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    result = ev.evaluate(model, x, masks=masks)
    assert set(result) == {"agreement", "kl", "samples"}
    assert set(ev.evaluate(model, x, metrics=["accuracy"])) == {"samples"}


def test_metrics_can_be_chosen_and_are_checked():
    model, data = _mlp(), _data()
    assert set(ev.evaluate(model, data, metrics=("accuracy",))) == {"accuracy", "samples"}
    with pytest.raises(
        ValueError, match=r"unknown metric.*accepted: accuracy, loss, agreement, kl"
    ):
        ev.evaluate(model, data, metrics=("f1",))
    with pytest.raises(TypeError, match=r"masks must be prunelab\.Masks"):
        ev.evaluate(model, data, masks={"0.weight": torch.ones(16, 6, dtype=torch.bool)})


def test_dense_outputs_are_cached_so_each_mask_set_costs_one_pass():
    counting = Counting(_mlp())
    data = _data(n=64)
    ev.evaluate(counting, data, batch_size=16)
    assert counting.calls == 4
    for sparsity in (0.3, 0.6, 0.9):
        masks = prunelab.prune(counting, "global-magnitude", sparsity=sparsity)
        ev.evaluate(counting, data, masks=masks, batch_size=16)
    assert counting.calls == 4 + 3 * 4
    ev.evaluate(counting, data, batch_size=16)  # the dense result itself is cached too
    assert counting.calls == 16


def test_cache_notices_an_edited_model_and_edited_data():
    model, (x, y) = _mlp(), _data()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.0)
    assert ev.evaluate(model, (x, y), masks=masks)["agreement"] == 1.0
    with torch.no_grad():
        model[2].bias.add_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # now predicts class 0
    result = ev.evaluate(model, (x, y), masks=masks)
    assert result["agreement"] == 1.0 and result["kl"] == pytest.approx(0.0, abs=1e-7)
    data = (x, y)
    ev.evaluate(model, data)
    x.mul_(-1.0)
    assert ev.evaluate(model, data, masks=masks)["agreement"] == 1.0


def test_cache_is_not_fooled_by_a_reused_id(monkeypatch):
    # Force every model/data pair onto one cache key, as a reused id would.
    monkeypatch.setattr(ev, "_cache_key", lambda model, data, device: ("same",))
    first, second, data = _mlp(seed=0), _mlp(seed=1), _data()
    ev.evaluate(first, data)
    masks = prunelab.prune(second, "global-magnitude", sparsity=0.0)
    result = ev.evaluate(second, data, masks=masks)
    assert result["agreement"] == 1.0 and result["kl"] == pytest.approx(0.0, abs=1e-7)


def test_data_forms_and_their_errors():
    model, (x, y) = _mlp(), _data()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    assert ev.evaluate(model, loader, masks=masks)["samples"] == 50
    shuffled = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        ev.evaluate(model, shuffled, masks=masks)
    with pytest.raises(TypeError, match="one-shot iterator"):
        ev.evaluate(model, iter([(x, y)]), masks=masks)
    assert ev.evaluate(model, iter([(x, y)]))["samples"] == 50  # one pass is fine
    with pytest.raises(ValueError, match="data is empty"):
        ev.evaluate(model, [])
    with pytest.raises(ValueError, match=r"class scores of shape \(batch, classes\)"):
        ev.evaluate(nn.Flatten(0), x)


def test_device_parameter():
    model, data = _mlp(), _data()
    assert ev.evaluate(model, data, device="cpu") == ev.evaluate(model, data)


def test_sample_lstm_evaluates_with_masks():
    bundle = prunelab.io.zoo.load("sample:sentiment-lstm")
    data = prunelab.io.data.load("sample:sentiment", limit=64)
    masks = prunelab.prune(bundle.model, "layer-magnitude", sparsity=0.5)
    result = ev.evaluate(bundle.model, data, masks=masks)
    assert 0.0 <= result["agreement"] <= 1.0 and result["samples"] == 64


# -- model_stats and FLOPs -------------------------------------------------------------------


def test_model_stats_counts_parameters_nonzeros_bytes_and_flops():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x = torch.zeros(1, 1, 8, 8)
    dense = fl.model_stats(model, example_input=x)
    conv, linear = 2 * 4 * 9 * 64, 2 * 256 * 3
    assert dense["parameters"] == 40 + 771
    assert dense["nonzero_parameters"] == 811 and dense["sparsity"] == 0.0
    assert dense["dense_bytes"] == 811 * 4
    assert dense["flops"] == dense["effective_flops"] == conv + linear
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.75)
    pruned = fl.model_stats(model, masks, example_input=x)
    kept = sum(int(m.sum()) for m in masks.values())
    assert pruned["nonzero_parameters"] == kept + 4 + 3  # biases are not pruned
    assert pruned["flops"] == dense["flops"]
    assert pruned["effective_flops"] == round(conv * 9 / 36) + round(linear * 192 / 768)


def test_channel_masks_zero_the_coupled_biases_too():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    stats = fl.model_stats(model, masks, example_input=torch.zeros(1, 6))
    kept = sum(int(m.sum()) for m in masks.all().values())
    assert stats["nonzero_parameters"] == kept


def test_recurrent_flops_are_counted_from_time_steps():
    model = prunelab.io.zoo.load("sample:sentiment-lstm").model
    tokens = torch.ones(2, 16, dtype=torch.int64)
    table = fl.flops_by_layer(model, example_input=tokens)
    by_fqn = dict(zip(table["fqn"], table["flops"], strict=True))
    assert by_fqn["lstm.weight_ih_l0"] == 2 * 2 * 16 * 256 * 32
    assert by_fqn["lstm.weight_hh_l0"] == 2 * 2 * 16 * 256 * 64
    assert by_fqn["fc.weight"] == 2 * 2 * 64 * 2
    assert fl.model_stats(model, example_input=tokens)["flops"] == sum(by_fqn.values())


def test_flops_by_layer_reports_kept_fractions():
    bundle = prunelab.io.zoo.load("sample:digits-resnet")
    masks = prunelab.prune(bundle.model, "global-magnitude", sparsity=0.5)
    table = fl.flops_by_layer(bundle.model, masks, example_input=bundle.example_input())
    assert list(table.columns) == ["fqn", "module_type", "flops", "kept", "effective_flops"]
    assert list(table["fqn"]) == [t.fqn for t in prunelab.targets(bundle.model)]
    assert (table["effective_flops"] <= table["flops"]).all()
    stats = fl.model_stats(bundle.model, masks, example_input=bundle.example_input())
    assert stats["effective_flops"] < stats["flops"]


def test_model_stats_does_not_touch_a_model_in_training_mode():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    before = model[1].running_mean.clone()
    fl.model_stats(model, example_input=torch.randn(2, 1, 5, 5))
    assert torch.equal(model[1].running_mean, before)


# -- latency ---------------------------------------------------------------------------------


def test_latency_reports_ordered_statistics():
    model = _mlp()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    timing = latency(model, torch.zeros(1, 6), masks=masks, repeats=5, warmup=1)
    assert set(timing) == {"median_s", "p90_s", "min_s", "repeats"}
    assert 0 < timing["min_s"] <= timing["median_s"] <= timing["p90_s"]
    assert timing["repeats"] == 5
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        latency(model, torch.zeros(1, 6), repeats=0)
