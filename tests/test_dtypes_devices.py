"""Half-precision weights, meta-device models and CUDA models through the public entry points."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from tests.conftest import (
    assert_unchanged,
    make_cnn,
    make_lstm,
    make_mlp,
    masked_applied_baked,
    snapshot,
)

HALF = [torch.float16, torch.bfloat16]
CHANNEL = "weight-norm-channel"


def _data(name: str, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    if name == "mlp":
        return torch.randn(n, 12, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    if name == "cnn":
        return torch.randn(n, 3, 6, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    return torch.randint(0, 20, (n, 5), generator=gen), torch.randint(0, 2, (n,), generator=gen)


MODELS = [("mlp", make_mlp), ("cnn", make_cnn), ("lstm", make_lstm)]


def _request(strategy: str) -> dict:
    return {} if strategy == "n:m" else {"sparsity": 0.5}


def _targets(name: str, strategy: str) -> list[str] | None:
    if strategy != "n:m":
        return None
    return {"mlp": ["0.weight", "2.weight"], "cnn": ["3.weight"], "lstm": ["lstm.*"]}[name]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name, make", MODELS, ids=[m[0] for m in MODELS])
def test_half_precision_models_through_pruner_masks_forward_apply_bake(dtype, name, make):
    model = make().to(dtype).eval()
    x, y = _data(name)
    x = x.to(dtype) if x.is_floating_point() else x
    before = snapshot(model)
    calibration = prunelab.Calibration(model, (x, y), batches=1)
    for strategy in prunelab.list_strategies():
        if strategy in ("head-magnitude", "head-taylor"):
            continue  # these models have no attention heads (tests/test_heads*.py)
        needs = prunelab.get_strategy(strategy).needs
        if name == "lstm" and "activations" in needs:
            continue  # activation statistics inside an LSTM are not visible (clear error)
        pruner = prunelab.Pruner(
            model,
            strategy,
            targets=_targets(name, strategy),
            calibration=calibration if needs else None,
        )
        masks = pruner.masks(**_request(strategy))
        assert all(m.dtype == torch.bool for m in masks.all().values())
        # channel strategies keep the output layer whole (pruner.left_out): 50% of the rest
        pruned = [m for f, m in masks.items() if f not in pruner.left_out.fqns]
        zeroed = sum(int((~m).sum()) for m in pruned) / sum(m.numel() for m in pruned)
        assert zeroed == pytest.approx(0.5, abs=0.02), strategy
        assert all(s.dtype == torch.float32 for s in pruner.scores().values()), strategy
        masked, applied, baked = masked_applied_baked(model, masks, x)
        assert masked.dtype == applied.dtype == baked.dtype == dtype
        torch.testing.assert_close(applied, masked, rtol=0, atol=0)
        torch.testing.assert_close(baked, masked, rtol=0, atol=0)
    assert_unchanged(model, before)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_scores_are_those_of_the_float32_weights(dtype):
    model = make_cnn().to(dtype)
    upcast = make_cnn().to(dtype).float()  # the same values, exactly, in float32
    for strategy in ("global-magnitude", "layer-magnitude", CHANNEL, "random", "n:m"):
        targets = _targets("cnn", strategy)
        ours = prunelab.Pruner(model, strategy, targets=targets).masks(**_request(strategy))
        reference = prunelab.Pruner(upcast, strategy, targets=targets).masks(**_request(strategy))
        assert all(torch.equal(ours[f], reference[f]) for f in reference), strategy


def test_float16_activation_scores_do_not_overflow():
    # ||x|| over the calibration data is above float16's largest value (65504)
    model = nn.Sequential(nn.Linear(8, 4)).half()
    x = torch.full((64, 8), 3e4, dtype=torch.float16)
    x[:, ::2] = 1.0
    calibration = prunelab.Calibration(model, x, batches=1)
    pruner = prunelab.Pruner(model, "layer-activation-magnitude", calibration=calibration)
    masks = pruner.masks(sparsity=0.5)
    assert masks.sparsity() == 0.5
    assert torch.isfinite(pruner.scores()["0.weight"]).all()
    # the large inputs make their weights important: the pruned half are the small inputs'
    assert not masks["0.weight"][:, ::2].any() and masks["0.weight"][:, 1::2].all()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_recipe_round_trip_and_shrink(dtype, tmp_path):
    model = make_cnn().to(dtype).eval()
    x = _data("cnn")[0].to(dtype)
    pruner = prunelab.Pruner(model, CHANNEL)
    masks = pruner.masks(sparsity=0.5)
    recipe = prunelab.Recipe.from_masks(masks, pruner.strategy)
    recipe.save(tmp_path / "r.yaml")
    again = prunelab.Recipe.load(tmp_path / "r.yaml").masks(model)
    assert all(torch.equal(masks[f], again[f]) for f in masks)
    baked = prunelab.bake(prunelab.apply(model, masks))
    assert all(p.dtype == dtype for p in baked.parameters())
    small = prunelab.shrink(model, masks, example_input=x)
    assert all(p.dtype == dtype for p in small.parameters())
    assert small[0].out_channels == 4
    extended = prunelab.extend_channel_masks(model, masks, example_input=x)
    with torch.no_grad():
        torch.testing.assert_close(
            small(x).float(), prunelab.masked_forward(model, extended, x).float()
        )


def test_other_weight_dtypes_are_refused_naming_the_dtype():
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if fp8 is None:
        pytest.skip("this torch has no float8 dtype")
    model = nn.Sequential(nn.Linear(4, 4)).to(fp8)
    with pytest.raises(ValueError) as info:
        prunelab.Pruner(model, "global-magnitude")
    assert str(info.value) == (
        "0.weight is float8_e4m3fn; prunelab prunes weights of dtype float32, float64, "
        "float16, bfloat16 (convert the model, e.g. model.float())"
    )


# -- meta device -----------------------------------------------------------------------------


def _meta_mlp() -> nn.Module:
    with torch.device("meta"):
        return make_mlp()


_X, _Y = _data("mlp")
_MASKS = prunelab.prune(make_mlp(), CHANNEL, sparsity=0.5)
META_CALLS = {
    "targets": lambda m: prunelab.targets(m),
    "Pruner": lambda m: prunelab.Pruner(m, "global-magnitude"),
    "Calibration": lambda m: prunelab.Calibration(m, (_X, _Y)),
    "masked_forward": lambda m: prunelab.masked_forward(m, _MASKS, _X),
    "apply": lambda m: prunelab.apply(m, _MASKS),
    "evaluate": lambda m: prunelab.evaluate(m, (_X, _Y)),
    "evaluate on a device": lambda m: prunelab.evaluate(m, (_X, _Y), masks=_MASKS, device="cpu"),
    "latency": lambda m: prunelab.latency(m, _X, repeats=1, warmup=0),
    "model_stats": lambda m: prunelab.model_stats(m, example_input=_X),
    "sweep": lambda m: prunelab.sweep(m, (_X, _Y), strategies=["random"], sparsities=[0.5]),
    "sensitivity": lambda m: prunelab.sensitivity(m, (_X, _Y), sparsities=[0.5]),
    "shrink": lambda m: prunelab.shrink(m, _MASKS, example_input=_X),
    "recipe": lambda m: prunelab.Recipe(layers={"0.weight": 0.5}).masks(m),
}


@pytest.mark.parametrize("call", list(META_CALLS))
def test_a_meta_device_model_is_refused_up_front(call):
    with pytest.raises(ValueError) as info:
        META_CALLS[call](_meta_mlp())
    assert str(info.value) == (
        "parameter '0.weight' of Sequential is on the meta device: it has a shape but no "
        "values, so there is nothing to score, mask or run; load real weights first "
        "(model.to_empty(device='cpu'), then model.load_state_dict(...))"
    )


def test_a_partly_meta_model_is_refused_naming_the_meta_tensor():
    model = make_cnn()
    model[1].to_empty(device="meta")  # only the BatchNorm: no prunable weight on meta
    with pytest.raises(ValueError, match=r"^parameter '1\.weight' of Sequential is on the meta"):
        prunelab.masked_forward(model, prunelab.prune(make_cnn(), CHANNEL, sparsity=0.5), _X)


# -- CUDA ------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_a_cuda_model_end_to_end():
    model = make_cnn().cuda().eval()
    x, y = (t.cuda() for t in _data("cnn"))
    before = snapshot(model)
    calibration = prunelab.Calibration(model, (x, y))
    for strategy in ("global-magnitude-gradient", "layer-activation-magnitude", CHANNEL):
        pruner = prunelab.Pruner(model, strategy, calibration=calibration)
        masks = pruner.masks(sparsity=0.5)
        with torch.no_grad():
            masked = prunelab.masked_forward(model, masks, x)
            applied = prunelab.apply(model, masks)
            assert applied[0].weight_mask.device.type == "cuda"
            baked = prunelab.bake(applied)(x)
            on_cpu = prunelab.masked_forward(model, masks, x.cpu(), device="cpu")
        assert masked.device.type == "cuda" and on_cpu.device.type == "cpu"
        torch.testing.assert_close(baked, masked)
        torch.testing.assert_close(on_cpu, masked.cpu(), rtol=1e-4, atol=1e-5)
        result = prunelab.evaluate(model, (x, y), masks=masks)
        assert result["samples"] == x.shape[0]
    small = prunelab.shrink(model, masks, example_input=x)
    assert next(small.parameters()).device.type == "cuda"
    assert_unchanged(model, before)


@cuda
def test_a_cpu_model_evaluated_on_cuda_stays_on_cpu():
    model = make_mlp().eval()
    x, y = _data("mlp")
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    out = prunelab.masked_forward(model, masks, x, device="cuda")
    assert out.device.type == "cuda"
    assert next(model.parameters()).device.type == "cpu"
    cpu = prunelab.evaluate(model, (x, y), masks=masks)
    gpu = prunelab.evaluate(model, (x, y), masks=masks, device="cuda")
    assert gpu["accuracy"] == pytest.approx(cpu["accuracy"])
