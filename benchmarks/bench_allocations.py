"""Per-layer allocations compared, and the planner's predictions checked, on the sample models.

Run: ``uv run python benchmarks/bench_allocations.py [--models sample:digits-mlp,...]
[--part planner|allocations|both] [--finetune-epochs 1]``; ``--predictions-only`` (the
planner part alone, targets 0.3..0.9: a few minutes) for the prediction table.

The sensitivity table, the planner's joint measurements and OWL's calibration use a fixed
subset of the *train* split (``--calibration`` samples); every number reported is measured on
the test split, so the solver's allocation is not chosen on the data it is judged on.

* ``planner``: for each target 0.3..0.9 (in order, the map fitted at one target carried to
  the next, as the app carries it), :func:`prunelab.sweeps.plan` with ``--evaluations``
  joint measurements. Printed per target: the summed single-layer drop, the prediction made
  before measuring the chosen recipe, the one from all other measurements (held out), and the
  measurement, in accuracy points. Predicted and measured are on the same (calibration) data.
* ``allocations``: uniform, global magnitude, LAMP, ERK, OWL and the solver's (the
  planner's chosen recipe), each with magnitude pruning inside every layer, one-shot and
  after the same short fine-tune (``TrainConfig(epochs=--finetune-epochs)``, seed 0, on the
  first ``--train`` train samples), at
  0.5, 0.7, 0.8 and 0.9. Test accuracy; the baseline is the dense model's, same run.

Any model spec whose data is labelled classification works (``--models``); a language model
needs perplexity in ``evaluate`` (a later branch) and is left out here.
"""

from __future__ import annotations

import argparse
import time

import prunelab
from prunelab.io import data as datasets
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from prunelab.sweeps import PlanConfig, plan, sensitivity
from prunelab.sweeps.allocations import ALLOCATIONS, allocation, layer_weights
from prunelab.training import TrainConfig, finetune

MODELS = "sample:digits-mlp,sample:digits-cnn,sample:digits-resnet,sample:sentiment-lstm"
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _subset(dataset, n: int):
    inputs, labels = zip(*(dataset[i] for i in range(min(n, len(dataset)))), strict=True)
    import torch

    return torch.stack(inputs), torch.as_tensor(labels)


def planner_rows(spec, model, table, calib, targets, evaluations):
    rows, fitted = [], None
    for target in targets:
        config = PlanConfig(evaluations=evaluations, drop_model=fitted, max_sparsity=0.95)
        result = plan(table, target, model=model, data=calib, config=config)
        fitted = result.drop_model
        rows.append(
            (
                spec,
                target,
                100 * result.summed_drop,
                100 * result.predicted_drop,
                100 * result.held_out_drop,
                100 * result.measured_drop,
                result.steps[result.chosen].extrapolated,
                result.held_out_extrapolated,
            )
        )
    return rows


def _prediction_table(planned) -> str:
    """Markdown: per model and target, predicted (before measuring; * beyond the measurements
    so far), held out (from every other measurement; * extrapolated), measured, |difference|."""
    lines = [
        "| model | target | summed drop | predicted (before measuring) | held out "
        "| measured | abs diff | within 2 points |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, t, summed, pred, held, meas, beyond, held_beyond in planned:
        diff = abs(pred - meas)
        lines.append(
            f"| {spec.split(':')[-1]} | {t:.1f} | {summed:.1f} | {pred:.1f}{'*' * beyond} "
            f"| {held:.1f}{'*' * held_beyond} | {meas:.1f} | {diff:.1f} "
            f"| {'yes' if diff <= 2 else 'no'} |"
        )
    return "\n".join(lines)


def allocation_rows(spec, model, table, calib, train, test, args):
    layers = list(dict.fromkeys(table["layer"]))
    weights = layer_weights(model, layers)
    calibration = prunelab.Calibration(model, calib)
    dense = prunelab.evaluate(model, test)["accuracy"]
    rows, fitted = [], None
    for target in args.targets:
        for name in ALLOCATIONS:
            if name == "solver":
                config = PlanConfig(evaluations=args.evaluations, drop_model=fitted)
                result = plan(table, target, model=model, data=calib, config=config)
                fitted, per_layer = result.drop_model, dict(result.recipe.layers)
            else:
                per_layer = allocation(name, weights, target, calibration=calibration)
            masks = Recipe(strategy="layer-magnitude", layers=per_layer).masks(model)
            one_shot = prunelab.evaluate(model, test, masks=masks)["accuracy"]
            config = TrainConfig(epochs=args.finetune_epochs, seed=0)
            trained, _ = finetune(model, masks, train, config=config)
            tuned = prunelab.evaluate(trained, test)["accuracy"]
            rows.append((spec, target, name, dense, one_shot, tuned))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--part", choices=("planner", "allocations", "both"), default="both")
    parser.add_argument("--calibration", type=int, default=450)
    parser.add_argument("--evaluations", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=512, help="train samples to fine-tune on")
    parser.add_argument("--targets", default="0.5,0.7,0.8,0.9")
    parser.add_argument(
        "--predictions-only",
        action="store_true",
        help="only the planner's prediction table (targets 0.3..0.9): a few minutes",
    )
    args = parser.parse_args(argv)
    if args.predictions_only:
        args.part = "planner"
    args.targets = [float(t) for t in args.targets.split(",")]
    planned, compared = [], []
    for spec in args.models.split(","):
        start = time.perf_counter()
        bundle = zoo.load(spec)
        model = bundle.model.eval()
        train = datasets.load(bundle.default_data, split="train")
        test = datasets.load(bundle.default_data, split="test")
        calib = _subset(train, args.calibration)
        train = _subset(train, args.train)  # a short fine-tune: the same subsample for all
        table = sensitivity(model, calib, sparsities=LEVELS)
        if args.part in ("planner", "both"):
            targets = [round(0.1 * i, 1) for i in range(3, 10)]
            planned += planner_rows(spec, model, table, calib, targets, args.evaluations)
        if args.part in ("allocations", "both"):
            compared += allocation_rows(spec, model, table, calib, train, test, args)
        print(f"# {spec}: {time.perf_counter() - start:.0f} s", flush=True)
    if planned:
        print(_prediction_table(planned))
    if compared:
        print("\n| model | target | " + " | ".join(ALLOCATIONS) + " |")
        print("|---|---|" + "---|" * len(ALLOCATIONS))
        for spec in dict.fromkeys(r[0] for r in compared):
            for t in args.targets:
                cells = {r[2]: r for r in compared if r[0] == spec and r[1] == t}
                best_one = max(c[4] for c in cells.values())
                best_ft = max(c[5] for c in cells.values())

                def cell(r, best_one=best_one, best_ft=best_ft):
                    one = f"**{r[4]:.1%}**" if r[4] == best_one else f"{r[4]:.1%}"
                    ft = f"**{r[5]:.1%}**" if r[5] == best_ft else f"{r[5]:.1%}"
                    return f"{one} / {ft}"

                dense = next(iter(cells.values()))[3]
                print(
                    f"| {spec.split(':')[-1]} (dense {dense:.1%}) | {t:.1f} | "
                    + " | ".join(cell(cells[n]) for n in ALLOCATIONS)
                    + " |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
