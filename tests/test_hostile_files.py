"""Hostile files (issue 9): each bad file gives one clear error in the API and the CLI.

The corpus is built by the tests, tiny, in ``tmp_path``: one table of model files and one of
recipes. Every case is checked here through the Python API and the CLI, and in
tests/app/test_hostile_uploads.py through the app. A pickle that would run code carries a
marker file that must not appear unless the user trusts the file.

``stage`` says which step first notices the problem: ``"load"`` (``zoo.load`` /
``Recipe.load``), ``"prune"`` (a NaN weight loads, and the Pruner refuses to score it) or
``"masks"`` (a recipe naming layers the model lacks parses, and ``Recipe.masks`` refuses it).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from tests.hostile_corpus import RunsCode
from tests.hostile_corpus import one_line_error as _one_line_error
from tests.hostile_corpus import saved as _saved

ARCH = "sample:digits-mlp"
MARKER = "MARKER"


def _state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in zoo.load(ARCH).model.state_dict().items()}


def _truncated(folder: Path) -> bytes:
    payload = _saved(_state())
    return payload[: len(payload) // 2]


def _other_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", "a zip, but not a checkpoint")
    return buffer.getvalue()


def _runs_code(folder: Path) -> bytes:
    return _saved({"fc1.weight": RunsCode(folder / MARKER)})


def _wrong_shapes(folder: Path) -> bytes:
    return _saved({**_state(), "fc1.weight": torch.zeros(3, 3)})


def _integer_weights(folder: Path) -> bytes:
    return _saved({k: (v * 100).to(torch.int64) for k, v in _state().items()})


def _extra_key(folder: Path) -> bytes:
    return _saved({**_state(), "fc9.weight": torch.zeros(2, 2)})


def _missing_key(folder: Path) -> bytes:
    state = _state()
    del state["fc2.weight"]
    return _saved(state)


def _nan_weights(folder: Path) -> bytes:
    state = _state()
    state["fc2.weight"][0, :5] = float("nan")
    return _saved(state)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], bytes]
    expect: str  # a phrase of the error message
    stage: str = "load"


MODEL_CASES = [
    Case("truncated checkpoint", _truncated, "truncated"),
    Case("zip that is not a checkpoint", _other_zip, "not a complete file written by torch.save"),
    Case("pickle that runs code", _runs_code, "trust"),
    Case("wrong shapes", _wrong_shapes, "shape mismatches: fc1.weight (file 3x3"),
    Case("integer weights", _integer_weights, "dtype mismatches"),
    Case("extra key", _extra_key, "unexpected keys: fc9.weight"),
    Case("missing key", _missing_key, "missing keys: fc2.weight"),
    Case("NaN weights", _nan_weights, "fc2.weight has 5 NaN/inf values", stage="prune"),
]

_LAYERS = "layers: {fc1.weight: 0.5}\n"
_HEAD = "format: prunelab.recipe/1\nstrategy: layer-magnitude\n"


def _huge_recipe(folder: Path) -> bytes:
    return (_HEAD + _LAYERS + "provenance: {model: '" + "x" * 10_000_000 + "'}\n").encode()


def _unknown_layers(folder: Path) -> bytes:
    return (_HEAD + "layers: {fc1.weight: 0.5, encoder.9.weight: 0.3}\n").encode()


def _code_tag(folder: Path) -> bytes:
    tag = f"!!python/object/apply:os.mkdir ['{folder / MARKER}']"
    return (_HEAD + _LAYERS + f"provenance: {tag}\n").encode()


def _custom_tag(folder: Path) -> bytes:
    return (_HEAD + "layers: !sparsities {fc1.weight: 0.5}\n").encode()


RECIPE_CASES = [
    Case("10 MB string", _huge_recipe, "a recipe is a few KB"),
    Case("unknown layers", _unknown_layers, "encoder.9.weight", stage="masks"),
    Case("python tag that runs code", _code_tag, "safe loading only"),
    Case("custom tag", _custom_tag, "safe loading only"),
]


def ids(cases: list[Case]) -> list[str]:
    return [case.name.replace(" ", "-") for case in cases]


def model_file(case: Case, folder: Path) -> Path:
    path = folder / "model.pt"
    path.write_bytes(case.build(folder))
    return path


def recipe_file(case: Case, folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_bytes(case.build(folder))
    return path


# -- model files ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODEL_CASES, ids=ids(MODEL_CASES))
def test_model_file_api(case, tmp_path):
    spec = f"file:{model_file(case, tmp_path)}?arch={ARCH}"
    if case.stage == "load":
        with pytest.raises(ValueError) as info:
            zoo.load(spec)
    else:  # NaN weights load; the first step that reads them (scoring, in the Pruner) refuses
        from prunelab import prune

        bundle = zoo.load(spec)
        with pytest.raises(ValueError) as info:
            prune(bundle.model, "layer-magnitude", sparsity=0.5)
    assert case.expect in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("case", MODEL_CASES, ids=ids(MODEL_CASES))
def test_model_file_cli(case, tmp_path, capsys):
    spec = f"file:{model_file(case, tmp_path)}?arch={ARCH}"
    if case.stage == "load":
        argv = ["layers", spec]
    else:
        argv = ["prune", spec, "--strategy", "layer-magnitude", "--sparsity", "0.5"]
    line = _one_line_error(capsys, argv)
    assert line.startswith(f"prunelab {argv[0]}: error:")
    assert case.expect in line
    assert not (tmp_path / MARKER).exists()


def test_the_code_pickle_is_live_and_runs_only_with_trust(tmp_path):
    # the marker check above proves something only if trusting the file does run its code
    path = model_file(MODEL_CASES[2], tmp_path)
    with pytest.raises(ValueError, match="neither a state_dict nor a module"):
        zoo.load(f"file:{path}", trust=True)
    assert (tmp_path / MARKER).exists()


def test_a_data_file_never_unpickles_code(tmp_path):
    path = tmp_path / "data.pt"
    path.write_bytes(_saved({"x": torch.zeros(2, 64), "y": RunsCode(tmp_path / MARKER)}))
    with pytest.raises(ValueError, match="cannot read data file") as info:
        data_lib.load(f"file:{path}")
    assert "\n" not in str(info.value)
    assert not (tmp_path / MARKER).exists()


def test_lower_precision_weights_convert_to_the_model_dtype(tmp_path):
    # decided in zoo's docstring: other float precisions convert, as load_state_dict does
    state = _state()
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in state.items()}, path)
    model = zoo.load(f"file:{path}?arch={ARCH}").model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.allclose(model.fc1.weight, state["fc1.weight"].half().float())


@pytest.mark.parametrize("kind", ["model", "data"])
def test_files_over_the_size_cap_are_refused_before_reading(kind, tmp_path, monkeypatch, capsys):
    # the cap matches the app's upload limit in .streamlit/config.toml (200 MiB)
    config = (Path(__file__).resolve().parents[1] / ".streamlit/config.toml").read_text()
    assert "maxUploadSize = 200" in config
    assert data_lib.MAX_FILE_BYTES == 200 * 1024 * 1024
    monkeypatch.setattr(data_lib, "MAX_FILE_BYTES", 1000)
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(b"\0" * 5000)
    read, torch_load = [], torch.load

    def spy(source, *args, **kwargs):
        read.append(str(source))
        return torch_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    if kind == "model":
        spec = f"file:{path}?arch={ARCH}"
        with pytest.raises(ValueError, match=r"model file .*5,000 bytes.*1,000 bytes"):
            zoo.load(spec)
        line = _one_line_error(capsys, ["layers", spec])
    else:
        spec = f"file:{path}"
        with pytest.raises(ValueError, match=r"data file .*5,000 bytes.*1,000 bytes"):
            data_lib.load(spec)
        argv = ["prune", ARCH, "--strategy", "layer-magnitude", "--sparsity", "0.5"]
        line = _one_line_error(capsys, [*argv, "--data", spec])
    assert f"{kind} file" in line and "are accepted" in line
    assert str(path) not in read, "the file was read before its size was checked"


# -- recipes -------------------------------------------------------------------------------


def test_the_code_tag_is_live_under_unsafe_yaml(tmp_path):
    # proves the marker check means something: an unsafe loader would run the tag
    import yaml

    yaml.unsafe_load(_code_tag(tmp_path).decode())
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("case", RECIPE_CASES, ids=ids(RECIPE_CASES))
def test_recipe_api(case, tmp_path):
    path = recipe_file(case, tmp_path)
    with pytest.raises(ValueError) as info:
        if case.stage == "load":
            Recipe.load(path)
        else:  # a recipe naming absent layers parses; applying it to a model refuses
            Recipe.load(path).masks(zoo.load(ARCH).model)
    assert case.expect in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("case", RECIPE_CASES, ids=ids(RECIPE_CASES))
def test_recipe_cli(case, tmp_path, capsys):
    path = recipe_file(case, tmp_path)
    line = _one_line_error(capsys, ["apply", str(path), ARCH])
    assert line.startswith("prunelab apply: error:")
    assert case.expect in line
    assert not (tmp_path / MARKER).exists()


# -- masks files (Python API only: no front end reads them) ---------------------------------

_TAG = "prunelab.masks/1"

MASKS_CASES = {
    "truncated": lambda folder: _saved({"format": _TAG, "masks": {}})[:40],
    "pickle that runs code": lambda folder: _saved(
        {"format": _TAG, "masks": {"fc1.weight": RunsCode(folder / MARKER)}}
    ),
    "no format tag": lambda folder: _saved({"masks": {}}),
    "masks not a mapping": lambda folder: _saved({"format": _TAG, "masks": torch.ones(3)}),
    "masks not bool": lambda folder: _saved({"format": _TAG, "masks": {"a": torch.ones(3)}}),
}


@pytest.mark.parametrize("build", MASKS_CASES.values(), ids=list(MASKS_CASES))
def test_masks_file(build, tmp_path):
    from prunelab.core.masks import Masks

    path = tmp_path / "masks.pt"
    path.write_bytes(build(tmp_path))
    with pytest.raises((ValueError, TypeError)) as info:
        Masks.load(path)
    message = str(info.value)
    assert "masks file" in message or "must be a bool tensor" in message
    assert "\n" not in message
    assert not (tmp_path / MARKER).exists()
