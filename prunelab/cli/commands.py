"""The ``prunelab`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .._version import __version__
from ..errors import user_message
from ..runtime.files import check_writable
from .args import (
    CHECKPOINT_SUFFIX,
    CliError,
    Parser,
    add_model_options,
    add_outputs_option,
    add_resume_options,
    finite_float,
    levels,
    positive_int,
    seed_type,
)

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
    from ..io.zoo import load

    bundle = load(args.spec, trust=args.trust)
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


def _evaluation_data(bundle, args: argparse.Namespace):
    """(data, calibration data, description, data spec) for a loaded model and the CLI args."""
    from ..io import data as datasets

    data_spec = args.data or bundle.default_data
    if data_spec is None:
        # no labelled data: fidelity to the dense model on random inputs still means something
        inputs = bundle.example_input(batch_size=64, seed=0)
        return inputs, inputs, "64 random inputs (no --data and no default data)", None
    evaluation = datasets.load(data_spec, split="test", limit=args.limit)
    described = f"{data_spec}, test split, {len(evaluation):,} samples"
    return (
        evaluation,
        lambda: datasets.load(data_spec, split="train", limit=args.limit),
        described,
        data_spec,
    )


def _calibration(model, strategy, calibration_data, device):
    from ..core.calibration import Calibration

    if not strategy.needs:
        return None
    data = calibration_data() if callable(calibration_data) else calibration_data
    return Calibration(model, data, device=device)


def _before_after(bundle, evaluation, masks, device) -> str:
    from ..analysis.evaluation import evaluate, model_stats

    example = bundle.example_input(batch_size=1)
    model = bundle.model
    dense = {
        **evaluate(model, evaluation, device=device),
        **model_stats(model, example_input=example),
    }
    pruned = {
        **evaluate(model, evaluation, masks=masks, device=device),
        **model_stats(model, masks, example_input=example),
    }
    return _prune_table(dense, pruned)


def _strategy(name: str, args: argparse.Namespace):
    from ..core.strategies import get_strategy

    # the model's output layers are left out of channel pruning unless asked for
    return get_strategy(name, prune_outputs=True) if args.prune_outputs else get_strategy(name)


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..core.pruner import Pruner
    from ..io.zoo import load

    strategy = _strategy(args.strategy, args)
    bundle = load(args.spec, trust=args.trust)
    evaluation, calibration_data, described, _ = _evaluation_data(bundle, args)
    calibration = _calibration(bundle.model, strategy, calibration_data, args.device)
    pruner = Pruner(bundle.model, strategy, calibration=calibration, seed=args.seed)
    masks = pruner.masks(sparsity=args.sparsity, threshold=args.threshold)
    if pruner.left_out.fqns:
        print(pruner.left_out.message("--prune-outputs"))
    print(
        f"{bundle.name} pruned with {strategy.name}: sparsity {masks.sparsity():.4f} of "
        f"{sum(m.numel() for m in masks.values()):,} prunable weights; data: {described}"
    )
    print(_before_after(bundle, evaluation, masks, args.device))
    if args.out is not None:
        masks.save(args.out)
        print(f"masks saved to {args.out}")
    return 0


class _Bar:
    """A tqdm progress bar fed by the engine's progress(fraction, message) callbacks.

    The bar appears with the first report, so errors found up front print as one clean line.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._bar = None

    def __call__(self, fraction: float, message: str) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=1000,
                desc=self._what,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix}",
            )
        self._bar.n = round(fraction * 1000)
        self._bar.set_postfix_str(message, refresh=True)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _save_csv(table, path: str | None) -> None:
    if path is not None:
        from ..sweeps.tables import save_table

        save_table(table, path)
        print(f"table saved to {path}")


def _checkpoint(args: argparse.Namespace, *, evaluates: bool = True) -> str | None:
    """The run's checkpoint file: --checkpoint, else beside --csv; checked before any work.

    A checkpoint beside the CSV is a by-product: removed once the CSV is saved. One named
    with --checkpoint is kept (resuming a finished one prints its table at once).
    """
    from ..sweeps.checkpoints import checkpoint_status

    path = args.checkpoint
    if path is None and args.csv is not None and evaluates:
        path = args.csv + CHECKPOINT_SUFFIX
    if path is None:
        if args.resume:
            raise CliError(
                "--resume needs the run's checkpoint: give --checkpoint PATH, or the --csv PATH "
                f"of the interrupted run (its checkpoint is PATH{CHECKPOINT_SUFFIX})"
            )
        return None
    if args.csv is not None and Path(path).resolve() == Path(args.csv).resolve():
        raise CliError("--checkpoint and --csv must be different files")
    state = checkpoint_status(path)
    if state is not None and not args.resume:
        if state.finished:
            raise CliError(
                f"{path} holds a finished {state.kind} run: add --resume to print its table, "
                "or delete the file to run again"
            )
        raise CliError(
            f"{path} holds {state.done} of {state.total} rows of an earlier {state.kind} run: "
            "add --resume to continue it, or delete the file to start over"
        )
    args.active_checkpoint = path  # for the message after Ctrl-C
    args.resumed = state  # None for a new run
    return path


