"""Hugging Face models: GPT-2's Conv1D as a target, tied heads, ``hf:`` specs."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.targets import targets, weight_dims
from tests.conftest import tiny_gpt2

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def conv1d_and_linear() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    conv = Conv1D(12, 8)  # nf=12 outputs, nx=8 inputs: weight (8, 12)
    linear = nn.Linear(8, 12)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    return nn.Sequential(conv), nn.Sequential(linear)


def test_conv1d_is_a_target_with_transposed_layout():
    conv, _ = conv1d_and_linear()
    (target,) = targets(conv)
    assert target.module_type == "Conv1D" and target.shape == (8, 12)
    assert (target.out_dim, target.in_dim) == weight_dims(conv[0]) == (1, 0)
    assert target.bias == "0.bias"


@pytest.mark.parametrize(
    "strategy",
    [
        prunelab.get_strategy("layer-magnitude"),
        prunelab.get_strategy("layer-magnitude", granularity="channel", prune_outputs=True),
        prunelab.get_strategy("layer-magnitude", granularity="input-channel", prune_outputs=True),
        prunelab.get_strategy("layer-magnitude", granularity="2:4"),
        prunelab.get_strategy("weight-norm-channel", prune_outputs=True),
    ],
    ids=str,
)
def test_conv1d_masks_are_the_transposed_linear_masks(strategy):
    conv, linear = conv1d_and_linear()
    got = prunelab.prune(conv, strategy, sparsity=0.5)["0.weight"]
    want = prunelab.prune(linear, strategy, sparsity=0.5)["0.weight"]
    assert torch.equal(got, want.T)
    assert 0.4 <= 1 - got.float().mean().item() <= 0.6


def test_conv1d_wanda_scores_use_input_norms_along_its_input_dim():
    conv, linear = conv1d_and_linear()
    inputs = torch.randn(64, 8) * torch.linspace(0.1, 3, 8)
    data = (inputs, torch.zeros(64, dtype=torch.long))

    def wanda(model: nn.Module) -> torch.Tensor:
        calibration = prunelab.Calibration(model, data, batches=1, batch_size=64)
        masks = prunelab.prune(
            model, "layer-activation-magnitude", sparsity=0.5, calibration=calibration
        )
        return masks["0.weight"]

    got, want = wanda(conv), wanda(linear)
    assert torch.equal(got, want.T)


def test_apply_and_masked_forward_on_conv1d_agree():
    conv, _ = conv1d_and_linear()
    masks = prunelab.prune(conv, "layer-magnitude", sparsity=0.5)
    pruned = prunelab.apply(conv, masks)
    assert hasattr(pruned[0], "weight_mask") and not hasattr(conv[0], "weight_mask")
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(pruned(x), prunelab.masked_forward(conv, masks, x))
    torch.testing.assert_close(pruned(x), x @ (conv[0].weight * masks["0.weight"]) + conv[0].bias)


def test_gpt2_targets_skip_embeddings_and_the_tied_head():
    model = tiny_gpt2()
    fqns = [t.fqn for t in targets(model)]
    assert "lm_head.weight" not in fqns
    assert not any("wte" in f or "wpe" in f for f in fqns)
    assert fqns[:4] == [
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight",
    ]
    assert {t.module_type for t in targets(model)} == {"Conv1D"}


def test_an_untied_head_is_a_target():
    model = tiny_gpt2(tie_word_embeddings=False)
    assert "lm_head.weight" in [t.fqn for t in targets(model)]


def test_apply_and_bake_keep_the_head_tied():
    model = tiny_gpt2()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    pruned = prunelab.apply(model, masks)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    baked = prunelab.bake(pruned)
    assert baked.lm_head.weight is baked.transformer.wte.weight
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(baked(ids).logits, prunelab.masked_forward(model, masks, ids).logits)
    assert model.lm_head.weight is model.transformer.wte.weight  # the model given, untouched
    assert not hasattr(model.transformer.h[0].attn.c_attn, "weight_mask")


# -- hf: specs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_gpt2(tmp_path_factory):
    import shutil

    from prunelab.io.zoo import sample_dir

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_gpt2().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the sample's, 1024 tokens
        shutil.copy(sample_dir() / "pydoc-gpt" / name, folder / name)
    return folder


def test_hf_directory_loads_as_a_language_model(saved_gpt2):
    from prunelab.io import zoo

    bundle = zoo.load(f"hf:{saved_gpt2}")
    assert bundle.task == "language-model" and bundle.input_dtype == torch.int64
    assert bundle.input_shape == (16,)  # the model's 16 positions (under the default 128)
    assert bundle.default_data is None and bundle.class_names is None
    assert bundle.tokenizer is not None and bundle.tokenizer("def f():")["input_ids"]
    assert bundle.model.lm_head.weight is bundle.model.transformer.wte.weight
    ids = bundle.example_input(batch_size=3)
    assert ids.shape == (3, 16) and int(ids.max()) < 50
    torch.testing.assert_close(bundle.model(ids).logits, tiny_gpt2()(ids).logits)
    assert "tokenizer" not in repr(bundle)
    assert zoo.load(f"hf:{saved_gpt2}?context=8").input_shape == (8,)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("?context=99", "context=99 must be from 1"),
        ("?task=translation", "unknown task='translation'"),
        ("?colour=red", "colour"),
    ],
)
def test_hf_options_are_checked(saved_gpt2, options, message):
    from prunelab.io import zoo

    with pytest.raises(ValueError, match=message):
        zoo.load(f"hf:{saved_gpt2}{options}")


def test_hf_remote_code_is_refused_from_an_untrusted_spec(saved_gpt2):
    from prunelab.io import zoo

    with pytest.raises(ValueError, match="untrusted"):
        zoo.load(f"hf:{saved_gpt2}?trust_remote_code=1", untrusted=True)


def test_hf_directory_without_a_model(tmp_path):
    from prunelab.io import zoo

    with pytest.raises(ValueError, match=r"no config\.json"):
        zoo.load(f"hf:{tmp_path}")


def test_hf_hub_id_offline_is_one_clear_line(tmp_path, monkeypatch):
    from prunelab.io import zoo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ValueError, match="not in the local Hugging Face cache") as caught:
        zoo.load("hf:someone/no-such-model")
    assert "\n" not in str(caught.value) and "local directory" in str(caught.value)


# -- export --------------------------------------------------------------------------------


def test_hf_export_is_a_tied_save_pretrained_directory(saved_gpt2, tmp_path):
    import io
    import zipfile

    from prunelab.io import exports, zoo

    bundle = zoo.load(f"hf:{saved_gpt2}")
    masks = prunelab.prune(bundle.model, "layer-magnitude", sparsity=0.5)
    done = exports.export(
        bundle.model, masks, tmp_path / "pruned", format="hf", tokenizer=bundle.tokenizer
    )
    assert done.path.is_dir() and (done.path / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left
    again = zoo.load(f"hf:{done.path}")
    assert again.model.lm_head.weight is again.model.transformer.wte.weight
    ids = bundle.example_input(batch_size=2)
    torch.testing.assert_close(
        again.model(ids).logits, prunelab.masked_forward(bundle.model, masks, ids).logits
    )
    weight = again.model.transformer.h[0].attn.c_attn.weight
    assert torch.equal(weight != 0, masks["transformer.h.0.attn.c_attn.weight"])
    exports.export(bundle.model, masks, tmp_path / "pruned", format="hf")  # replaces it
    data, info = exports.export_bytes(bundle.model, masks, format="hf")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "model.safetensors" in names and "config.json" in names and info.size == len(data)


def test_hf_export_refuses_other_models_and_broken_ties(tmp_path):
    from prunelab.io import exports
    from prunelab.io.hf import check_ties

    net = nn.Sequential(nn.Linear(4, 4))
    masks = prunelab.prune(net, "layer-magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match="for Hugging Face models"):
        exports.export(net, masks, tmp_path / "x", format="hf")
    model = tiny_gpt2()
    untied = tiny_gpt2()
    untied.lm_head.weight = nn.Parameter(untied.lm_head.weight.detach().clone())
    with pytest.raises(ValueError, match="no longer ties"):
        check_ties(model, untied)


# -- the sample language model -------------------------------------------------------------


def test_sample_language_model_loads_with_its_card_and_tokenizer():
    from prunelab.io import zoo

    bundle = zoo.load("sample:pydoc-gpt")
    assert (bundle.spec, bundle.name, bundle.task) == (
        "sample:pydoc-gpt",
        "pydoc-gpt",
        "language-model",
    )
    assert bundle.input_shape == (128,) and bundle.default_data == "sample:pydoc-text"
    assert type(bundle.model).__name__ == "GPT2LMHeadModel"
    assert bundle.model.lm_head.weight is bundle.model.transformer.wte.weight
    assert len(bundle.tokenizer) == 1024 and int(bundle.example_input(4).max()) < 1024
    card = bundle.card
    assert card["task"] == "language-model" and card["tokenizer"]["vocab_size"] == 1024
    assert card["test_perplexity"] < card["unigram_test_perplexity"] / 3
    weights = zoo.sample_dir() / card["weights"]["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights"]["sha256"]
    assert "sample:pydoc-gpt" in zoo.list_models(torchvision=False)
    row = zoo.sample_table().set_index("spec").loc["sample:pydoc-gpt"]
    assert row["test ppl"] == f"{card['test_perplexity']:.2f}" and row["test acc"] == "-"


@pytest.mark.slow  # a forward pass over the whole test split
def test_sample_language_model_perplexity_is_what_its_card_says():
    from prunelab.io import zoo
    from prunelab.io.corpus import pydoc_text

    bundle = zoo.load("sample:pydoc-gpt")
    ids = torch.tensor(bundle.tokenizer(pydoc_text("test"))["input_ids"])
    windows = ids[: len(ids) // 128 * 128].reshape(-1, 128)
    with torch.no_grad():
        logits = bundle.model(windows).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 1024), windows[:, 1:].reshape(-1))
    assert math.exp(float(loss)) == pytest.approx(bundle.card["test_perplexity"], rel=1e-3)


def test_cli_layers_lists_the_sample_language_models_projections(capsys):
    from prunelab.cli import main

    assert main(["layers", "sample:pydoc-gpt"]) == 0
    out = capsys.readouterr().out
    assert "transformer.h.0.attn.c_attn.weight" in out and "Conv1D" in out
    assert "lm_head" not in out


def test_next_tokens_dense_beside_pruned():
    from prunelab.analysis.generation import compare_next_tokens, next_tokens
    from prunelab.io import zoo

    bundle = zoo.load("sample:pydoc-gpt")
    text = "The for statement is used to iterate over the elements of a"
    dense = next_tokens(bundle.model, bundle.tokenizer, text)
    assert len(dense) == 5 and dense[0][1] >= dense[-1][1] and 0 < sum(p for _, p in dense) <= 1
    masks = prunelab.prune(bundle.model, "layer-magnitude", sparsity=0.9)
    table = compare_next_tokens(bundle.model, bundle.tokenizer, text, masks=masks)
    assert list(table["dense p"]) == pytest.approx([p for _, p in dense])
    assert list(table["pruned p"]) != list(table["dense p"])
    assert next_tokens(bundle.model, bundle.tokenizer, "", top=2)  # empty text: start of text
    assert not hasattr(bundle.model.transformer.h[0].attn.c_attn, "weight_mask")


def test_a_tied_lm_head_means_no_output_layer_is_left_out_of_channel_pruning():
    from prunelab.core.pruner import left_out
    from prunelab.core.targets import output_layers

    tied = tiny_gpt2()
    found = output_layers(tied)
    # the logits come from lm_head, tied to wte (not a target); the last block's c_proj only
    # feeds the residual stream, so channel pruning it deletes no output
    assert found.fqns == () and "tied" in found.how
    assert left_out(tied, "weight-norm-channel", targets(tied)).fqns == ()
    untied = tiny_gpt2(tie_word_embeddings=False)
    assert output_layers(untied).fqns == ("lm_head.weight",)
