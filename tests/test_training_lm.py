"""Fine-tuning a causal language model: token loss, a plain PyTorch loop to match, ties,
SparseGPT's new weights, dropout on only while training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import prunelab
from prunelab.core.sparsegpt import Reconstructed
from prunelab.runtime.metrics import IGNORE_INDEX
from prunelab.training import TrainConfig, finetune, prune_while_training
from prunelab.training.schedules import OneShot
from tests.conftest import make_mlp, tiny_gpt2

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def _tokens(n: int = 16, context: int = 8, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and their next tokens, a few positions not scored (-100)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, context + 1), generator=generator)
    labels = ids[:, 1:].clone()
    labels[::3, :2] = IGNORE_INDEX
    return ids[:, :-1].contiguous(), labels


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _masks(model):
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    # the tied head is not a target: no mask may zero the shared embedding table
    assert not any("wte" in fqn or "lm_head" in fqn for fqn in masks.all())
    return masks


def _by_hand(model, masks, data, *, lr: float, batch_size: int, seed: int):
    """The plain PyTorch loop finetune should be: masked start, Adam, grads masked, re-mask."""
    net = copy.deepcopy(model)
    pairs = [(net.get_parameter(fqn), mask) for fqn, mask in masks.all().items()]
    with torch.no_grad():
        for param, mask in pairs:
            param.mul_(mask)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    order = DataLoader(
        TensorDataset(*data),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    net.train()
    losses = []
    for inputs, labels in order:
        optimizer.zero_grad()
        logits = net(inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        for param, mask in pairs:
            param.grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            for param, mask in pairs:
                param.mul_(mask)
        losses.append(float(loss.detach()))
    return net.eval(), losses


def test_finetune_matches_a_plain_pytorch_loop_and_keeps_zeros_and_ties():
    model = tiny_gpt2(**NO_DROPOUT)
    before = _state(model)
    masks = _masks(model)
    data = _tokens()
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01, seed=5)
    tuned, history = finetune(model, masks, data, config=config, device="cpu")
    expected, losses = _by_hand(model, masks, data, lr=0.01, batch_size=4, seed=5)
    assert history["loss"].tolist() == pytest.approx(losses, rel=1e-5)
    got, want = tuned.state_dict(), expected.state_dict()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for fqn, mask in masks.all().items():
        assert bool((tuned.get_parameter(fqn)[~mask] == 0).all()), fqn
    assert tuned.lm_head.weight is tuned.transformer.wte.weight  # still tied
    assert not tuned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_falls_and_held_out_data_reports_perplexity():
    model = tiny_gpt2(**NO_DROPOUT)
    masks = _masks(model)
    train, test = _tokens(), _tokens(seed=4)
    config = TrainConfig(epochs=4, batch_size=8, lr=0.01)
    tuned, history = finetune(model, masks, train, config=config, eval_data=test)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert history["accuracy"].between(0, 1).all()
    last = history.dropna(subset=["eval_perplexity"]).iloc[-1]
    measured = prunelab.evaluate(tuned, test, metrics=("perplexity", "loss", "accuracy"))
    assert last["eval_perplexity"] == pytest.approx(measured["perplexity"], rel=1e-5)
    assert last["eval_loss"] == pytest.approx(measured["loss"], rel=1e-5)
    assert last["eval_perplexity"] == pytest.approx(math.exp(last["eval_loss"]), rel=1e-6)
    assert last["eval_accuracy"] == pytest.approx(measured["accuracy"])


def _first_loss_gap(model) -> tuple[float, object, object]:
    """|first batch loss while training - the same model's loss evaluated|, one batch of all
    the data (so the batch is the data whatever the shuffle), and the trained model."""
    masks = _masks(model)
    data = _tokens()
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-6)
    tuned, history = finetune(model, masks, data, config=config, eval_data=data)
    still = prunelab.evaluate(model, data, masks=masks, metrics=("loss",))["loss"]
    return abs(history["loss"].iloc[0] - still), tuned, history


def test_dropout_is_on_while_training_and_off_for_evaluation():
    same, _, _ = _first_loss_gap(tiny_gpt2(**NO_DROPOUT))
    assert same < 1e-5  # the same forward but for dropout
    gap, tuned, history = _first_loss_gap(tiny_gpt2(resid_pdrop=0.5, embd_pdrop=0.5))
    assert gap > 1e-4  # dropout was on
    measured = prunelab.evaluate(tuned, _tokens(), metrics=("loss",))["loss"]
    assert history["eval_loss"].iloc[-1] == pytest.approx(measured, rel=1e-6)  # and off


@pytest.mark.parametrize("kind", ["classifier", "language model"])
def test_training_starts_from_sparsegpts_new_weights(kind):
    if kind == "classifier":
        model = make_mlp()
        data = (torch.randn(16, 12), torch.randint(0, 3, (16,)))
    else:
        model = tiny_gpt2(**NO_DROPOUT)
        data = _tokens()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    generator = torch.Generator().manual_seed(0)
    weights = {
        fqn: torch.randn(mask.shape, generator=generator) * mask for fqn, mask in masks.items()
    }
    rebuilt = Reconstructed(dict(masks), weights=weights)
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-9, optimizer="sgd", momentum=0.0)
    tuned, _ = finetune(model, rebuilt, data, config=config)
    for fqn, weight in weights.items():
        torch.testing.assert_close(tuned.get_parameter(fqn), weight, atol=1e-6, rtol=0)


def test_pruning_while_training_a_language_model():
    model = tiny_gpt2(**NO_DROPOUT)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.01)
    tuned, history = prune_while_training(
        model, _tokens(), strategy="layer-magnitude", schedule=OneShot(0.5), config=config
    )
    assert history["sparsity"].tolist() == [0.5] * 4
    assert tuned.lm_head.weight is tuned.transformer.wte.weight
    assert int((tuned.transformer.wte.weight == 0).sum()) == 0


def test_training_curves_read_a_language_model_by_perplexity():
    import pandas as pd

    from prunelab.figures import training_curves

    history = pd.DataFrame(
        {
            "step": [0, 1],
            "loss": [math.log(40.0), math.log(30.0)],
            "accuracy": [0.1, 0.2],
            "eval_perplexity": [math.nan, 28.0],
            "eval_loss": [math.nan, math.log(28.0)],
        }
    )
    fig = training_curves(history, metric="perplexity")
    lower = [t for t in fig.data if t.yaxis == "y2"]
    assert list(lower[0].y) == pytest.approx([40.0, 30.0])  # exp of each batch's loss
    assert list(lower[1].y) == [28.0]  # the held-out perplexity, a diamond
    assert "lower is better" in fig.layout.annotations[1].text
    # a gradual run's sparsity (%) gets its own axis: it does not share perplexity's scale
    gradual = history.assign(sparsity=[0.5, 0.9])
    fig = training_curves(gradual, metric="perplexity")
    (sparsity,) = [t for t in fig.data if t.name == "sparsity"]
    assert sparsity.yaxis == "y3" and fig.layout.yaxis3.title.text == "sparsity (%)"
    assert [t.yaxis for t in training_curves(gradual).data if t.name == "sparsity"] == ["y2"]
    with pytest.raises(ValueError, match="accepted: accuracy, perplexity"):
        training_curves(history, metric="kl")
