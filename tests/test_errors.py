"""Bad input gets a clear error that says what was wrong and what is accepted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import prunelab
from prunelab.errors import DataError, DeviceError, ShrinkError, user_message
from prunelab.runtime.files import atomic_write
from prunelab.sweeps import SensitivityConfig
from tests.conftest import make_cnn, make_mlp


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_sparsity_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity=bad)


def test_sparsity_of_the_wrong_type():
    with pytest.raises(TypeError, match="number"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity="half")


def test_both_sparsity_and_threshold():
    with pytest.raises(ValueError, match="either sparsity or threshold"):
        prunelab.prune(make_mlp(), "layer-magnitude", sparsity=0.5, threshold=0.1)


def test_neither_sparsity_nor_threshold():
    with pytest.raises(ValueError, match="give a sparsity"):
        prunelab.prune(make_mlp(), "layer-magnitude")


def test_non_finite_threshold():
    with pytest.raises(ValueError, match="finite"):
        prunelab.prune(make_mlp(), "threshold", threshold=math.inf)


def test_threshold_for_a_strategy_that_cannot_use_one():
    with pytest.raises(ValueError, match="does not select by threshold"):
        prunelab.prune(make_mlp(), "random", threshold=0.1)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: random, global-magnitude"):
        prunelab.get_strategy("magnitude-ish")


def test_bad_strategy_option_lists_accepted_ones():
    with pytest.raises(ValueError, match="accepted: granularity, p"):
        prunelab.get_strategy("weight-norm-channel", q=3)


@pytest.mark.parametrize(
    "strategy",
    [
        "global-magnitude-gradient",
        "layer-magnitude-gradient",
        "global-activation-magnitude",
        "layer-activation-magnitude",
        "activation-norm-channel",
    ],
)
def test_data_driven_strategy_without_calibration(strategy):
    with pytest.raises(ValueError, match="needs calibration data"):
        prunelab.Pruner(make_mlp(), strategy)


def test_calibration_for_another_model(mlp_data):
    cal = prunelab.Calibration(make_mlp(), mlp_data)
    with pytest.raises(ValueError, match="different model"):
        prunelab.Pruner(make_mlp(), "layer-magnitude-gradient", calibration=cal)


def test_pattern_matching_no_target_lists_available():
    with pytest.raises(ValueError, match=r"matches no prunable tensor; available: 0\.weight"):
        prunelab.targets(make_mlp(), include="features.*")
    with pytest.raises(ValueError, match="matches no prunable tensor"):
        prunelab.Pruner(make_mlp(), "layer-magnitude", targets=["nope.weight"])


def test_model_without_prunable_tensors():
    with pytest.raises(ValueError, match="no prunable tensors"):
        prunelab.prune(
            nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "global-magnitude", sparsity=0.5
        )


def test_not_a_model():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        prunelab.targets({"weight": torch.ones(2, 2)})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_named(value):
    model = make_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = value
    with pytest.raises(ValueError, match=r"2\.weight has 1 NaN/inf"):
        prunelab.Pruner(model, "global-magnitude")


@pytest.mark.parametrize("pattern", ["4:4", "5:4", "0:4"])
def test_nm_with_n_not_below_m(pattern):
    with pytest.raises(ValueError, match="0 < N < M"):
        prunelab.get_strategy("n:m", granularity=pattern)


def test_nm_on_a_dimension_not_divisible_by_m():
    # chosen explicitly, the layer is an error; by default it is left out (it cannot be pruned)
    with pytest.raises(ValueError, match=r"0\.weight has 3 inputs \(not divisible by 4\)"):
        prunelab.Pruner(make_cnn(), "n:m", targets=["0.weight"])
    assert "0.weight" not in [t.fqn for t in prunelab.Pruner(make_cnn(), "n:m").targets]


def test_nm_with_a_sparsity_it_cannot_give():
    pruner = prunelab.Pruner(make_mlp(), "n:m")
    with pytest.raises(ValueError, match=r"pattern gives sparsity 0\.5"):
        pruner.masks(sparsity=0.7)
    assert pruner.masks(sparsity=0.5).sparsity() == 0.5


def test_unknown_granularity():
    with pytest.raises(ValueError, match="accepted: unstructured, channel, input-channel"):
        prunelab.get_strategy("layer-magnitude", granularity="rows")


def test_per_layer_naming_a_non_target():
    pruner = prunelab.Pruner(make_mlp(), "layer-magnitude")
    with pytest.raises(ValueError, match="not targets of this pruner"):
        pruner.masks(sparsity=0.5, per_layer={"0.bias": 0.5})
    with pytest.raises(ValueError, match=r"sparsity for '0\.weight' must be in \[0, 1\]"):
        pruner.masks(sparsity=0.5, per_layer={"0.weight": 2.0})


def test_activation_norm_on_elements_is_refused(mlp_data):
    model = make_mlp()
    cal = prunelab.Calibration(model, mlp_data)
    strategy = prunelab.get_strategy("activation-norm-channel", granularity="unstructured")
    with pytest.raises(ValueError, match="scores whole channels"):
        prunelab.Pruner(model, strategy, calibration=cal)


def test_empty_calibration_data():
    cal = prunelab.Calibration(make_mlp(), [])
    with pytest.raises(ValueError, match="empty"):
        cal.input_norms()


def test_calibration_data_of_the_wrong_kind():
    cal = prunelab.Calibration(make_mlp(), 42)
    with pytest.raises(TypeError, match="data must be"):
        cal.input_norms()


# -- issue 22: data, devices and models the engine cannot use say so at its boundary ----------


def _x_y(n: int = 10, features: int = 12, labels: torch.Tensor | None = None):
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(0))
    return x, torch.zeros(n, dtype=torch.long) if labels is None else labels


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_evaluate_refuses_non_finite_inputs_instead_of_an_accuracy(value):
    x, y = _x_y()
    x[4, 2] = value
    with pytest.raises(DataError, match=r"1 of 10 inputs in a batch hold NaN or inf"):
        prunelab.evaluate(make_mlp().eval(), (x, y))


@pytest.mark.parametrize("label", [3, -1])
def test_evaluate_refuses_labels_outside_the_classes(label):
    x, y = _x_y()
    y[7] = label
    with pytest.raises(DataError, match=r"class indices from 0 to 2 \(the model has 3 outputs\)"):
        prunelab.evaluate(make_mlp().eval(), (x, y), metrics=["accuracy"])


@pytest.mark.parametrize(
    "x", [torch.randn(10, 5), torch.ones(10, 12, dtype=torch.long)], ids=["shape", "dtype"]
)
def test_data_the_model_cannot_run_on_is_a_data_error(x):
    model = make_mlp().eval()
    shown = "5 float32" if x.shape[1] == 5 else "12 int64"
    with pytest.raises(DataError, match=rf"cannot run on this data \(inputs of {shown}\)") as info:
        prunelab.evaluate(model, x)
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error stays attached
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    with pytest.raises(DataError, match="cannot run on this data"):
        prunelab.sweep(model, x, strategies=["random"], sparsities=[0.5])
    with pytest.raises(DataError, match="cannot run on this data"):
        prunelab.sensitivity(
            model, x, sparsities=[0.5], config=SensitivityConfig(metric="agreement")
        )
    with pytest.raises(DataError, match="cannot run on this data"):
        prunelab.evaluate(model, x, masks=masks)


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "meta", 3.5])
def test_a_device_that_is_not_here(device):
    with pytest.raises(DeviceError, match="available"):
        prunelab.evaluate(make_mlp().eval(), _x_y(), device=device)
    with pytest.raises(DeviceError, match="available"):
        prunelab.Calibration(make_mlp(), _x_y(), device=device)


def test_calibration_on_data_the_model_cannot_use():
    model = make_mlp()
    cal = prunelab.Calibration(model, (torch.randn(8, 5), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(DataError, match=r"cannot run on this data \(inputs of 5 float32\)"):
        cal.gradients()
    with pytest.raises(DataError, match="cannot run on this data"):
        cal.input_norms()
    cal = prunelab.Calibration(model, _x_y(labels=torch.full((10,), 5)))
    with pytest.raises(DataError, match="labels from 5 to 5"):
        cal.gradients()


def test_shrink_refuses_a_module_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(torch.relu(self.a(x)))))

    torch.manual_seed(0)
    model = Twice()
    keep = torch.tensor([True, False, True, False])[:, None].expand(4, 4).clone()
    with pytest.raises(ShrinkError, match=r"module a \(Linear\) is called 2 times"):
        prunelab.shrink(model, prunelab.Masks({"a.weight": keep}), example_input=torch.randn(2, 4))


def test_a_zero_width_layer_is_named():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 0))
    with pytest.raises(ValueError, match=r"2\.weight \(Linear\) has no weights \(shape 0x6\)"):
        prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    keep = torch.tensor([True, False] * 3)[:, None].expand(6, 4).clone()
    with pytest.raises(ValueError, match="zero-width layer cannot be scored, pruned or shrunk"):
        prunelab.shrink(model, prunelab.Masks({"0.weight": keep}), example_input=torch.randn(1, 4))


@pytest.mark.parametrize(
    ("exc", "expect"),
    [
        (DataError("bad labels"), "bad labels"),
        (ValueError("a\nb"), "a b"),
        (FileNotFoundError(2, "No such file or directory", "/x/" + "a" * 400), "No such file"),
        (RecursionError(), "nested too deeply"),
        (MemoryError(), "out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: 10 TB"), "out of memory"),
        (KeyError("fc1"), None),
        (AttributeError("x"), None),
        (RuntimeError("an internal assert failed"), None),
    ],
)
def test_user_errors_are_told_from_bugs(exc, expect):
    message = user_message(exc)
    if expect is None:
        assert message is None
    else:
        assert expect in message and len(message) < 320 and "\n" not in message


@pytest.mark.parametrize("target", ["dir", "/dev/full"])
def test_atomic_write_refuses_what_is_not_a_file(target, tmp_path):
    path = tmp_path if target == "dir" else Path(target)
    with pytest.raises(ValueError, match=r"cannot write .*: it is"), atomic_write(path) as handle:
        handle.write(b"x")
    assert Path("/dev/full").is_char_device()
    # refused before a temporary file was made beside it
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))
