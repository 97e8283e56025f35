"""The ``prunelab`` command line: the parser, :func:`main`, and the commands on one model.

The long runs (``sweep``, ``sensitivity``, ``solve``) are in :mod:`.runs`; what every command
reads from its arguments is in :mod:`.inputs`. Nothing heavy is imported before a command
runs, so that ``prunelab --help`` starts at once: each command imports its engine modules.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from ..errors import user_message
from ..runtime.files import check_writable
from .args import (
    CliError,
    Parser,
    add_model_options,
    add_ray_option,
    add_resume_options,
    add_strategy_options,
    finite_float,
    positive_int,
    seed_type,
)
from .inputs import calibration_for, evaluation_data, expected_inputs, load_model, strategy_for
from .progress import Bar
from .runs import interrupted, run_sensitivity, run_solve, run_sweep
from .training import add_finetune, write_weights

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def _cmd_strategies(args: argparse.Namespace) -> int:
    from ..core.strategies import strategy_table

    table = strategy_table()
    print(table.to_string(index=False))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import textwrap

    from ..io.data import import_torchvision
    from ..io.zoo import sample_table

    print("Sample models (trained, shipped with prunelab):")
    print(sample_table().to_string(index=False))
    print()
    try:
        torchvision = import_torchvision()
    except ValueError as exc:
        print(f"torchvision models: unavailable: {exc}")
        return 0
    names = torchvision.models.list_models(module=torchvision.models)
    print(
        f"torchvision classification models ({len(names)}; spec torchvision:<name>, randomly "
        "initialised; ?weights=DEFAULT for pretrained, ?num_classes=N, ?input=3x224x224):"
    )
    print(textwrap.fill(", ".join(names), width=100, initial_indent="  ", subsequent_indent="  "))
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..core.targets import targets

    bundle = load_model(args)
    found = targets(bundle.model)
    prunable = sum(t.numel for t in found)
    total = sum(p.numel() for p in bundle.model.parameters())
    table = pd.DataFrame(
        {
            "fqn": [t.fqn for t in found],
            "type": [t.module_type for t in found],
            "shape": ["x".join(map(str, t.shape)) for t in found],
            "elements": [t.numel for t in found],
            "share": [f"{t.numel / prunable:.1%}" for t in found],
            "bias": [t.bias or "-" for t in found],
        }
    )
    shape = "x".join(map(str, bundle.input_shape))
    print(
        f"{bundle.name}: {len(found)} prunable tensors, {prunable:,} of {total:,} parameters; "
        f"input {shape} {str(bundle.input_dtype).removeprefix('torch.')}"
    )
    print(table.to_string(index=False))
    return 0


def _prune_table(dense: dict, pruned: dict) -> str:
    import pandas as pd

    rows = [
        ("perplexity", "perplexity", lambda v: f"{v:.2f}", lambda d: f"{d:+.2f}"),
        ("accuracy", "accuracy", lambda v: f"{v:.2%}", lambda d: f"{d * 100:+.2f} pp"),
        ("loss", "loss", lambda v: f"{v:.4f}", lambda d: f"{d:+.4f}"),
        ("agreement", "agreement", lambda v: f"{v:.2%}", lambda d: f"{d * 100:+.2f} pp"),
        ("kl", "kl", lambda v: f"{v:.4f}", lambda d: f"{d:+.4f}"),
        ("nonzero params", "nonzero_parameters", lambda v: f"{v:,}", lambda d: f"{d:+,}"),
        ("FLOPs", "effective_flops", lambda v: f"{v:,}", lambda d: f"{d:+,}"),
    ]
    table = {}
    for label, key, show, change in rows:
        if key in dense and key in pruned:
            table[label] = {
                "dense": show(dense[key]),
                "pruned": show(pruned[key]),
                "delta": change(pruned[key] - dense[key]),
            }
    return pd.DataFrame(table).T.to_string()


def _before_after(bundle, evaluation, masks, device, bar: Bar) -> str:
    """The dense and the masked model side by side: metrics on the data, sizes, FLOPs."""
    from ..analysis.evaluation import evaluate
    from ..analysis.flops import model_stats

    example = bundle.example_input(batch_size=1)
    model = bundle.model
    bar.step("evaluating the dense model")
    dense = {
        **evaluate(model, evaluation, device=device),
        **model_stats(model, example_input=example),
    }
    bar.step("evaluating the pruned model")
    pruned = {
        **evaluate(model, evaluation, masks=masks, device=device),
        **model_stats(model, masks, example_input=example),
    }
    return _prune_table(dense, pruned)


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..core.pruner import Pruner

    strategy = strategy_for(args.strategy, args)
    with Bar("prune", steps=5) as bar:
        bar.step("loading the model")
        bundle = load_model(args)
        bar.step("loading the data")
        evaluation, calibration_data, described, _ = evaluation_data(bundle, args)
        bar.step(f"pruning with {strategy.name}")
        calibration = calibration_for(bundle.model, strategy, calibration_data, args.device)
        pruner = Pruner(bundle.model, strategy, calibration=calibration, seed=args.seed)
        masks = pruner.masks(sparsity=args.sparsity, threshold=args.threshold)
        table = _before_after(bundle, evaluation, masks, args.device, bar)
    if pruner.left_out.fqns:
        print(pruner.left_out.message("--prune-outputs"))
    print(
        f"{bundle.name} pruned with {strategy.name}: sparsity {masks.sparsity():.4f} of "
        f"{sum(m.numel() for m in masks.values()):,} prunable weights; data: {described}"
    )
    print(table)
    if args.out is not None:
        masks.save(args.out)
        print(f"masks saved to {args.out}")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from ..core.apply import bake
    from ..io.recipes import Recipe

    with Bar("apply", steps=5) as bar:
        bar.step("loading the model")
        recipe = Recipe.load(args.recipe)
        bundle = load_model(args)
        bar.step("loading the data")
        evaluation, calibration_data, described, _ = evaluation_data(bundle, args)
        bar.step("applying the recipe")
        strategy = recipe.build_strategy()
        calibration = calibration_for(bundle.model, strategy, calibration_data, args.device)
        masks = recipe.masks(bundle.model, calibration)
        table = _before_after(bundle, evaluation, masks, args.device, bar)
    print(
        f"{bundle.name} with recipe {args.recipe}: sparsity {masks.sparsity():.4f}; "
        f"data: {described}"
    )
    print(table)
    if args.out is not None:
        with Bar("apply", steps=1) as bar:
            bar.step(f"writing {args.out}")
            baked = bake(recipe.apply(bundle.model, calibration))
            saved = write_weights(baked, args.out, spec=args.spec, what="pruned weights")
        print(saved)
    return 0


def _recipe_masks(args: argparse.Namespace, bar: Bar):
    """(bundle, masks, example input) for a model spec and a recipe; two of ``bar``'s steps."""
    from ..io.recipes import Recipe

    bar.step("loading the model")
    recipe = Recipe.load(args.recipe)
    bundle = load_model(args)
    bar.step("applying the recipe")
    strategy = recipe.build_strategy()
    calibration = None
    if strategy.needs:
        _, calibration_data, _, _ = evaluation_data(bundle, args)
        calibration = calibration_for(bundle.model, strategy, calibration_data, args.device)
    return bundle, recipe.masks(bundle.model, calibration), bundle.example_input(batch_size=1)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io.exports import SUFFIXES, export, load_snippet

    with Bar("export", steps=3) as bar:
        bundle, masks, example = _recipe_masks(args, bar)
        out = Path(args.out or f"{bundle.name}-pruned{SUFFIXES[args.format]}")
        bar.step(f"writing {args.format} to {out}")
        result = export(bundle.model, masks, out, format=args.format, example_input=example)
    print(
        f"{bundle.name} with recipe {args.recipe}: sparsity {masks.sparsity():.4f}; wrote "
        f"{result.format} of the {result.model} model to {out} ({result.size:,} bytes)"
    )
    if result.note:
        print(f"note: {result.note}")
    print("load it with:")
    print(load_snippet(out, args.format, spec=args.spec))
    return 0


