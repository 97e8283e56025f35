"""No public call changes the model it was given: tensors, hooks, modes, grads."""

from __future__ import annotations

import pytest

import prunelab
from tests.conftest import assert_unchanged, make_cnn, snapshot


@pytest.mark.parametrize("strategy", prunelab.list_strategies())
def test_every_strategy_leaves_the_model_untouched(strategy, cnn_data):
    model = make_cnn().train()  # training mode: BatchNorm would update its stats if run
    before = snapshot(model)
    cal = prunelab.Calibration(model, cnn_data, batches=2, batch_size=8)
    targets = ["3.*", "7.*"] if strategy == "n:m" else None  # first conv has 3 inputs
    pruner = prunelab.Pruner(model, strategy, calibration=cal, targets=targets)
    kwargs = {} if strategy == "n:m" else {"sparsity": 0.5}
    masks = pruner.masks(**kwargs)
    pruner.scores()
    prunelab.masked_forward(model, masks, cnn_data[0][:2])
    applied = prunelab.apply(model, masks)
    prunelab.bake(applied)
    masks.per_layer()
    masks.overlap(masks)
    prunelab.targets(model)
    assert_unchanged(model, before)


def test_calibration_leaves_no_gradient_and_no_hook(cnn_data):
    model = make_cnn()
    before = snapshot(model)
    cal = prunelab.Calibration(model, cnn_data)
    cal.gradients()
    cal.input_norms()
    cal.output_norms()
    assert_unchanged(model, before)
