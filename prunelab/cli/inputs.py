"""What the commands read from their arguments: the model, the data, calibration, strategies.

Every command loads its model through :func:`load_model`, which keeps the bundle on the
parsed arguments, so that an error from running the model on the user's data can say what
the model expects (:func:`expected_inputs`).
"""

from __future__ import annotations

import argparse

from ..errors import DataError, PrunelabError

__all__ = [
    "calibration_for",
    "evaluation_data",
    "expected_inputs",
    "load_model",
    "strategy_for",
]


def load_model(args: argparse.Namespace, spec: str | None = None, **options):
    """The model bundle for ``spec`` (default ``args.spec``), kept as ``args.bundle``."""
    from ..io.zoo import load

    bundle = load(args.spec if spec is None else spec, trust=args.trust, **options)
    args.bundle = bundle
    return bundle


def evaluation_data(bundle, args: argparse.Namespace):
    """(data, calibration data, description, data spec) for a loaded model and the CLI args."""
    from ..io import data as datasets

    data_spec = args.data or bundle.default_data
    if data_spec is None:
        # no labelled data: fidelity to the dense model on random inputs still means something
        inputs = bundle.example_input(batch_size=64, seed=0)
        return inputs, inputs, "64 random inputs (no --data and no default data)", None
    # text specs are tokenized with the model's own tokenizer when it has one
    tokenizer = getattr(bundle, "tokenizer", None)
    evaluation = datasets.load(data_spec, split="test", limit=args.limit, tokenizer=tokenizer)
    unit = "sequences" if getattr(evaluation, "kind", None) == "tokens" else "samples"
    described = f"{data_spec}, test split, {len(evaluation):,} {unit}"
    return (
        evaluation,
        lambda: datasets.load(data_spec, split="train", limit=args.limit, tokenizer=tokenizer),
        described,
        data_spec,
    )


def calibration_for(model, strategy, calibration_data, device):
    """The :class:`~prunelab.core.calibration.Calibration` ``strategy`` needs, else None."""
    from ..core.calibration import Calibration

    if not strategy.needs:
        return None
    data = calibration_data() if callable(calibration_data) else calibration_data
    return Calibration(model, data, device=device)


def strategy_for(name: str, args: argparse.Namespace):
    """The strategy ``name`` with the command's options (``--option``, ``--granularity``,
    ``--prune-outputs``)."""
    from ..core.strategies import get_strategy

    options: dict[str, object] = dict(getattr(args, "option", None) or [])
    if getattr(args, "granularity", None):  # e.g. sparsegpt or wanda at 2:4
        options["granularity"] = args.granularity
    # the model's output layers are left out of channel pruning unless asked for
    if args.prune_outputs:
        options["prune_outputs"] = True
    return get_strategy(name, **options)


def expected_inputs(args: argparse.Namespace, exc: BaseException) -> str:
    """For data the model could not run on: what the loaded model expects, else ``""``.

    The engine raises :class:`DataError` *from* torch's own error only where the model ran
    on the user's inputs and failed (their shape or dtype); it does not know what the model
    wants, but the command does: the bundle says its input shape, dtype and own data.
    """
    bundle = getattr(args, "bundle", None)
    cause = exc.__cause__
    if bundle is None or not isinstance(exc, DataError) or cause is None:
        return ""
    if isinstance(cause, PrunelabError):
        return ""
    shape = "x".join(map(str, bundle.input_shape))
    dtype = str(bundle.input_dtype).removeprefix("torch.")
    own = bundle.default_data
    given = getattr(args, "data", None)
    hint = (
        f" (its own data, used without --data: {own})" if own and given not in (None, own) else ""
    )
    return f"; the data does not fit {bundle.name}, which expects inputs of {shape} {dtype}{hint}"
