"""The shipped sample models: their accuracy (recomputed here), their cards, their build."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunelab
from prunelab.io import zoo
from prunelab.io.architectures import ARCHITECTURES

BUILD = Path(__file__).resolve().parents[1] / "sample_models" / "build.py"
# The accuracy each model must reach on its test split (from the issue that introduced them).
REQUIRED = {
    "digits-mlp": 0.95,
    "digits-cnn": 0.97,
    "digits-resnet": 0.97,
    "sentiment-lstm": 0.90,
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_sample_reaches_its_card_accuracy_on_its_test_split(name):
    bundle = zoo.load(f"sample:{name}")
    test = prunelab.io.data.load(bundle.default_data, split="test")
    result = prunelab.evaluate(bundle.model, test, metrics=("accuracy",))
    assert result["accuracy"] >= REQUIRED[name]
    assert result["accuracy"] == pytest.approx(bundle.card["test_accuracy"], abs=1e-5)
    assert result["samples"] == bundle.card["data"]["test_size"]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_card_describes_the_model(name):
    card = json.loads((zoo.sample_dir() / f"{name}.json").read_text())
    model = zoo.load(f"sample:{name}").model
    assert card["name"] == name and card["task"] == "classification"
    assert card["architecture"]["class"].endswith(type(model).__name__)
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["input"]["shape"] == list(ARCHITECTURES[name].input_shape)
    for key in ("optimizer", "lr", "epochs", "batch_size", "seed"):
        assert key in card["training"]
    assert card["data"]["spec"] == ARCHITECTURES[name].data and card["data"]["description"]
    weights = (zoo.sample_dir() / card["weights"]["file"]).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == card["weights"]["sha256"]


def test_sentiment_card_says_plainly_that_its_data_is_synthetic():
    card = zoo.load("sample:sentiment-lstm").card
    assert card["data"]["synthetic"] is True
    assert "SYNTHETIC" in card["data"]["description"]
    # word order matters: a bag-of-words model does far worse than the LSTM
    assert card["data"]["bag_of_words_baseline_accuracy"] < card["test_accuracy"] - 0.2


def test_digits_resnet_has_residual_blocks_with_batchnorm():
    model = zoo.load("sample:digits-resnet").model
    blocks = [m for m in model.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) >= 2
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def _load_build_module():
    name = "prunelab_sample_build"
    spec = importlib.util.spec_from_file_location(name, BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture
def _restore_torch_settings():
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def _build_in_process(out: Path) -> None:
    build = _load_build_module()
    assert build.main(["--only", "digits-cnn", "--epochs", "1", "--out", str(out)]) == 0


@pytest.mark.usefixtures("_restore_torch_settings")
def test_build_gives_identical_weights_twice(tmp_path):
    for out in ("a", "b"):
        _build_in_process(tmp_path / out)
    first = torch.load(tmp_path / "a" / "digits-cnn.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "digits-cnn.pt", weights_only=True)
    untrained = ARCHITECTURES["digits-cnn"].factory().state_dict()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert not torch.equal(first["fc.weight"], untrained["fc.weight"])  # it did train
    weights = [(tmp_path / out / "digits-cnn.pt").read_bytes() for out in ("a", "b")]
    assert weights[0] == weights[1]
    card = json.loads((tmp_path / "a" / "digits-cnn.json").read_text())
    assert card["training"]["epochs"] == 1
    assert card["weights"]["sha256"] == hashlib.sha256(weights[0]).hexdigest()


@pytest.mark.slow
@pytest.mark.usefixtures("_restore_torch_settings")
def test_build_script_gives_the_same_weights_in_a_fresh_process(tmp_path):
    # a fresh interpreter with another hash seed: nothing may depend on set or dict order
    _build_in_process(tmp_path / "here")
    done = subprocess.run(
        [sys.executable, BUILD, "--only", "digits-cnn", "--epochs", "1", "--out", tmp_path / "x"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert done.returncode == 0, done.stderr
    assert "digits-cnn" in done.stdout and "test accuracy" in done.stdout
    here = (tmp_path / "here" / "digits-cnn.pt").read_bytes()
    assert (tmp_path / "x" / "digits-cnn.pt").read_bytes() == here
