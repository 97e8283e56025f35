"""Train the sample models shipped with prunelab, deterministically, on the CPU.

Writes ``<name>.pt`` (a state_dict) and ``<name>.json`` (its model card) for each model into
this directory (or ``--out``); the language model ``pydoc-gpt`` is a Hugging Face directory
``pydoc-gpt/`` (tokenizer, ``config.json``, ``model.safetensors``) with its card
``pydoc-gpt.json`` beside it (:func:`build_language_model`). Training is seeded,
single-threaded and uses ``torch.use_deterministic_algorithms(True)``, so two runs on one
machine give identical weights (other CPUs or torch versions may differ in the last bits).

Usage::

    uv run python sample_models/build.py                      # all models, a few minutes
    uv run python sample_models/build.py --only digits-mlp    # one model
    uv run python sample_models/build.py --epochs 2 --out /tmp/x   # a shortened run
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import prunelab
from prunelab.io import data as pdata
from prunelab.io.architectures import ARCHITECTURES, LANGUAGE_MODELS
from prunelab.runtime.files import atomic_write

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    """How one sample model is trained."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    optimizer: str = "AdamW"
    schedule: str = "cosine annealing to 0 over all steps"
    loss: str = "cross-entropy"


RECIPES = {
    "digits-mlp": Recipe(epochs=40, lr=1e-3),
    "digits-cnn": Recipe(epochs=40, lr=2e-3),
    "digits-resnet": Recipe(epochs=30, lr=3e-3),
    "sentiment-lstm": Recipe(epochs=25, lr=3e-3),
}

DATA_DESCRIPTIONS = {
    "sample:digits": (
        "scikit-learn's bundled copy of the UCI ML handwritten digits (8x8 images, 1797 in "
        "all), pixels divided by 16 to lie in [0, 1], shaped 1x8x8. Fixed split: "
        "sklearn.model_selection.train_test_split(test_size=0.25, random_state=0, "
        "stratify=labels): 1347 train, 450 test images."
    ),
    "sample:sentiment": (
        "SYNTHETIC data, generated deterministically by prunelab.data (random.Random(0)): "
        "short review-like sentences from a fixed vocabulary of positive, negative and neutral "
        "words, with negation ('not good' is negative, 'not bad' positive), intensifiers and "
        "contrast ('... but ...' takes the polarity of the second clause). 3000 train and 1000 "
        "test sentences, none in both; token ids of length 16, left-padded with 0. It is not "
        "real text: accuracy on it says nothing about real reviews."
    ),
}


def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predictions = model.eval()(inputs).argmax(dim=1)
    return float((predictions == labels).float().mean())


def train(name: str, recipe: Recipe) -> tuple[nn.Module, dict]:
    """Train one sample model; returns the model (eval mode) and its measured accuracies."""
    arch = ARCHITECTURES[name]
    train_set = pdata.load(arch.data, split="train")
    test_set = pdata.load(arch.data, split="test")
    torch.manual_seed(recipe.seed)
    model = arch.factory()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=recipe.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(train_set.inputs[index]), train_set.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    results = {
        "train_accuracy": _accuracy(model, train_set.inputs, train_set.labels),
        "test_accuracy": _accuracy(model, test_set.inputs, test_set.labels),
        "train_size": len(train_set),
        "test_size": len(test_set),
    }
    return model, results


def bag_of_words_baseline() -> float:
    """Test accuracy of a logistic regression on word counts (word order ignored).

    It shows how much of the synthetic sentiment task needs word order (negation, "but").
    """
    from sklearn.linear_model import LogisticRegression

    size = len(pdata.sentiment_vocabulary())

    def counts(tokens: torch.Tensor) -> torch.Tensor:
        table = torch.zeros(len(tokens), size)
        table.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))
        table[:, 0] = 0  # padding
        return table

    train_set = pdata.load("sample:sentiment", split="train")
    test_set = pdata.load("sample:sentiment", split="test")
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(counts(train_set.inputs).numpy(), train_set.labels.numpy())
    return float(classifier.score(counts(test_set.inputs).numpy(), test_set.labels.numpy()))


def _training(recipe: Recipe | LMRecipe) -> dict:
    return {
        **asdict(recipe),
        "deterministic": "torch.use_deterministic_algorithms(True), 1 thread, seeded",
        "device": "cpu",
    }