def _cmd_speed(args: argparse.Namespace) -> int:
    import textwrap

    from ..analysis.speed import speed_report

    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise CliError(
            f"--batch-sizes must be integers joined by commas, got {args.batch_sizes!r}"
        ) from None
    with Bar("speed", steps=3) as bar:
        bundle, masks, example = _recipe_masks(args, bar)
        bar.step(f"timing batch sizes {','.join(map(str, sizes))}, {args.repeats} rounds each")
        report = speed_report(
            bundle.model,
            masks,
            example_input=example,
            batch_sizes=sizes,
            device=args.device,
            repeats=args.repeats,
        )
    print(f"{bundle.name} with recipe {args.recipe} on {report.attrs['device']}:")
    print(
        report.drop(columns="why").to_string(
            index=False,
            formatters={
                "median_ms": "{:.3f}".format,
                "q1_ms": "{:.3f}".format,
                "q3_ms": "{:.3f}".format,
                "ratio_vs_dense": "{:.2f}x".format,
                "params": "{:,}".format,
                "flops": "{:,}".format,
                "bytes": "{:,}".format,
            },
        )
    )
    print()
    print(textwrap.fill(report.attrs["explanation"], width=100))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="prunelab", description="Understand and plan neural-network pruning.")
    parser.add_argument("--version", action="version", version=f"prunelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.subcommands = sub.choices
    strategies = sub.add_parser("strategies", help="list the registered pruning strategies")
    strategies.set_defaults(func=_cmd_strategies)

    models = sub.add_parser("models", help="list the sample and torchvision models")
    models.set_defaults(func=_cmd_models)

    layers = sub.add_parser("layers", help="list a model's prunable tensors")
    add_model_options(layers, data=False)
    layers.set_defaults(func=_cmd_layers)

    prune = sub.add_parser("prune", help="prune a model once and compare it with the dense model")
    add_model_options(prune)
    prune.add_argument("--strategy", required=True, help="strategy name (`prunelab strategies`)")
    amount = prune.add_mutually_exclusive_group()
    amount.add_argument(
        "--sparsity", type=finite_float, help="fraction of weights to zero, in [0, 1]"
    )
    amount.add_argument(
        "--threshold", type=finite_float, help="prune scores at or below this value"
    )
    prune.add_argument(
        "--granularity", help="unstructured, channel, input-channel or N:M such as 2:4"
    )
    prune.add_argument("--out", help="save the masks (and sparsegpt's new weights) to this file")
    prune.add_argument("--seed", type=seed_type, default=0, help="seed for random strategies")
    add_strategy_options(prune)
    prune.set_defaults(func=_cmd_prune)

    sweep = sub.add_parser("sweep", help="accuracy-vs-sparsity curves of several strategies")
    add_model_options(sweep)
    sweep.add_argument(
        "--strategies",
        default="global-magnitude,layer-magnitude,random",
        help="comma-separated strategy names",
    )
    sweep.add_argument(
        "--sparsities",
        default="0:0.95:0.05",
        help="start:stop:step or a comma list (default 0:0.95:0.05)",
    )
    sweep.add_argument("--seed", type=seed_type, default=0, help="seed for random strategies")
    sweep.add_argument("--csv", help="save the table to this CSV file")
    add_resume_options(sweep)
    add_strategy_options(sweep)
    add_ray_option(sweep)
    sweep.set_defaults(func=run_sweep)

    sens = sub.add_parser("sensitivity", help="prune one layer at a time: how much does it hurt?")
    add_model_options(sens)
    sens.add_argument("--layers", nargs="+", help="fqns or glob patterns (default: all)")
    sens.add_argument("--strategy", default="layer-magnitude", help="how each layer is pruned")
    sens.add_argument("--sparsities", default="0.1:0.9:0.1", help="levels (default 0.1:0.9:0.1)")
    sens.add_argument(
        "--metric",
        choices=("accuracy", "loss", "agreement", "kl", "perplexity"),
        help="default: perplexity for token data, accuracy for other labelled data, else agreement",
    )
    sens.add_argument(
        "--method",
        choices=("evaluate", "magnitude"),
        default="evaluate",
        help="evaluate on data, or the data-free magnitude proxy",
    )
    sens.add_argument("--subset", type=positive_int, help="evaluate on the first N samples only")
    sens.add_argument(
        "--early-stop", type=finite_float, help="stop a layer once its drop exceeds this"
    )
    sens.add_argument("--csv", help="save the table to this CSV file (input of `solve`)")
    add_resume_options(sens)
    add_strategy_options(sens)
    add_ray_option(sens)
    sens.set_defaults(func=run_sensitivity)

    solve = sub.add_parser("solve", help="turn a sensitivity table into a recipe under a budget")
    solve.add_argument("table", help="CSV written by `prunelab sensitivity --csv`")
    budget = solve.add_mutually_exclusive_group(required=True)
    budget.add_argument("--target-sparsity", type=finite_float, help="overall fraction to zero")
    budget.add_argument("--max-drop", type=finite_float, help="largest acceptable predicted drop")
    budget.add_argument("--params", type=finite_float, help="parameters left in the model, at most")
    budget.add_argument("--flops", type=finite_float, help="effective FLOPs per input, at most")
    budget.add_argument(
        "--latency", type=finite_float, help="seconds per input on this machine (channel recipes)"
    )
    budget.add_argument(
        "--speedup", type=finite_float, help="times faster than dense, e.g. 1.5 (channel recipes)"
    )
    solve.add_argument("--min-sparsity", type=finite_float, default=0.0)
    solve.add_argument("--max-sparsity", type=finite_float, default=0.95)
    solve.add_argument(
        "--measure",
        action="store_true",
        help="evaluate the joint recipe on the table's model and data",
    )
    solve.add_argument(
        "--evaluations",
        type=positive_int,
        default=1,
        help="joint measurements for the planner: measure, refit the prediction, re-solve "
        "(more than 1 implies --measure)",
    )
    solve.add_argument("--trust", action="store_true", help="allow loading a pickled module")
    solve.add_argument("--out", required=True, help="recipe file (.yaml or .json)")
    solve.set_defaults(func=run_solve)

    apply = sub.add_parser("apply", help="apply a recipe to a model and save the pruned weights")
    apply.add_argument("recipe", help="recipe file (.yaml or .json)")
    add_model_options(apply)
    apply.add_argument("--out", help="save the pruned state_dict (zeros written in) here")
    apply.set_defaults(func=_cmd_apply)
    export = sub.add_parser("export", help="write the pruned model: state_dict, pt2 or sparse")
    add_model_options(export)
    export.add_argument("--recipe", required=True, help="recipe file (.yaml or .json)")
    export.add_argument(
        "--format",
        choices=("state_dict", "pt2", "sparse"),
        default="state_dict",
        help="baked state_dict, torch.export program (shrunk for channel masks), or sparse",
    )
    export.add_argument("--out", help="output file (default: <model>-pruned.<ext>)")
    export.set_defaults(func=_cmd_export)

    speed = sub.add_parser("speed", help="measured latency: dense vs masked vs shrunk (vs 2:4)")
    add_model_options(speed)
    speed.add_argument("--recipe", required=True, help="recipe file (.yaml or .json)")
    speed.add_argument("--batch-sizes", default="1,16", help="comma list (default 1,16)")
    speed.add_argument(
        "--repeats", type=positive_int, default=10, help="timed runs per measurement"
    )
    speed.set_defaults(func=_cmd_speed)
    add_finetune(sub)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any work starts."""
    for option in ("out", "csv", "checkpoint"):
        if (path := getattr(args, option, None)) is not None:
            check_writable(path)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed --help, --version or its one-line error
        return exc.code if isinstance(exc.code, int) else 0
    try:
        _check_outputs(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(interrupted(args, argv), file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # not the user's mistake: main ends quietly
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise  # a bug, not the user's input: its traceback is what a report needs
        message += expected_inputs(args, exc)
        print(f"prunelab {args.command}: error: {message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # the reader has gone (`prunelab models | head -1`): what it did not read is not
        # wanted, so say nothing; stdout goes to /dev/null so that Python's last flush is
        # quiet too. 141 is what a program killed by SIGPIPE gives the shell.
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no file behind stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
