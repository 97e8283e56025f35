"""The ``prunelab`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An error to print as one line (no traceback), exiting with status 2."""


def _cmd_strategies(args: argparse.Namespace) -> int:
    from .strategies import strategy_table

    table = strategy_table()
    print(table.to_string(index=False))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import textwrap

    from .data import import_torchvision
    from .zoo import sample_table

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

    from .targets import targets
    from .zoo import load

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


def _cmd_prune(args: argparse.Namespace) -> int:
    from . import data as datasets
    from .calibration import Calibration
    from .evaluate import evaluate, model_stats
    from .pruner import Pruner
    from .strategies import get_strategy
    from .zoo import load

    strategy = get_strategy(args.strategy)
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be a positive number of samples, got {args.limit}")
    bundle = load(args.spec, trust=args.trust)
    model = bundle.model
    data_spec = args.data or bundle.default_data
    if data_spec is None:
        # no labelled data: fidelity to the dense model on random inputs still means something
        evaluation = calibration_data = bundle.example_input(batch_size=64, seed=0)
        described = "64 random inputs (no --data given and the model has no default data)"
    else:
        evaluation = datasets.load(data_spec, split="test", limit=args.limit)
        calibration_data = evaluation
        described = f"{data_spec}, test split, {len(evaluation):,} samples"
    calibration = None
    if strategy.needs:
        if data_spec is not None:
            calibration_data = datasets.load(data_spec, split="train", limit=args.limit)
        calibration = Calibration(model, calibration_data, device=args.device)
    pruner = Pruner(model, strategy, calibration=calibration, seed=args.seed)
    masks = pruner.masks(sparsity=args.sparsity, threshold=args.threshold)
    example = bundle.example_input(batch_size=1)
    dense = {
        **evaluate(model, evaluation, device=args.device),
        **model_stats(model, example_input=example),
    }
    pruned = {
        **evaluate(model, evaluation, masks=masks, device=args.device),
        **model_stats(model, masks, example_input=example),
    }
    print(
        f"{bundle.name} pruned with {strategy.name}: sparsity {masks.sparsity():.4f} of "
        f"{sum(m.numel() for m in masks.values()):,} prunable weights; data: {described}"
    )
    print(_prune_table(dense, pruned))
    if args.out is not None:
        masks.save(args.out)
        print(f"masks saved to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunelab", description="Understand and plan neural-network pruning."
    )
    parser.add_argument("--version", action="version", version=f"prunelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    strategies = sub.add_parser("strategies", help="list the registered pruning strategies")
    strategies.set_defaults(func=_cmd_strategies)

    models = sub.add_parser("models", help="list the sample and torchvision models")
    models.set_defaults(func=_cmd_models)

    layers = sub.add_parser("layers", help="list a model's prunable tensors")
    layers.add_argument("spec", help="model spec: sample:<name>, torchvision:<arch>, file:<path>")
    layers.add_argument("--trust", action="store_true", help="allow loading a pickled module")
    layers.set_defaults(func=_cmd_layers)

    prune = sub.add_parser("prune", help="prune a model once and compare it with the dense model")
    prune.add_argument("spec", help="model spec: sample:<name>, torchvision:<arch>, file:<path>")
    prune.add_argument("--strategy", required=True, help="strategy name (`prunelab strategies`)")
    amount = prune.add_mutually_exclusive_group()
    amount.add_argument("--sparsity", type=float, help="fraction of weights to zero, in [0, 1]")
    amount.add_argument("--threshold", type=float, help="prune scores at or below this value")
    prune.add_argument("--data", help="data spec (default: the model's own data)")
    prune.add_argument("--limit", type=int, help="use at most this many samples")
    prune.add_argument("--out", help="save the masks to this file (prunelab masks format)")
    prune.add_argument("--trust", action="store_true", help="allow loading a pickled module")
    prune.add_argument("--device", help="where to run, e.g. cpu or cuda (default: cpu)")
    prune.add_argument("--seed", type=int, default=0, help="seed for random strategies")
    prune.set_defaults(func=_cmd_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"prunelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
