"""export: files that reload (also in a fresh process) and are never half-written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import prunelab
from prunelab.analysis import load_sparse
from prunelab.core.apply import masked_forward
from prunelab.io import zoo
from prunelab.io.exports import FORMATS, export, export_bytes, load_snippet
from prunelab.shrinking import extend_channel_masks
from tests.conftest import assert_unchanged, make_cnn, snapshot

SPEC = "sample:digits-resnet"


@pytest.fixture(scope="module")
def resnet():
    bundle = zoo.load(SPEC)
    masks = prunelab.prune(bundle.model, "weight-norm-channel", sparsity=0.5)
    return bundle, masks


@pytest.mark.slow
def test_pt2_and_state_dict_reload_in_a_fresh_process(resnet, tmp_path):
    bundle, masks = resnet
    x = bundle.example_input(batch_size=5)
    before = snapshot(bundle.model)
    pt2 = export(bundle.model, masks, tmp_path / "m.pt2", format="pt2", example_input=x)
    state = export(bundle.model, masks, tmp_path / "m.pt", format="state_dict")
    assert_unchanged(bundle.model, before)
    assert pt2.model == "shrunk" and state.model == "masked"
    with torch.no_grad():
        shrunk_expected = masked_forward(
            bundle.model, extend_channel_masks(bundle.model, masks, example_input=x), x
        )
        masked_expected = masked_forward(bundle.model, masks, x)
    torch.save({"x": x, "pt2": shrunk_expected, "pt": masked_expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import json, torch
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        program = torch.export.load({str(tmp_path / "m.pt2")!r}).module()
        import prunelab
        model = prunelab.io.zoo.load("{SPEC}").model
        model.load_state_dict(torch.load({str(tmp_path / "m.pt")!r}, weights_only=True))
        with torch.no_grad():
            a = (program(io["x"]) - io["pt2"]).abs().max().item()
            b = (model(io["x"]) - io["pt"]).abs().max().item()
            one = tuple(program(io["x"][:1]).shape)
        print(json.dumps([a, b, one]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    pt2_diff, pt_diff, one = json.loads(out.stdout.strip().splitlines()[-1])
    assert pt2_diff < 1e-5 and pt_diff < 1e-5
    assert one == [1, 10]  # the batch dimension is dynamic


def test_zoo_loads_the_pt2_and_evaluates_in_batches(resnet, tmp_path):
    bundle, masks = resnet
    path = tmp_path / "m.pt2"
    export(bundle.model, masks, path, format="pt2", example_input=bundle.example_input())
    loaded = zoo.load(f"file:{path}", trust=True)  # our own file: running it is trusted
    assert loaded.input_shape == bundle.input_shape
    data = prunelab.io.data.load("sample:digits", split="test", limit=50)
    assert prunelab.evaluate(loaded.model, data, batch_size=16)["samples"] == 50


def test_sparse_export_round_trips(resnet, tmp_path):
    bundle, masks = resnet
    result = export(bundle.model, masks, tmp_path / "m.sparse.pt", format="sparse")
    restored, found = load_sparse(result.path, zoo.load(SPEC).model)
    x = bundle.example_input(batch_size=3)
    with torch.no_grad():
        assert torch.equal(restored(x), masked_forward(bundle.model, masks, x))
    assert result.layout in ("coo", "csr", "bitmask") and set(found) == set(masks)


def test_unstructured_pt2_is_the_masked_model_and_says_why():
    model = make_cnn().eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    data, info = export_bytes(model, masks, format="pt2", example_input=torch.randn(1, 3, 6, 6))
    assert info.model == "masked" and "scattered" in info.note and len(data) == info.size


@pytest.mark.parametrize("target", ["torch.save", "torch.export.save"])
def test_interrupted_export_leaves_no_partial_file(resnet, tmp_path, monkeypatch, target):
    bundle, masks = resnet

    def fail_midway(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(target, fail_midway)
    path = tmp_path / "m.out"
    with pytest.raises(KeyboardInterrupt):
        export(
            bundle.model,
            masks,
            path,
            format="pt2" if "export" in target else "state_dict",
            example_input=bundle.example_input(),
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused(tmp_path):
    model = make_cnn()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match="accepted: state_dict, pt2, sparse"):
        export(model, masks, tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="needs example_input"):
        export(model, masks, tmp_path / "x.pt2", format="pt2")
    with pytest.raises(FileNotFoundError):
        export(model, masks, tmp_path / "missing" / "x.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_snippets_name_the_file(fmt):
    text = load_snippet("out/model.bin", fmt, spec=SPEC)
    assert "out/model.bin" in text
    compile(text, "snippet", "exec")


def _recipe(tmp_path, strategy: str = "weight-norm-channel"):
    from prunelab.io.recipes import Recipe

    path = tmp_path / "recipe.yaml"
    granularity = "channel" if "channel" in strategy else "unstructured"
    Recipe(strategy=strategy, granularity=granularity, default_sparsity=0.5).save(path)
    return path


def test_cli_export_and_speed(tmp_path, capsys):
    from prunelab.cli.commands import main

    recipe = _recipe(tmp_path)
    out = tmp_path / "m.sparse.pt"
    assert (
        main(["export", SPEC, "--recipe", str(recipe), "--format", "sparse", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert out.is_file() and "load_sparse" in printed and str(out) in printed
    assert (
        main(["speed", SPEC, "--recipe", str(recipe), "--batch-sizes", "2", "--repeats", "1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "shrunk" in printed and "do not skip zeros" in printed


def test_cli_errors_are_one_line(tmp_path, capsys):
    from prunelab.cli.commands import main

    recipe = _recipe(tmp_path)
    assert main(["speed", SPEC, "--recipe", str(recipe), "--batch-sizes", "a"]) == 2
    assert "--batch-sizes must be integers" in capsys.readouterr().err
    missing = str(tmp_path / "nope" / "m.pt")
    assert main(["export", SPEC, "--recipe", str(recipe), "--out", missing]) == 2
    assert capsys.readouterr().err.count("\n") == 1
