"""The long runs: ``sweep`` and ``sensitivity`` (checkpointed, resumable) and ``solve``.

A run keeps its finished rows in a checkpoint (``--checkpoint``, or beside ``--csv``); after
Ctrl-C, :func:`interrupted` prints the command that goes on from there, as the user would type
it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .args import CHECKPOINT_SUFFIX, CliError, levels, run_options
from .inputs import calibration_for, evaluation_data, load_model, strategy_for
from .progress import Bar

__all__ = ["command_prefix", "interrupted", "run_sensitivity", "run_solve", "run_sweep"]


def _save_csv(table, path: str | None) -> None:
    if path is not None:
        from ..sweeps import save_table

        save_table(table, path)
        print(f"table saved to {path}")


def _checkpoint(args: argparse.Namespace, *, evaluates: bool = True) -> str | None:
    """The run's checkpoint file: --checkpoint, else beside --csv; checked before any work.

    A checkpoint beside the CSV is a by-product: removed once the CSV is saved. One named
    with --checkpoint is kept (resuming a finished one prints its table at once).
    """
    from ..sweeps import checkpoint_status

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


def run_sweep(args: argparse.Namespace) -> int:
    """``prunelab sweep``: accuracy-vs-sparsity curves of several strategies."""
    from ..sweeps import SweepConfig, sweep

    checkpoint = _checkpoint(args)
    bundle = load_model(args)
    evaluation, _, described, data_spec = evaluation_data(bundle, args)
    names = [strategy_for(n.strip(), args) for n in args.strategies.split(",") if n.strip()]
    with Bar("sweep") as bar:
        table = sweep(
            bundle.model,
            evaluation,
            strategies=names,
            sparsities=levels(args.sparsities),
            config=SweepConfig(seed=args.seed),
            run=run_options(args, bar, checkpoint),
        )
    table.attrs.update(model=args.spec, data=data_spec)
    print(f"{bundle.name}; data: {described}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _save_csv(table, args.csv)
    _after_run(args, checkpoint)
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    """``prunelab sensitivity``: prune one layer at a time and measure the drop."""
    from ..runtime.metrics import LOWER_IS_BETTER
    from ..sweeps import SensitivityConfig, sensitivity

    if args.method == "magnitude" and args.resume:
        raise CliError(
            "--resume: the magnitude method evaluates nothing; there is no run to resume"
        )
    checkpoint = _checkpoint(args, evaluates=args.method == "evaluate")
    bundle = load_model(args)
    strategy = strategy_for(args.strategy, args)
    if args.method == "magnitude":
        evaluation, calibration, described, data_spec = None, None, "none (magnitude proxy)", None
    else:
        evaluation, calibration_data, described, data_spec = evaluation_data(bundle, args)
        calibration = calibration_for(bundle.model, strategy, calibration_data, args.device)
    # with data, None lets sensitivity choose: perplexity for token data, else accuracy
    metric = args.metric or (None if data_spec is not None else "agreement")
    with Bar("sensitivity") as bar:
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
            run=run_options(args, bar, checkpoint),
        )
    table.attrs.update(model=args.spec, data=data_spec)
    print(f"{bundle.name} with {strategy.name}; data: {described}")
    if table.attrs.get("left_out"):
        print(f"{table.attrs['left_out_reason']}; prune them too with --prune-outputs.")
    pivot = table.pivot(index="layer", columns="sparsity", values="drop")
    pivot = pivot.reindex(table["layer"].unique())
    measured = table.attrs["metric"]
    change = "rise" if measured in LOWER_IS_BETTER else "drop"
    print(f"{change} in {measured} (baseline {table.attrs['baseline']:.4f}):")
    print(pivot.to_string(float_format=lambda v: f"{v:+.4f}"))
    _save_csv(table, args.csv)
    _after_run(args, checkpoint)
    return 0


_BUDGETS = ("target_sparsity", "max_drop", "params", "flops", "latency", "speedup")


def _budget(args: argparse.Namespace):
    """The one budget option given, as a :class:`~prunelab.sweeps.Budget`."""
    from ..sweeps import Budget

    kinds = {"target_sparsity": "sparsity", "max_drop": "drop"}
    for name in _BUDGETS:
        value = getattr(args, name, None)
        if value is not None:
            return Budget(kinds.get(name, name), value)
    raise ValueError("give one budget: --target-sparsity, --max-drop, --params, ...")


def run_solve(args: argparse.Namespace) -> int:
    """``prunelab solve``: a sensitivity table -> a recipe under a budget; with
    ``--evaluations N`` the planner measures, refits and re-solves up to N times."""
    from dataclasses import replace

    from ..sweeps import PlanConfig, load_table, plan, solve

    table = load_table(args.table)
    budget = _budget(args)
    model = data = None
    spec, data_spec = table.attrs.get("model"), table.attrs.get("data")
    measure = args.measure or args.evaluations > 1
    if (measure or budget.needs_model) and spec:
        from ..io import data as datasets

        # the specs come from the table file: they cannot grant trust, download or make folders
        model = load_model(args, spec, untrusted=True).model
        data = datasets.load(data_spec, split="test", untrusted=True) if data_spec else None
    if (measure or budget.needs_model) and (model is None or data is None):
        raise ValueError(
            "this needs the table's model and data, and the table names none: write it with "
            "`prunelab sensitivity --csv`"
        )
    steps = None
    with Bar("solve", steps=max(args.evaluations, 1)) as bar:
        if measure:
            bar.step("measuring the joint recipe")
            config = PlanConfig(
                evaluations=args.evaluations,
                min_sparsity=args.min_sparsity,
                max_sparsity=args.max_sparsity,
            )
            result = plan(table, budget, model=model, data=data, config=config)
            recipe, steps = result.recipe, result
        else:
            recipe = solve(
                table,
                budget=budget,
                min_sparsity=args.min_sparsity,
                max_sparsity=args.max_sparsity,
                model=model,
                data=data if budget.needs_model else None,
            )
    recipe = replace(recipe, provenance=replace(recipe.provenance, model=spec, data=data_spec))
    recipe.save(args.out)
    p = recipe.provenance
    print(f"recipe for {spec or 'the model'}: {len(recipe.layers)} layers -> {args.out}")
    for layer, value in recipe.layers.items():
        print(f"  {layer:<40} {value:7.2%}")
    if steps is not None:
        for row in steps.table().itertuples():
            print(
                f"  step {row.step}: summed drop {row.summed_drop:.4f}, predicted "
                f"{row.predicted_drop:.4f}{' (extrapolated)' * row.extrapolated}, measured "
                f"{row.measured_drop:.4f}" + (" (chosen)" if row.chosen else "")
            )
        print(steps.note())
    if p.metric is not None and p.baseline is not None:
        measured = "not measured (--measure)" if p.measured is None else f"{p.measured:.4f}"
        print(
            f"{p.metric}: baseline {p.baseline:.4f}, predicted {p.predicted:.4f}, "
            f"measured {measured}"
        )
    return 0


def command_prefix() -> list[str]:
    """The words that start prunelab again, as the user can type them where they are.

    Under ``uv run`` (the README's setup) the virtual environment is not on the user's own
    PATH, so plain ``prunelab`` would not be found: say ``uv run prunelab``. Otherwise
    ``prunelab`` where the shell finds this installation, else this Python with ``-m``.
    """
    if os.environ.get("UV_RUN_RECURSION_DEPTH"):  # set by `uv run` for what it starts
        return ["uv", "run", "prunelab"]
    found = shutil.which("prunelab")
    if found and Path(found).parent.resolve() == Path(sys.executable).parent.resolve():
        return ["prunelab"]
    return [sys.executable, "-m", "prunelab.cli"]


def interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """What Ctrl-C leaves behind, and the exact command that goes on from there."""
    from ..sweeps import CheckpointError, checkpoint_status

    path = getattr(args, "active_checkpoint", None)
    if path is None:
        if getattr(args, "command", None) == "finetune":  # written only once training is done
            return f"interrupted; nothing was written to {args.out}"
        if hasattr(args, "resume"):
            return "interrupted; nothing saved (with --csv or --checkpoint a run can be resumed)"
        return "interrupted"
    try:
        state = checkpoint_status(path)
    except CheckpointError:
        state = None
    if state is None or not state.done:
        return "interrupted before the first row was finished; nothing to resume"
    again = [*command_prefix(), *argv, *([] if "--resume" in argv else ["--resume"])]
    return (
        f"interrupted: {state.done} of {state.total} rows are saved in {path}; to go on, run: "
        + shlex.join(again)
    )
