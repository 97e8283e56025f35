"""prunelab.zoo: models by spec, and a clear error for every bad input."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import prunelab
from prunelab.io import zoo
from prunelab.io.architectures import ARCHITECTURES, DigitsCNN, build

# -- samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_sample_bundle_runs_on_its_example_input(name):
    bundle = zoo.load(f"sample:{name}")
    assert not bundle.model.training
    assert bundle.name == name and bundle.spec == f"sample:{name}"
    assert bundle.task == "classification" and bundle.default_data.startswith("sample:")
    x = bundle.example_input(batch_size=3)
    assert tuple(x.shape) == (3, *bundle.input_shape) and x.dtype == bundle.input_dtype
    with torch.no_grad():
        assert bundle.model(x).shape == (3, len(bundle.class_names))
    assert torch.equal(x, bundle.example_input(batch_size=3))  # seeded


def test_bundle_is_frozen_and_a_bare_name_works():
    bundle = zoo.load("digits-cnn")
    assert isinstance(bundle.model, DigitsCNN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.name = "other"
    assert isinstance(bundle, prunelab.ModelBundle)


def test_loading_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.load("sample:digits-resnet")
    zoo.load("torchvision:mobilenet_v3_small")
    assert torch.equal(torch.rand(3), expected)


def test_list_models_has_samples_then_torchvision():
    specs = zoo.list_models()
    samples = [f"sample:{n}" for n in zoo.SAMPLES]  # classifiers, then language models
    assert specs[: len(samples)] == samples and "sample:pydoc-gpt" in samples
    assert "torchvision:resnet18" in specs
    assert zoo.list_models(torchvision=False) == samples


def test_samples_are_found_where_a_wheel_puts_them(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "prunelab"
    package.mkdir(parents=True)
    shutil.copytree(zoo.sample_dir(), package / "_sample_models")
    monkeypatch.setattr(zoo, "__file__", str(package / "io" / "zoo.py"))
    zoo._card.cache_clear()
    try:
        assert zoo.sample_dir() == package / "_sample_models"
        assert zoo.load("sample:digits-mlp").card["name"] == "digits-mlp"
        shutil.rmtree(package / "_sample_models")
        with pytest.raises(FileNotFoundError, match=r"sample_models/build\.py"):
            zoo.load("sample:digits-mlp")
    finally:
        zoo._card.cache_clear()


def test_unknown_sample_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: sample:digits-mlp, sample:digits-cnn"):
        zoo.load("sample:lenet5")
    with pytest.raises(
        ValueError,
        match=r"expected one of sample:\.\.\., torchvision:\.\.\., file:\.\.\., hf:\.\.\.",
    ):
        zoo.load("onnx:bert")
    with pytest.raises(ValueError, match="unknown option"):
        zoo.load("sample:digits-mlp?weights=DEFAULT")


# -- torchvision -----------------------------------------------------------------------------


def test_torchvision_random_init_is_offline_and_repeatable():
    spec = "torchvision:mobilenet_v3_small?num_classes=10&input=3x32x32"
    first, second = zoo.load(spec), zoo.load(spec)
    assert first.input_shape == (3, 32, 32) and first.class_names is None
    assert not first.model.training
    assert first.default_data == "sample:digits?input=3x32x32&labels=0&limit=450"
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert first.model(first.example_input(2)).shape == (2, 10)
    assert zoo.load("torchvision:mobilenet_v3_small").input_shape == (3, 224, 224)


def test_torchvision_bad_names_and_options():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        zoo.load("torchvision:resnet81")
    with pytest.raises(ValueError, match=r"input='3xbig' .*must be positive sizes joined by 'x'"):
        zoo.load("torchvision:mobilenet_v3_small?input=3xbig")
    with pytest.raises(ValueError, match=r"unknown weights 'BEST'.*DEFAULT, IMAGENET1K_V1"):
        zoo.load("torchvision:mobilenet_v3_small?weights=BEST")
    with pytest.raises(ValueError, match=r"num_classes='ten'.*must be an integer"):
        zoo.load("torchvision:mobilenet_v3_small?num_classes=ten")


def test_pretrained_weights_not_cached_and_offline(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> ({url})")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError) as info:
        zoo.load("torchvision:mobilenet_v3_small?weights=DEFAULT")
    message = str(info.value)
    assert "not cached in" in message and "cannot be downloaded here" in message
    assert "torchvision:mobilenet_v3_small for a randomly initialised model" in message


def test_pretrained_weights_when_cached(monkeypatch):
    import torchvision.models._api as api

    reference = zoo.load("torchvision:mobilenet_v3_small").model.state_dict()
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda url, *a, **k: reference)
    bundle = zoo.load("torchvision:mobilenet_v3_small?weights=DEFAULT")
    assert len(bundle.class_names) == 1000 and bundle.class_names[0] == "tench"


def test_broken_torchvision_leaves_the_rest_working(broken_torchvision):
    with pytest.raises(ValueError, match=r"installed but cannot be imported.*nms"):
        zoo.load("torchvision:resnet18")
    assert zoo.list_models() == [f"sample:{n}" for n in zoo.SAMPLES]
    assert zoo.load("sample:digits-mlp").name == "digits-mlp"


def test_missing_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ValueError, match="torchvision is not installed"):
        zoo.load("torchvision:resnet18")


# -- files -----------------------------------------------------------------------------------


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a(x), b(x))


def test_state_dict_with_a_sample_arch(tmp_path):
    original = zoo.load("sample:digits-cnn")
    path = tmp_path / "mine.pt"
    torch.save(original.model.state_dict(), path)
    bundle = zoo.load(f"file:{path}?arch=sample:digits-cnn")
    assert bundle.name == "mine" and bundle.input_shape == (1, 8, 8)
    assert bundle.default_data == "sample:digits" and bundle.class_names == original.class_names
    assert _same_outputs(original.model, bundle.model, original.example_input(4))
    # a bare path and a bare arch name work too, and so does a training checkpoint
    torch.save({"state_dict": original.model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    again = zoo.load(f"{tmp_path / 'ckpt.pt'}?arch=digits-cnn")
    assert _same_outputs(original.model, again.model, original.example_input(4))


def test_state_dict_of_a_pruned_copy_is_folded(tmp_path):
    original = zoo.load("sample:digits-mlp")
    masks = prunelab.prune(original.model, "global-magnitude", sparsity=0.6)
    pruned = prunelab.apply(original.model, masks)
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")  # holds weight_orig, weight_mask
    bundle = zoo.load(f"file:{tmp_path / 'pruned.pt'}?arch=sample:digits-mlp")
    x = original.example_input(5)
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), prunelab.masked_forward(original.model, masks, x))
    assert prunelab.targets(bundle.model)  # plain layers again: prunable


def test_state_dict_with_a_torchvision_arch(tmp_path):
    source = zoo.load("torchvision:mobilenet_v3_small?num_classes=10")
    with torch.no_grad():  # else the file holds the seeded init that arch= builds anyway
        for param in source.model.parameters():
            param.mul_(1.5)
    torch.save(source.model.state_dict(), tmp_path / "tv.pt")
    spec = f"file:{tmp_path / 'tv.pt'}?arch=torchvision:mobilenet_v3_small&num_classes=10"
    bundle = zoo.load(spec)
    assert bundle.input_shape == (3, 224, 224)
    assert _same_outputs(source.model, bundle.model, source.example_input(1))


def test_a_torchvision_state_dict_loads_with_its_number_of_classes(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    for classes in (1000, 7):
        torch.manual_seed(classes)
        source = torchvision.models.resnet18(num_classes=classes).eval()
        path = tmp_path / f"resnet18_{classes}.pt"
        torch.save(source.state_dict(), path)
        bundle = zoo.load(f"file:{path}?arch=torchvision:resnet18")
        assert bundle.model.fc.out_features == classes  # read off the file's classifier
        assert bundle.input_shape == (3, 224, 224)
        assert bundle.default_data == "sample:digits?input=3x224x224&labels=0&limit=16"
        assert _same_outputs(source, bundle.model, torch.rand(1, 3, 64, 64))
    given = zoo.load(f"file:{path}?arch=torchvision:resnet18&num_classes=7&input=3x64x64")
    assert given.input_shape == (3, 64, 64)
    with pytest.raises(ValueError, match=r"fc.weight \(file 7x512, model 5x512\)"):
        zoo.load(f"file:{path}?arch=torchvision:resnet18&num_classes=5")


def test_torchvision_models_get_digits_that_fit_them():
    bundle = zoo.load("torchvision:mobilenet_v3_small?input=3x32x32")
    data = prunelab.io.data.load(bundle.default_data)
    assert tuple(data[0].shape) == bundle.input_shape  # unlabelled: inputs alone


def test_state_dict_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(build("digits-mlp").state_dict(), path)
    with pytest.raises(ValueError) as info:
        zoo.load(f"file:{path}?arch=sample:digits-cnn")
    message = str(info.value)
    assert "does not fit sample:digits-cnn" in message
    assert "missing keys: conv1.weight, conv1.bias, conv2.weight, conv2.bias (+2 more)" in message
    assert "unexpected keys: fc1.weight, fc1.bias" in message
    wide = DigitsCNN(channels=(8, 32))
    torch.save(wide.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"shape mismatches: conv1.weight \(file 8x1x3x3, model 16x1"
    ):
        zoo.load(f"file:{path}?arch=sample:digits-cnn")


def test_state_dict_needs_an_arch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build("digits-mlp").state_dict(), path)
    with pytest.raises(ValueError, match=r"holds a state_dict; .*arch=.*\?arch=sample:digits-cnn"):
        zoo.load(f"file:{path}")
    with pytest.raises(ValueError, match="unknown architecture arch='lenet'"):
        zoo.load(f"file:{path}?arch=lenet")


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    original = zoo.load("sample:digits-resnet")
    torch.save(original.model, path)
    with pytest.raises(zoo.TrustRequired) as info:
        zoo.load(f"file:{path}")
    message = str(info.value)
    assert "pickled Python object" in message and "arbitrary code" in message
    assert "--trust" in message
    trusted = zoo.load(f"file:{path}", trust=True)
    assert trusted.input_shape == (1, 8, 8) and trusted.default_data == "sample:digits"
    assert _same_outputs(original.model, trusted.model, original.example_input(3))
    assert zoo.load(f"file:{path}?trust=1").name == "whole"


def test_pickled_unknown_module_guesses_its_input(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)), path)
    bundle = zoo.load(f"file:{path}?input=3x16x16", trust=True)
    assert bundle.input_shape == (3, 16, 16)
    torch.save(nn.Sequential(nn.Linear(12, 2)), path)
    assert zoo.load(f"file:{path}", trust=True).input_shape == (12,)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(
        ValueError, match=r"cannot read .*junk\.pt: not a file written by torch\.save"
    ):
        zoo.load(f"file:{junk}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load(f"file:{tmp_path / 'nope.pt'}")
    bad_program = tmp_path / "bad.pt2"
    bad_program.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.pt2 as a torch\.export program"):
        zoo.load(f"file:{bad_program}")
    torch.save({"x": torch.zeros(2, 3), "y": torch.zeros(2)}, tmp_path / "data.pt")
    with pytest.raises(ValueError, match="looks like a data file"):
        zoo.load(f"file:{tmp_path / 'data.pt'}")


def _export(model: nn.Module, path: Path, *, dynamic: bool) -> None:
    x = torch.zeros(4, 1, 8, 8)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)


def test_exported_program(tmp_path):
    original = zoo.load("sample:digits-mlp")
    path = tmp_path / "mlp.pt2"
    _export(original.model, path, dynamic=True)
    bundle = zoo.load(f"file:{path}", trust=True)  # torch.export.load runs code from a file
    assert bundle.input_shape == (1, 8, 8) and bundle.input_dtype == torch.float32
    x = original.example_input(5)
    assert _same_outputs(original.model, bundle.model, x)
    # with arch= its weights go into the real architecture, whose layers can be pruned
    rebuilt = zoo.load(f"file:{path}?arch=sample:digits-mlp")
    assert [t.fqn for t in prunelab.targets(rebuilt.model)] == [
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ]
    assert _same_outputs(original.model, rebuilt.model, x)


def test_exported_program_with_a_fixed_batch_is_refused(tmp_path):
    path = tmp_path / "fixed.pt2"
    _export(build("digits-mlp"), path, dynamic=False)
    with pytest.raises(ValueError, match=r"fixed batch size \(4\).*Dim\('batch'\)"):
        zoo.load(f"file:{path}", trust=True)