def _after_run(args: argparse.Namespace, path: str | None) -> None:
    """Say what came from the checkpoint; drop one made for --csv now that the CSV is saved."""
    state = getattr(args, "resumed", None)
    if state is not None:
        what = "all" if state.finished else f"{state.done} of {state.total}"
        print(f"resumed from {path}: {what} rows read from it", file=sys.stderr)
    if path is not None and args.checkpoint is None:
        Path(path).unlink(missing_ok=True)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..io.zoo import load
    from ..sweeps.config import RunOptions, SweepConfig
    from ..sweeps.curves import sweep

    checkpoint = _checkpoint(args)
    bundle = load(args.spec, trust=args.trust)
    evaluation, _, described, data_spec = _evaluation_data(bundle, args)
    names = [_strategy(n.strip(), args) for n in args.strategies.split(",") if n.strip()]
    with _Bar("sweep") as bar:
        table = sweep(
            bundle.model,
            evaluation,
            strategies=names,
            sparsities=levels(args.sparsities),
            config=SweepConfig(seed=args.seed),
            run=RunOptions(
                device=args.device, progress=bar, checkpoint=checkpoint, resume=args.resume
            ),
        )
    table.attrs.update(model=args.spec, data=data_spec)
    print(f"{bundle.name}; data: {described}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _save_csv(table, args.csv)
    _after_run(args, checkpoint)
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from ..io.zoo import load
    from ..sweeps.config import RunOptions, SensitivityConfig
    from ..sweeps.layers import sensitivity

    if args.method == "magnitude" and args.resume:
        raise CliError(
            "--resume: the magnitude method evaluates nothing; there is no run to resume"
        )
    checkpoint = _checkpoint(args, evaluates=args.method == "evaluate")
    bundle = load(args.spec, trust=args.trust)
    strategy = _strategy(args.strategy, args)
    if args.method == "magnitude":
        evaluation, calibration, described, data_spec = None, None, "none (magnitude proxy)", None
    else:
        evaluation, calibration_data, described, data_spec = _evaluation_data(bundle, args)
        calibration = _calibration(bundle.model, strategy, calibration_data, args.device)
    metric = args.metric or ("accuracy" if data_spec is not None else "agreement")
    with _Bar("sensitivity") as bar:
        table = sensitivity(
            bundle.model,
            evaluation,
            strategy=strategy,
            sparsities=levels(args.sparsities),
            config=SensitivityConfig(
                layers=args.layers,
                method=args.method,
                metric=metric,
                early_stop=args.early_stop,
                subset=args.subset,
                calibration=calibration,
            ),
            run=RunOptions(
                device=args.device, progress=bar, checkpoint=checkpoint, resume=args.resume
            ),
        )
    table.attrs.update(model=args.spec, data=data_spec)
    print(f"{bundle.name} with {strategy.name}; data: {described}")
    if table.attrs.get("left_out"):
        print(f"{table.attrs['left_out_reason']}; prune them too with --prune-outputs.")
    pivot = table.pivot(index="layer", columns="sparsity", values="drop")
    pivot = pivot.reindex(table["layer"].unique())
    print(f"drop in {table.attrs['metric']} (baseline {table.attrs['baseline']:.4f}):")
    print(pivot.to_string(float_format=lambda v: f"{v:+.4f}"))
    _save_csv(table, args.csv)
    _after_run(args, checkpoint)
    return 0


def _cmd_solve(args: argparse.Namespace) -> int:
    from ..sweeps.solver import solve
    from ..sweeps.tables import load_table

    table = load_table(args.table)
    model = data = None
    spec, data_spec = table.attrs.get("model"), table.attrs.get("data")
    if args.measure and spec:
        from ..io import data as datasets
        from ..io.zoo import load

        # the specs come from the table file: they cannot grant trust, download or make folders
        model = load(spec, trust=args.trust, untrusted=True).model
        data = datasets.load(data_spec, split="test", untrusted=True) if data_spec else None
    recipe = solve(
        table,
        target_sparsity=args.target_sparsity,
        max_drop=args.max_drop,
        min_sparsity=args.min_sparsity,
        max_sparsity=args.max_sparsity,
        model=model,
        data=data,
    )
    from dataclasses import replace

    recipe = replace(recipe, provenance=replace(recipe.provenance, model=spec, data=data_spec))
    recipe.save(args.out)
    p = recipe.provenance
    print(f"recipe for {spec or 'the model'}: {len(recipe.layers)} layers -> {args.out}")
    for layer, value in recipe.layers.items():
        print(f"  {layer:<40} {value:7.2%}")
    if p.metric is not None and p.baseline is not None:
        measured = "not measured (--measure)" if p.measured is None else f"{p.measured:.4f}"
        print(
            f"{p.metric}: baseline {p.baseline:.4f}, predicted {p.predicted:.4f}, "
            f"measured {measured}"
        )
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    import torch

    from ..core.apply import bake
    from ..io.recipes import Recipe
    from ..io.zoo import load
    from ..runtime.files import atomic_write

    recipe = Recipe.load(args.recipe)
    bundle = load(args.spec, trust=args.trust)
    evaluation, calibration_data, described, _ = _evaluation_data(bundle, args)
    calibration = _calibration(bundle.model, recipe.build_strategy(), calibration_data, args.device)
    masks = recipe.masks(bundle.model, calibration)
    print(
        f"{bundle.name} with recipe {args.recipe}: sparsity {masks.sparsity():.4f}; "
        f"data: {described}"
    )
    print(_before_after(bundle, evaluation, masks, args.device))
    if args.out is not None:
        baked = bake(recipe.apply(bundle.model, calibration))
        with atomic_write(args.out) as handle:
            torch.save(baked.state_dict(), handle)
        print(
            f"pruned weights (a state_dict, zeros written in) saved to {args.out}; load with "
            f"prunelab.io.zoo.load('file:{args.out}?arch={args.spec}')"
        )
    return 0


def _recipe_masks(args: argparse.Namespace):
    """(bundle, masks, example input) for a model spec and a recipe, from the CLI args."""
    from ..io.recipes import Recipe
    from ..io.zoo import load

    recipe = Recipe.load(args.recipe)
    bundle = load(args.spec, trust=args.trust)
    calibration = None
    if recipe.build_strategy().needs:
        _, calibration_data, _, _ = _evaluation_data(bundle, args)
        calibration = _calibration(
            bundle.model, recipe.build_strategy(), calibration_data, args.device
        )
    return bundle, recipe.masks(bundle.model, calibration), bundle.example_input(batch_size=1)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io.exports import SUFFIXES, export, load_snippet

    bundle, masks, example = _recipe_masks(args)
    out = Path(args.out or f"{bundle.name}-pruned{SUFFIXES[args.format]}")
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

    bundle, masks, example = _recipe_masks(args)
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise CliError(
            f"--batch-sizes must be integers joined by commas, got {args.batch_sizes!r}"
        ) from None
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
    prune.add_argument("--out", help="save the masks to this file (prunelab masks format)")
    prune.add_argument("--seed", type=seed_type, default=0, help="seed for random strategies")
    add_outputs_option(prune)
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
    add_outputs_option(sweep)
    sweep.set_defaults(func=_cmd_sweep)

    sens = sub.add_parser("sensitivity", help="prune one layer at a time: how much does it hurt?")
    add_model_options(sens)
    sens.add_argument("--layers", nargs="+", help="fqns or glob patterns (default: all)")
    sens.add_argument("--strategy", default="layer-magnitude", help="how each layer is pruned")
    sens.add_argument("--sparsities", default="0.1:0.9:0.1", help="levels (default 0.1:0.9:0.1)")
    sens.add_argument(
        "--metric",
        choices=("accuracy", "loss", "agreement", "kl"),
        help="default: accuracy with labelled data, else agreement",
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
    add_outputs_option(sens)
    sens.set_defaults(func=_cmd_sensitivity)

    solve = sub.add_parser("solve", help="turn a sensitivity table into a recipe under a budget")
    solve.add_argument("table", help="CSV written by `prunelab sensitivity --csv`")
    budget = solve.add_mutually_exclusive_group(required=True)
    budget.add_argument("--target-sparsity", type=finite_float, help="overall fraction to zero")
    budget.add_argument("--max-drop", type=finite_float, help="largest acceptable predicted drop")
    solve.add_argument("--min-sparsity", type=finite_float, default=0.0)
    solve.add_argument("--max-sparsity", type=finite_float, default=0.95)
    solve.add_argument(
        "--measure",
        action="store_true",
        help="evaluate the joint recipe on the table's model and data",
    )
    solve.add_argument("--trust", action="store_true", help="allow loading a pickled module")
    solve.add_argument("--out", required=True, help="recipe file (.yaml or .json)")
    solve.set_defaults(func=_cmd_solve)

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
    return parser


def _interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """What Ctrl-C leaves behind, and the exact command that goes on from there."""
    import shlex

    from ..sweeps.checkpoints import CheckpointError, checkpoint_status

    path = getattr(args, "active_checkpoint", None)
    if path is None:
        if hasattr(args, "resume"):
            return "interrupted; nothing saved (with --csv or --checkpoint a run can be resumed)"
        return "interrupted"
    try:
        state = checkpoint_status(path)
    except CheckpointError:
        state = None
    if state is None or not state.done:
        return "interrupted before the first row was finished; nothing to resume"
    again = ["prunelab", *argv, *([] if "--resume" in argv else ["--resume"])]
    return (
        f"interrupted: {state.done} of {state.total} rows are saved in {path}; to go on, run: "
        + shlex.join(again)
    )


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any work starts."""
    for option in ("out", "csv", "checkpoint"):
        if (path := getattr(args, option, None)) is not None:
            check_writable(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed --help, --version or its one-line error
        return exc.code if isinstance(exc.code, int) else 0
    try:
        _check_outputs(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(_interrupted(args, argv), file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise  # a bug, not the user's input: its traceback is what a report needs
        print(f"prunelab {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
