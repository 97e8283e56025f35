"""Training with pruning: masks hold, schedules match their formulas, DST, freezing, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.activations import activation_threshold
from prunelab.core.masks import Masks
from prunelab.io import data, zoo
from prunelab.training import (
    DynamicSparse,
    Gradual,
    Iterative,
    OneShot,
    TrainConfig,
    evaluate_quantized,
    fake_quantize,
    finetune,
    freeze,
    prune_while_training,
    steps_per_epoch,
    unfreeze,
)

FAST = TrainConfig(epochs=2, batch_size=16, lr=0.01)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def _data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- finetune ------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masks_hold_through_training_with_exact_zeros(optimizer):
    net = _net()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.7)
    seen = []
    config = TrainConfig(epochs=2, batch_size=16, optimizer=optimizer, weight_decay=0.01)
    tuned, history = finetune(net, masks, _data(), config=config, callback=seen.append)
    for fqn, mask in masks.items():
        weight = tuned.get_parameter(fqn)
        assert torch.count_nonzero(weight[~mask]) == 0
        assert torch.count_nonzero(weight[mask]) == int(mask.sum())  # kept ones trained
    assert list(history["step"]) == list(range(8)) and len(seen) == 8
    assert seen[-1].fraction == 1.0 and history["sparsity"].eq(masks.sparsity()).all()
    assert not tuned.training
    assert not any(hasattr(m, "weight_orig") for m in tuned.modules())  # a plain module


def test_finetune_never_modifies_the_model_and_is_reproducible():
    net = _net()
    before = _state(net)
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    a, history_a = finetune(net, masks, _data(), config=FAST)
    b, history_b = finetune(net, masks, _data(), config=FAST)
    assert _same(_state(net), before)
    assert _same(_state(a), _state(b)) and history_a.equals(history_b)
    c, _ = finetune(net, masks, _data(), config=TrainConfig(epochs=2, batch_size=16, seed=5))
    assert not _same(_state(a), _state(c))  # the seed drives the shuffling
    schedule = DynamicSparse(0.5, regrow="gradient", update_every=2)
    prune_while_training(net, _data(), strategy="global-magnitude", schedule=schedule, config=FAST)
    assert _same(_state(net), before) and all(p.grad is None for p in net.parameters())


def test_coupled_bias_masks_hold():
    net = _net()
    masks = prunelab.prune(net, "weight-norm-channel", sparsity=0.5)
    assert masks.coupled
    tuned, _ = finetune(net, masks, _data(), config=FAST)
    for fqn, mask in masks.all().items():
        assert torch.count_nonzero(tuned.get_parameter(fqn)[~mask]) == 0


def test_a_model_from_apply_trains_to_a_plain_model():
    net = _net()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    tuned, _ = finetune(prunelab.apply(net, masks), masks, _data(), config=FAST)
    assert torch.count_nonzero(tuned[0].weight[~masks["0.weight"]]) == 0
    assert "0.weight_orig" not in dict(tuned.named_parameters())


def test_eval_data_adds_accuracy_after_each_epoch():
    net = _net()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    _, history = finetune(net, masks, _data(), config=FAST, eval_data=_data(seed=9))
    measured = history["eval_accuracy"].dropna()
    assert len(measured) == 2 and measured.between(0, 1).all()


# -- schedules -----------------------------------------------------------------------------


def test_cubic_schedule_matches_zhu_gupta_at_start_middle_end():
    s_i, s_f, t0, n_dt = 0.1, 0.9, 10, 40
    schedule = Gradual(s_i, s_f, start=t0, end=t0 + n_dt, kind="cubic")

    def formula(t):
        return s_f + (s_i - s_f) * (1 - (t - t0) / n_dt) ** 3

    for t in (t0, t0 + n_dt // 2, t0 + n_dt):
        assert schedule.sparsity_at(t) == pytest.approx(formula(t))
    assert schedule.sparsity_at(t0 + n_dt // 2) == pytest.approx(0.9 - 0.8 / 8)
    assert schedule.sparsity_at(0) == 0.0 and schedule.sparsity_at(1000) == s_f


def test_linear_schedule_matches_its_formula_and_steps_with_every():
    schedule = Gradual(0.2, 0.8, start=0, end=100, kind="linear")
    assert [schedule.sparsity_at(t) for t in (0, 50, 100)] == pytest.approx([0.2, 0.5, 0.8])
    coarse = Gradual(0.2, 0.8, start=0, end=100, kind="linear", every=25)
    assert coarse.sparsity_at(49) == pytest.approx(0.35)  # held since the update at 25
    assert coarse.update_steps(200) == [0, 25, 50, 75, 100]
    assert coarse.table(100)["sparsity"].is_monotonic_increasing


def test_iterative_and_one_shot():
    schedule = Iterative(steps=(0, 5), sparsities=(0.5, 0.8))
    assert [schedule.sparsity_at(t) for t in (0, 4, 5)] == [0.5, 0.5, 0.8]
    assert OneShot(0.7).sparsity_at(123) == 0.7


def test_gradual_pruning_reaches_the_final_sparsity_step_by_step():
    net = _net()
    schedule = Gradual(0.0, 0.8, start=0, end=6, kind="cubic", every=2)
    tuned, history = prune_while_training(
        net, _data(), strategy="global-magnitude", schedule=schedule, config=FAST
    )
    assert history["sparsity"].is_monotonic_increasing
    assert history["sparsity"].iloc[-1] == pytest.approx(0.8, abs=0.01)
    weights = torch.cat([tuned[0].weight.flatten(), tuned[2].weight.flatten()])
    assert (weights == 0).float().mean() == pytest.approx(0.8, abs=0.01)


def test_iterative_pruning_prunes_at_its_steps():
    schedule = Iterative(steps=(0, 4), sparsities=(0.5, 0.75))
    _, history = prune_while_training(
        _net(), _data(), strategy="layer-magnitude", schedule=schedule, config=FAST
    )
    assert history["sparsity"].round(2).tolist() == [0.5] * 4 + [0.75] * 4


def test_schedule_longer_than_training_is_a_clear_error():
    with pytest.raises(ValueError, match=r"final sparsity at step 100.*only 8 steps"):
        prune_while_training(
            _net(),
            _data(),
            strategy="global-magnitude",
            schedule=Gradual(0.0, 0.5, start=0, end=100),
            config=FAST,
        )


def test_steps_per_epoch():
    assert steps_per_epoch(_data(64), batch_size=16) == 4


# -- dynamic sparse training ---------------------------------------------------------------


@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_dynamic_sparse_keeps_sparsity_and_changes_the_mask(regrow):
    net = _net()
    schedule = DynamicSparse(0.75, regrow=regrow, update_every=2, fraction=0.3, stop=5)
    tuned, history = prune_while_training(
        net, _data(), strategy="layer-magnitude", schedule=schedule, config=FAST
    )
    assert history["sparsity"].eq(history["sparsity"].iloc[0]).all()
    first = prunelab.prune(net, "layer-magnitude", sparsity=0.75)
    for fqn, mask in first.items():
        kept = tuned.get_parameter(fqn) != 0
        assert int(kept.sum()) <= int(mask.sum())  # never more weights than the budget
        assert (kept & ~mask).any(), f"{fqn}: no weight was regrown"
    layers = [tuned[0].weight, tuned[2].weight]
    zeros = sum(int((w == 0).sum()) for w in layers) / sum(w.numel() for w in layers)
    assert zeros == pytest.approx(0.75, abs=0.02)


def test_dynamic_sparse_needs_an_unstructured_strategy():
    with pytest.raises(ValueError, match="single weights"):
        prune_while_training(
            _net(),
            _data(),
            strategy="weight-norm-channel",
            schedule=DynamicSparse(0.5),
            config=FAST,
        )


# -- freezing ------------------------------------------------------------------------------


def test_frozen_layers_stay_bit_identical():
    net = _net()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    config = TrainConfig(epochs=2, batch_size=16, frozen=("0",))
    tuned, _ = finetune(net, masks, _data(), config=config)
    start = prunelab.bake(prunelab.apply(net, masks))
    assert torch.equal(tuned[0].weight, start[0].weight)
    assert torch.equal(tuned[0].bias, start[0].bias)
    assert not torch.equal(tuned[2].weight, start[2].weight)


def test_freeze_and_unfreeze_return_copies():
    net = _net()
    frozen = freeze(net, ["0"])
    assert all(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in frozen.parameters()] == [False, False, True, True]
    tuned, _ = finetune(frozen, prunelab.prune(frozen, "random", sparsity=0.0), _data())
    assert torch.equal(tuned[0].weight, net[0].weight)
    assert all(p.requires_grad for p in unfreeze(frozen).parameters())


def test_frozen_batchnorm_statistics_stay_put():
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    tuned, _ = finetune(net, masks, _data(), config=TrainConfig(epochs=1, frozen=("1",)))
    assert torch.equal(tuned[1].running_mean, net[1].running_mean)


# -- activation-sparse training ------------------------------------------------------------


def test_gradients_through_zeroed_activations_are_zero():
    layer = nn.Linear(4, 5)
    x = torch.randn(8, 4)
    with activation_threshold(nn.Sequential(layer), ["0"], 0.3) as run:
        out = run.model(x)
        out.retain_grad()
        out.sum().backward()
    hidden = run.model[0](x)  # hooks gone: the raw activations
    zeroed = hidden.abs() < 0.3
    assert zeroed.any() and (out.grad == 1).all()
    # d out / d weight[j] sums x over samples where unit j was kept
    expected = (~zeroed).float().T @ x
    assert torch.allclose(run.model[0].weight.grad, expected, atol=1e-6)


def test_training_with_activation_threshold_leaves_dead_units_untouched():
    net = _net()
    with torch.no_grad():
        net[0].weight[0].mul_(1e-4)  # unit 0's activation always falls below the threshold
        net[0].bias[0] = 0.0
    masks = prunelab.prune(net, "random", sparsity=0.0)
    config = TrainConfig(
        epochs=2, batch_size=16, activation_layers=("0",), activation_threshold=0.05
    )
    tuned, _ = finetune(net, masks, _data(), config=config)
    assert torch.equal(tuned[0].weight[0], net[0].weight[0])  # no gradient reached it
    assert not torch.equal(tuned[0].weight[1], net[0].weight[1])
    plain, _ = finetune(net, masks, _data(), config=FAST)
    assert not torch.equal(plain[0].weight[0], net[0].weight[0])
    assert not tuned._forward_hooks and not tuned[0]._forward_hooks  # hooks removed


# -- quantization --------------------------------------------------------------------------


def test_fake_quantize_keeps_zeros_and_has_2_to_the_bits_levels():
    w = torch.randn(200)
    w[::3] = 0
    q = fake_quantize(w, 4)
    assert torch.equal(q == 0, (w / (w.abs().max() / 7)).round() == 0)
    assert len(torch.unique(q)) <= 15
    assert (q - w).abs().max() <= w.abs().max() / 7 / 2 + 1e-6


def test_evaluate_quantized_with_masks():
    net = _net().eval()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    before = _state(net)
    high = evaluate_quantized(net, _data(), bits=16, masks=masks)
    pruned = prunelab.evaluate(net, _data(), masks=masks)
    assert high["accuracy"] == pytest.approx(pruned["accuracy"])
    assert _same(_state(net), before)


def test_four_bits_round_where_eight_bits_do_not():
    # class 1 wins in float (0.99 > 0.93 + 0.01) and at 8 bits; at 4 bits (7 levels per
    # side) both weights round to the peak 0.99, so the bias gives class 0 the win
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.93, 0.0], [0.99, 0.0]]))
        net.bias.copy_(torch.tensor([0.01, 0.0]))
    inputs, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    eight = evaluate_quantized(net, (inputs, labels), bits=8)
    four = evaluate_quantized(net, (inputs, labels), bits=4)
    assert (eight["accuracy"], eight["agreement"]) == (1.0, 1.0)
    assert (four["accuracy"], four["agreement"]) == (0.0, 0.0)
    assert four["loss"] > eight["loss"]


def test_eight_and_four_bits_differ_in_loss_and_agreement_even_at_equal_accuracy():
    net = _net().eval()
    results = {b: evaluate_quantized(net, _data(256), bits=b) for b in (16, 8, 4, 2)}
    losses = [results[b]["loss"] for b in (16, 8, 4, 2)]
    assert len(set(losses)) == 4  # every width really rounds the weights differently
    assert results[16]["agreement"] == 1.0
    assert results[2]["agreement"] < results[4]["agreement"] <= results[8]["agreement"]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Gradual(0.8, 0.5, start=0, end=10), "below the initial"),
        (lambda: Gradual(0.0, 0.5, start=10, end=5), "must come after start"),
        (lambda: Gradual(0.0, 0.5, start=0, end=10, kind="exp"), "accepted: linear, cubic"),
        (lambda: Gradual(0.0, 1.5, start=0, end=10), r"in \[0, 1\]"),
        (lambda: Iterative(steps=(0, 5), sparsities=(0.8, 0.5)), "must not decrease"),
        (lambda: Iterative(steps=(5, 5), sparsities=(0.5, 0.6)), "increase strictly"),
        (lambda: Iterative(steps=(0,), sparsities=(0.5, 0.6)), "one sparsity per step"),
        (lambda: TrainConfig(epochs=0), "epochs must be at least 1"),
        (lambda: TrainConfig(epochs=-1), "epochs must be"),
        (lambda: TrainConfig(lr=0), "lr must be a finite number > 0"),
        (lambda: TrainConfig(optimizer="rmsprop"), "accepted: sgd, adam"),
        (lambda: DynamicSparse(0.5, regrow="magic"), "accepted: random, gradient"),
        (lambda: fake_quantize(torch.ones(3), 1), r"bits must be an integer from 2 to 16"),
        (lambda: fake_quantize(torch.ones(3), 17), r"bits must be an integer from 2 to 16"),
    ],
)
def test_bad_input_gives_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_training_input():
    net = _net()
    masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match="needs labels"):
        finetune(net, masks, torch.randn(8, 6))
    with pytest.raises(TypeError, match=r"prunelab\.Masks"):
        finetune(net, {"0.weight": masks["0.weight"]}, _data())
    with pytest.raises(ValueError, match="names no layer"):
        finetune(net, masks, _data(), config=TrainConfig(frozen=("nope",)))
    wrong = Masks({"0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        finetune(net, wrong, _data())


# -- the result to show --------------------------------------------------------------------


def test_fine_tuning_recovers_magnitude_pruning_on_digits_mlp():
    """90% global magnitude: one-shot is clearly worse, fine-tuning recovers to within one
    point of dense, and random pruning with the same budget does worse than magnitude."""
    model = zoo.load("sample:digits-mlp").model
    train = data.load("sample:digits", split="train")
    test = data.load("sample:digits", split="test")
    dense = prunelab.evaluate(model, test)["accuracy"]
    magnitude = prunelab.prune(model, "global-magnitude", sparsity=0.9)
    random = prunelab.prune(model, "random", sparsity=0.9, seed=0)
    one_shot = prunelab.evaluate(model, test, masks=magnitude)["accuracy"]
    config = TrainConfig()  # the defaults: 3 epochs of Adam
    tuned, _ = finetune(model, magnitude, train, config=config)
    tuned_random, _ = finetune(model, random, train, config=config)
    recovered = prunelab.evaluate(tuned, test)["accuracy"]
    random_recovered = prunelab.evaluate(tuned_random, test)["accuracy"]
    assert one_shot < dense - 0.05
    assert recovered >= dense - 0.01
    assert random_recovered < recovered - 0.05


def test_a_frozen_layer_can_still_be_pruned_on_a_schedule():
    net = _net()
    config = TrainConfig(epochs=2, batch_size=16, frozen=("0",))
    schedule = Gradual(0.0, 0.6, start=0, end=4, kind="linear")
    tuned, _ = prune_while_training(
        net, _data(), strategy="global-magnitude", schedule=schedule, config=config
    )
    kept = tuned[0].weight != 0
    assert not kept.all()  # pruned while frozen ...
    assert torch.equal(tuned[0].weight[kept], net[0].weight[kept])  # ... but never trained