def card(name: str, recipe: Recipe, model: nn.Module, results: dict, weights: bytes) -> dict:
    arch = ARCHITECTURES[name]
    return {
        "name": name,
        "spec": f"sample:{name}",
        "description": arch.description,
        "architecture": {
            "class": f"prunelab.io.architectures.{arch.model_class.__name__}",
            "summary": str(model).splitlines(),
        },
        "input": {
            "shape": list(arch.input_shape),
            "dtype": str(arch.input_dtype).removeprefix("torch."),
        },
        "task": "classification",
        "class_names": list(arch.class_names),
        "data": {
            "spec": arch.data,
            "synthetic": arch.data == "sample:sentiment",
            "description": DATA_DESCRIPTIONS[arch.data],
            "train_size": results["train_size"],
            "test_size": results["test_size"],
        },
        "training": _training(recipe),
        "test_accuracy": round(results["test_accuracy"], 6),
        "train_accuracy": round(results["train_accuracy"], 6),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": {"file": f"{name}.pt", "sha256": hashlib.sha256(weights).hexdigest()},
        "built_with": {"torch": torch.__version__, "prunelab": prunelab.__version__},
        "rebuild": f"uv run python sample_models/build.py --only {name}",
    }


def arch_data(name: str) -> str:
    return ARCHITECTURES[name].data


def build(name: str, *, out: Path, epochs: int | None = None) -> dict:
    """Train ``name`` and write its weights and card into ``out``; returns the card."""
    recipe = RECIPES[name]
    if epochs is not None:
        recipe = Recipe(**{**asdict(recipe), "epochs": epochs})
    model, results = train(name, recipe)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    model_card = card(name, recipe, model, results, weights)
    if arch_data(name) == "sample:sentiment":
        model_card["data"]["bag_of_words_baseline_accuracy"] = round(bag_of_words_baseline(), 4)
    with atomic_write(out / f"{name}.pt") as handle:
        handle.write(weights)
    with atomic_write(out / f"{name}.json", "w") as handle:
        json.dump(model_card, handle, indent=2)
        handle.write("\n")
    return model_card


# -- the sample language model -------------------------------------------------------------


@dataclass(frozen=True)
class LMRecipe:
    """How the sample language model is trained."""

    epochs: int = 15
    lr: float = 3e-3
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_steps: int = 30
    seed: int = 0
    optimizer: str = "AdamW (betas 0.9, 0.95), gradient norm clipped to 1"
    schedule: str = "linear warm-up, then cosine annealing to 0 over all steps"
    loss: str = "next-token cross-entropy"
    sequences: str = (
        "the train split's tokens cut into windows of the context length, from a random "
        "offset each epoch, shuffled"
    )


LM_RECIPES = {"pydoc-gpt": LMRecipe()}
TOKENIZER = {"vocab_size": 1024, "special_tokens": ["<|endoftext|>"]}


def build_tokenizer(out: Path):
    """Train the byte-level BPE tokenizer on the train split and save it into ``out``.

    Deterministic: the same text gives the same ``tokenizer.json`` byte for byte.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from prunelab.io.corpus import pydoc_text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER["vocab_size"],
        special_tokens=TOKENIZER["special_tokens"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([pydoc_text("train")], trainer=trainer)
    end = TOKENIZER["special_tokens"][0]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=end, bos_token=end, unk_token=end
    )
    fast.save_pretrained(str(out))
    return fast


def _windows(tokens: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    usable = (len(tokens) - offset) // context * context
    return tokens[offset : offset + usable].reshape(-1, context)


def _perplexity(model: nn.Module, windows: torch.Tensor) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), 32):
            batch = windows[start : start + 32]
            logits = model(batch).logits[:, :-1]
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
                )
            )
            count += batch[:, 1:].numel()
    return math.exp(total / count)


def _unigram_perplexity(train: torch.Tensor, windows: torch.Tensor, vocab: int) -> float:
    """Perplexity of token frequencies of the train split (add-one smoothed) on the tokens
    the model is judged on: what a model that ignores context gets."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    log_p = (counts / counts.sum()).log()
    return math.exp(float(-log_p[windows[:, 1:].reshape(-1)].mean()))


