"""`prunelab finetune`: prune with a recipe, fine-tune with the masks kept, save, compare.

One command-line run on the digits MLP is shared by the tests that read what it printed and
saved; the language model runs two steps on a few sequences.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from prunelab.analysis.evaluation import evaluate
from prunelab.cli.commands import main
from prunelab.cli.progress import Bar
from prunelab.io import data as datasets
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from prunelab.training import TrainConfig, finetune

MLP = "sample:digits-mlp"
LIMIT = 300  # training and test samples: a few steps, under a second


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(stdout, progress messages, recipe, saved file) of one finetune run on the MLP."""
    tmp = tmp_path_factory.mktemp("finetune")
    recipe = tmp / "recipe.yaml"
    Recipe(default_sparsity=0.8).save(recipe)
    out = tmp / "tuned.pt"
    argv = ["finetune", MLP, "--recipe", str(recipe), "--limit", str(LIMIT), "--epochs", "2"]
    said: list[str] = []
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(Bar, "__call__", lambda self, fraction, message: said.append(message))
        assert main([*argv, "--out", str(out)]) == 0
    return printed.getvalue(), said, Recipe.load(recipe), out


def test_the_saved_weights_keep_the_zeros_and_win_back_accuracy(run):
    printed, _, recipe, out = run
    dense = zoo.load(MLP).model
    masks = recipe.masks(dense)
    tuned = zoo.load(f"file:{out}?arch={MLP}").model  # the file loads as `apply --out`'s does
    weights = dict(tuned.named_parameters())
    for fqn, mask in masks.items():
        assert (weights[fqn][~mask] == 0).all(), fqn
    test = datasets.load("sample:digits", split="test", limit=LIMIT)
    one_shot = evaluate(dense, test, masks=masks, metrics=("accuracy",))["accuracy"]
    assert evaluate(tuned, test, metrics=("accuracy",))["accuracy"] >= one_shot
    assert f"{one_shot:.2%}" in printed


def test_it_prints_the_table_and_where_it_saved(run):
    printed, said, _, out = run
    lines = printed.splitlines()
    assert "sparsity 0.8000; fine-tuned 10 steps (2 epochs over 300 training samples" in lines[0]
    assert lines[1] == "accuracy on sample:digits, test split, 300 samples:"
    assert [line.split()[0] for line in lines[3:6]] == ["dense", "one-shot", "fine-tuned"]
    assert lines[4].endswith("pp drop")
    assert f"saved to {out}; load it with:" in printed
    assert f'prunelab.io.zoo.load("file:{out}?arch={MLP}").model' in printed
    assert any(m.startswith("step 1/10, loss") for m in said)
    assert any(m.startswith("step 10/10") for m in said)


def test_the_command_gives_what_finetune_gives_in_python(run):
    _, _, recipe, out = run
    model = zoo.load(MLP).model
    train = datasets.load("sample:digits", split="train", limit=LIMIT)
    config = TrainConfig(epochs=2, lr=0.003, batch_size=64, seed=0)
    tuned, _ = finetune(model, recipe.masks(model), train, config=config)
    saved = torch.load(out, weights_only=True)
    expected = tuned.state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_language_model_trains_a_few_steps_and_reports_perplexity(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    Recipe(default_sparsity=0.5).save(recipe)
    out = tmp_path / "lm.pt"
    argv = ["finetune", "sample:pydoc-gpt", "--recipe", str(recipe), "--limit", "16"]
    assert main([*argv, "--batch-size", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned 2 steps (1 epoch over 16 training sequences, batch 8, adam at lr 0.001" in (
        printed
    )
    assert "perplexity on sample:pydoc-text, test split, 16 sequences:" in printed
    assert "rise" in printed
    assert "?arch=" not in printed  # a language model loads its state_dict into the sample
    tuned = zoo.load("sample:pydoc-gpt").model
    tuned.load_state_dict(torch.load(out, weights_only=True))
    assert tuned.lm_head.weight is tuned.transformer.wte.weight  # still tied once loaded


def test_ctrl_c_while_training_writes_nothing(tmp_path, capsys, monkeypatch):
    import prunelab.training

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prunelab.training, "finetune", interrupt)
    recipe = tmp_path / "recipe.yaml"
    Recipe(default_sparsity=0.5).save(recipe)
    out = tmp_path / "tuned.pt"
    argv = ["finetune", MLP, "--recipe", str(recipe), "--limit", "20", "--out", str(out)]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == f"interrupted; nothing was written to {out}"
    assert not out.exists() and list(Path(tmp_path).iterdir()) == [recipe]


def test_an_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(zoo, "load", no_work)
    recipe = tmp_path / "recipe.yaml"
    Recipe(default_sparsity=0.5).save(recipe)
    out = tmp_path / "nodir" / "tuned.pt"
    assert main(["finetune", MLP, "--recipe", str(recipe), "--out", str(out)]) == 2
    assert f"directory {tmp_path / 'nodir'} does not exist" in capsys.readouterr().err
