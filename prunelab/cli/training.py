"""``prunelab finetune``: prune with a recipe, fine-tune with the masks kept, save, compare.

Kept apart from :mod:`.commands` (the commands on one model) because it is the one command
that trains. Nothing heavy is imported before the command runs, so ``prunelab --help``
stays free of torch.
"""

from __future__ import annotations

import argparse

from .args import CliError, add_model_options, positive_float, positive_int, seed_type
from .inputs import calibration_for, evaluation_data, load_model
from .progress import Bar

__all__ = ["add_finetune", "write_weights"]

EPOCHS = 1  # one pass: enough to win back most of what one-shot pruning lost on the samples


def write_weights(model, out: str, *, spec: str, what: str) -> str:
    """Save ``model``'s state_dict to ``out`` atomically; returns the lines that say how to
    load it back (printed once the progress bar is gone)."""
    import torch

    from ..io.exports import load_snippet
    from ..runtime.files import atomic_write

    with atomic_write(out) as handle:
        torch.save(model.state_dict(), handle)
    # the snippet knows which specs also load as file:OUT?arch=SPEC (not a language model)
    snippet = load_snippet(out, "state_dict", spec=spec)
    return f"{what} (a state_dict, zeros written in) saved to {out}; load it with:\n{snippet}"


def _config(args: argparse.Namespace, tokens: bool):
    """The run's TrainConfig: the options given, else a language model's or a classifier's
    defaults (a classifier's are TrainConfig's own)."""
    from ..training.config import LM_CONFIG, TrainConfig

    base = LM_CONFIG if tokens else TrainConfig()
    return TrainConfig(
        epochs=args.epochs,
        lr=args.lr if args.lr is not None else base.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size or base.batch_size,
        seed=args.seed,
    )


def _show(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "perplexity" else f"{value:.2%}"


def _change(metric: str, value: float, dense: float) -> str:
    """The change from dense in words: a drop or a rise (accuracy in points, "pp", as the
    prune command writes them)."""
    delta = value - dense
    if delta == 0:
        return "no change"
    size = f"{abs(delta):.2f}" if metric == "perplexity" else f"{abs(delta) * 100:.2f} pp"
    return f"{size} {'rise' if delta > 0 else 'drop'}"


def _table(metric: str, scores: dict[str, float]) -> str:
    import pandas as pd

    dense = scores["dense"]
    rows = {
        name: {metric: _show(metric, value), "vs dense": _change(metric, value, dense)}
        for name, value in scores.items()
    }
    rows["dense"]["vs dense"] = ""
    return pd.DataFrame(rows).T.to_string()


def _cmd_finetune(args: argparse.Namespace) -> int:
    from ..analysis.evaluation import evaluate
    from ..io import data as datasets
    from ..io.recipes import Recipe
    from ..runtime.metrics import headline_metric
    from ..training import finetune
    from ..training.config import LM_SEQUENCES

    with Bar("finetune", steps=5) as bar:
        bar.step("loading the model")
        recipe = Recipe.load(args.recipe)
        bundle = load_model(args)
        if not (args.data or bundle.default_data):
            raise CliError(
                f"finetune needs labelled data and {bundle.name} has none of its own; give "
                "--data (e.g. sample:digits, file:data.pt with x and y)"
            )
        bar.step("loading the data")
        test, _, described, data_spec = evaluation_data(bundle, args)
        metric = headline_metric(test)
        tokens = metric == "perplexity"
        # a language model trains on the Train page's first sequences unless --limit says
        limit = args.limit or (LM_SEQUENCES if tokens else None)
        tokenizer = getattr(bundle, "tokenizer", None)
        train = datasets.load(data_spec, split="train", limit=limit, tokenizer=tokenizer)
        config = _config(args, tokens)  # bad settings are refused before any work
        bar.step("evaluating the dense model")
        scores = {"dense": evaluate(bundle.model, test, device=args.device, metrics=(metric,))}
        if metric not in scores["dense"]:  # said before pruning, which may calibrate
            raise CliError(f"finetune needs labelled data; {data_spec} has no labels")
        bar.step("applying the recipe")
        strategy = recipe.build_strategy()
        calibration = calibration_for(bundle.model, strategy, train, args.device)
        masks = recipe.masks(bundle.model, calibration)
        bar.step("evaluating the one-shot model")
        scores["one-shot"] = evaluate(
            bundle.model, test, masks=masks, device=args.device, metrics=(metric,)
        )
    with Bar("fine-tune") as bar:
        tuned, history = finetune(
            bundle.model,
            masks,
            train,
            config=config,
            device=args.device,
            callback=lambda progress: bar(progress.fraction, progress.message),
        )
    with Bar("finetune", steps=2) as bar:
        bar.step("evaluating the fine-tuned model")
        scores["fine-tuned"] = evaluate(tuned, test, device=args.device, metrics=(metric,))
        bar.step(f"writing {args.out}")
        tuned = tuned.to("cpu")  # loadable on any machine, like `apply --out`
        saved = write_weights(tuned, args.out, spec=args.spec, what="fine-tuned weights")
    unit = "sequences" if tokens else "samples"
    epochs = f"{config.epochs} epoch{'s' * (config.epochs > 1)}"
    print(
        f"{bundle.name} with recipe {args.recipe}: sparsity {masks.sparsity():.4f}; "
        f"fine-tuned {len(history)} steps ({epochs} over {len(train):,} "
        f"training {unit}, batch {config.batch_size}, {config.optimizer} at lr "
        f"{config.lr:g}, seed {config.seed})"
    )
    print(f"{metric} on {described}:")
    print(_table(metric, {name: result[metric] for name, result in scores.items()}))
    print(saved)
    return 0


def add_finetune(sub) -> None:
    """Register ``prunelab finetune`` on the subparsers ``sub``."""
    from ..training.config import LM_CONFIG, OPTIMIZERS, TrainConfig  # plain Python: no torch

    finetune = sub.add_parser(
        "finetune", help="prune with a recipe, fine-tune with the masks kept, save the weights"
    )
    add_model_options(finetune)
    finetune.add_argument("--recipe", required=True, help="recipe file (.yaml or .json)")
    finetune.add_argument(
        "--epochs", type=positive_int, default=EPOCHS, help=f"passes over the data ({EPOCHS})"
    )
    finetune.add_argument(
        "--lr",
        type=positive_float,
        help=f"learning rate (default {TrainConfig.lr:g}; {LM_CONFIG.lr:g} for a language model)",
    )
    finetune.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"samples per step (default {TrainConfig.batch_size}; "
        f"{LM_CONFIG.batch_size} sequences for a language model)",
    )
    finetune.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    finetune.add_argument("--seed", type=seed_type, default=0, help="seeds the shuffling")
    finetune.add_argument(
        "--out", required=True, help="save the fine-tuned state_dict (zeros written in) here"
    )
    finetune.set_defaults(func=_cmd_finetune)