def train_language_model(name: str, recipe: LMRecipe, tokenizer) -> tuple[nn.Module, dict]:
    """Train the sample GPT-2 on the train split; returns it (eval mode) and its results."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from prunelab.io.corpus import pydoc_text

    spec = LANGUAGE_MODELS[name]
    context = spec.context
    train = torch.tensor(tokenizer(pydoc_text("train"))["input_ids"])
    test = torch.tensor(tokenizer(pydoc_text("test"))["input_ids"])
    torch.manual_seed(recipe.seed)
    model = GPT2LMHeadModel(GPT2Config(**spec.config))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    other = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    per_epoch = math.ceil((len(train) - context) // context / recipe.batch_size)
    total = recipe.epochs * per_epoch

    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(recipe.seed)
    for epoch in range(recipe.epochs):
        model.train()
        offset = int(torch.randint(0, context, (1,), generator=generator))
        windows = _windows(train, context, offset)
        order = torch.randperm(len(windows), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            batch = windows[order[start : start + recipe.batch_size]]
            loss = model(batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        print(f"  epoch {epoch + 1}/{recipe.epochs} loss {float(loss.detach()):.3f}", flush=True)
    model.eval()
    test_windows = _windows(test, context)
    results = {
        "test_perplexity": _perplexity(model, test_windows),
        "train_perplexity": _perplexity(model, _windows(train, context)),
        "unigram_test_perplexity": _unigram_perplexity(train, test_windows, len(tokenizer)),
        "train_tokens": len(train),
        "test_tokens": len(test),
        "test_windows": len(test_windows),
    }
    return model, results


def build_language_model(name: str, *, out: Path, epochs: int | None = None) -> dict:
    """Build ``name``'s tokenizer and model into ``out/<name>/`` and its card
    ``out/<name>.json``; returns the card."""
    import tempfile

    recipe = LM_RECIPES[name]
    if epochs is not None:
        recipe = LMRecipe(**{**asdict(recipe), "epochs": epochs})
    spec = LANGUAGE_MODELS[name]
    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        # written beside the target and moved file by file: no half-written model directory
        tokenizer = build_tokenizer(Path(scratch))
        model, results = train_language_model(name, recipe, tokenizer)
        model.save_pretrained(scratch)
        for path in sorted(Path(scratch).iterdir()):
            path.chmod(0o644)  # files in a temporary directory are private to their owner
            path.replace(target / path.name)
    weights = (target / "model.safetensors").read_bytes()
    model_card = {
        "name": name,
        "spec": f"sample:{name}",
        "description": spec.description,
        "architecture": {
            "class": "transformers.GPT2LMHeadModel",
            "config": dict(spec.config),
            "tied": "lm_head.weight is transformer.wte.weight (the output head is the "
            "embedding table: prunelab does not prune it)",
            "summary": str(model).splitlines(),
        },
        "tokenizer": {
            "kind": "byte-level BPE (tokenizers), trained on the train split",
            "vocab_size": len(tokenizer),
            "special_tokens": TOKENIZER["special_tokens"],
            "files": ["tokenizer.json", "tokenizer_config.json"],
            "tokenizer.json md5": hashlib.md5((target / "tokenizer.json").read_bytes()).hexdigest(),
        },
        "input": {"shape": [spec.context], "dtype": "int64"},
        "task": "language-model",
        "data": {
            "spec": spec.data,
            "synthetic": False,
            "description": (
                "CPython's own help texts (pydoc_data.topics, on every machine), split by "
                "topic by prunelab.io.corpus: every fifth topic in sorted order, from the "
                "third, is held out as the test split."
            ),
            "train_tokens": results["train_tokens"],
            "test_tokens": results["test_tokens"],
        },
        "training": _training(recipe),
        "test_perplexity": round(results["test_perplexity"], 4),
        "train_perplexity": round(results["train_perplexity"], 4),
        "unigram_test_perplexity": round(results["unigram_test_perplexity"], 4),
        "evaluation": (
            f"perplexity of next-token prediction on the test split's {results['test_windows']}"
            f" non-overlapping windows of {spec.context} tokens (the first token of each "
            "window is context only); the unigram baseline is the train split's token "
            "frequencies, add-one smoothed, on the same tokens"
        ),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": {
            "file": f"{name}/model.safetensors",
            "sha256": hashlib.sha256(weights).hexdigest(),
        },
        "built_with": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "prunelab": prunelab.__version__,
        },
        "rebuild": f"uv run python sample_models/build.py --only {name}",
    }
    with atomic_write(out / f"{name}.json", "w") as handle:
        json.dump(model_card, handle, indent=2)
        handle.write("\n")
    return model_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", choices=[*RECIPES, *LANGUAGE_MODELS], help="models to build"
    )
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs (shortened run)")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    total = time.perf_counter()
    for name in args.only or [*RECIPES, *LANGUAGE_MODELS]:
        start = time.perf_counter()
        if name in LANGUAGE_MODELS:
            model_card = build_language_model(name, out=args.out, epochs=args.epochs)
            print(
                f"{name:15s} test perplexity {model_card['test_perplexity']:.2f} (unigram "
                f"{model_card['unigram_test_perplexity']:.1f})  params "
                f"{model_card['parameters']:>7,}  {time.perf_counter() - start:6.1f}s",
                flush=True,
            )
            continue
        model_card = build(name, out=args.out, epochs=args.epochs)
        print(
            f"{name:15s} test accuracy {model_card['test_accuracy']:.2%}  "
            f"params {model_card['parameters']:>7,}  {time.perf_counter() - start:6.1f}s",
            flush=True,
        )
    print(f"built in {time.perf_counter() - total:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
