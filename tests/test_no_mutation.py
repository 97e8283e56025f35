"""No public call changes the model it was given: tensors, hooks, modes, grads."""

from __future__ import annotations

import pytest

import prunelab
from prunelab.sweeps import SensitivityConfig
from tests.conftest import assert_unchanged, make_cnn, snapshot


@pytest.mark.parametrize("strategy", prunelab.list_strategies())
def test_every_strategy_leaves_the_model_untouched(strategy, cnn_data):
    if strategy in ("head-magnitude", "head-taylor"):  # a CNN has no heads: see these
        pytest.skip(
            "attention heads: tests/test_heads.py::test_head_pruning_leaves_the_model_untouched"
            " and tests/test_head_taylor.py (assert_unchanged after scoring and pruning)"
        )
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


# -- every public entry point, given a model in training mode (issue 22) --------------------
# A forward pass in training mode updates BatchNorm's running statistics in place; an entry
# point that runs the model it was given that way changes it.


def _calls(tmp_path):
    from prunelab.io.exports import export_bytes
    from prunelab.sweeps import estimate_sensitivity, estimate_sweep

    def masks_of(model):
        return prunelab.prune(model, "weight-norm-channel", sparsity=0.5)

    def finetune(model, data):
        config = prunelab.TrainConfig(epochs=1, batch_size=16)
        prunelab.finetune(model, masks_of(model), data, config=config)

    def sensitivity_and_solve(model, data):
        table = prunelab.sensitivity(model, data, sparsities=[0.25, 0.5])
        prunelab.solve(table, target_sparsity=0.3, model=model, data=data)

    return {
        "prune": lambda m, d: prunelab.prune(m, "layer-magnitude", sparsity=0.5),
        "Pruner": lambda m, d: prunelab.Pruner(
            m,
            "global-magnitude-gradient",
            calibration=(prunelab.Calibration(m, d, batches=1, batch_size=8)),
        ).masks(sparsity=0.5),
        "sweep": lambda m, d: prunelab.sweep(
            m, d, strategies=["layer-magnitude"], sparsities=[0.0, 0.5]
        ),
        "sensitivity+solve": sensitivity_and_solve,
        "sensitivity (magnitude)": lambda m, d: prunelab.sensitivity(
            m, config=SensitivityConfig(method="magnitude")
        ),
        "estimate_sweep": lambda m, d: estimate_sweep(
            m, d, strategies=["random"], sparsities=[0.5]
        ),
        "estimate_sensitivity": lambda m, d: estimate_sensitivity(m, d, sparsities=[0.5]),
        "evaluate": lambda m, d: prunelab.evaluate(m, d, masks=masks_of(m)),
        "activation_stats": lambda m, d: prunelab.activation_stats(m, d[0]),
        "shrink": lambda m, d: prunelab.shrink(m, masks_of(m), example_input=d[0][:2]),
        "export pt2": lambda m, d: export_bytes(
            m, masks_of(m), format="pt2", example_input=d[0][:2]
        ),
        "export state_dict": lambda m, d: export_bytes(m, masks_of(m)),
        "finetune": finetune,
        "model_stats": lambda m, d: prunelab.model_stats(m, example_input=d[0][:2]),
        "speed_report": lambda m, d: prunelab.speed_report(
            m, masks_of(m), example_input=d[0][:2], batch_sizes=(2,), repeats=1
        ),
        "recipe": lambda m, d: prunelab.Recipe(layers={"0.weight": 0.5}).apply(m),
    }


_NAMES = list(_calls(None))


@pytest.mark.parametrize("name", _NAMES)
def test_a_train_mode_batchnorm_model_is_left_as_it_was(name, cnn_data, tmp_path):
    model = make_cnn().train()
    before = snapshot(model)
    _calls(tmp_path)[name](model, cnn_data)
    assert_unchanged(model, before)
    assert all(m.training for m in model.modules())
