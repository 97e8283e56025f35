"""The command line's argument types and shared options: each refuses bad input in one line.

Kept apart from :mod:`prunelab.cli` (the commands) so that what a value may be is read in one
place; every type raises ``argparse.ArgumentTypeError`` or :class:`CliError`, which the
command line prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..errors import DeviceError, InputError
from ..runtime.files import bounded_repr, one_line

__all__ = [
    "CHECKPOINT_SUFFIX",
    "MAX_SEED",
    "CliError",
    "Parser",
    "add_model_options",
    "add_ray_option",
    "add_resume_options",
    "add_strategy_options",
    "device_type",
    "finite_float",
    "levels",
    "option_pair",
    "positive_float",
    "positive_int",
    "run_options",
    "seed_type",
]

CHECKPOINT_SUFFIX = ".checkpoint"


class CliError(InputError):
    """An error to print as one line (no traceback), exiting with status 2."""


# torch.manual_seed takes 64-bit seeds; a non-negative one below 2**63 fits every generator
MAX_SEED = 2**63 - 1


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the command line."""

    subcommands: dict[str, argparse.ArgumentParser] | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # an unknown option is the command's error, named as such (argparse blames the top)
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = (self.subcommands or {}).get(getattr(parsed, "command", None), self)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def number(text: str, kind: type, accepted: Callable[[float], bool], what: str):
    """An argparse type: ``text`` read as ``kind``, refused unless ``accepted`` says yes."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not accepted(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {bounded_repr(text, limit=40)}")
    return value


def positive_int(text: str) -> int:
    return number(text, int, lambda v: v >= 1, "a positive whole number")


def positive_float(text: str) -> float:
    import math

    return number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def seed_type(text: str) -> int:
    return number(text, int, lambda v: 0 <= v <= MAX_SEED, "a whole number from 0 to 2**63 - 1")


def finite_float(text: str) -> float:
    import math

    return number(text, float, math.isfinite, "a finite number")


def device_type(text: str) -> str:
    from ..runtime.functional import check_device  # imports torch: only when --device is given

    try:
        return str(check_device(text))
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def levels(text: str) -> list[float]:
    """``0:0.95:0.05`` (start:stop:step, stop included) or ``0.1,0.5,0.9``."""
    import math

    from ..sweeps.config import MAX_LEVELS

    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not step > 0 or not math.isfinite((stop - start) / step):
                raise ValueError
            count = round((stop - start) / step) + 1
            if count > MAX_LEVELS:
                raise CliError(
                    f"sparsities {text!r} give {count:,} levels; at most {MAX_LEVELS:,} are "
                    "evaluated in one run (e.g. 0:0.95:0.05 gives 20)"
                )
            return [
                round(start + i * step, 10) for i in range(count) if start + i * step <= stop + 1e-9
            ]
        return [float(part) for part in text.split(",") if part.strip()]
    except CliError:
        raise
    except ValueError:
        raise CliError(
            f"bad sparsities {text!r}: give start:stop:step (e.g. 0:0.95:0.05) or a comma list"
        ) from None


def add_model_options(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    parser.add_argument("spec", help="model spec: sample:<name>, torchvision:<arch>, file:<path>")
    parser.add_argument("--trust", action="store_true", help="allow loading a pickled module")
    if data:
        parser.add_argument("--data", help="data spec (default: the model's own data)")
        parser.add_argument("--limit", type=positive_int, help="use at most this many samples")
        parser.add_argument(
            "--device", type=device_type, help="where to run, e.g. cpu or cuda (default: cpu)"
        )


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help=f"keep finished rows in this file, kept after the run (default with --csv: "
        f"CSV{CHECKPOINT_SUFFIX}, removed once the CSV is saved)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoint (same settings; rows already "
        "done are not evaluated again)",
    )


def add_strategy_options(parser: argparse.ArgumentParser) -> None:
    """``--prune-outputs`` and ``--option NAME=VALUE``: how the strategy is built."""
    parser.add_argument(
        "--prune-outputs",
        action="store_true",
        help="channel strategies: prune the layers whose outputs are the model's outputs too "
        "(by default they are left out, so that no class is deleted)",
    )
    parser.add_argument(
        "--option",
        type=option_pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a strategy option, repeatable: p=2 (an L2 channel norm), percdamp=0.05, "
        "comparison=row (`prunelab strategies` lists each strategy's options)",
    )


def option_pair(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` of ``--option``; the value read as YAML reads a scalar (``2`` a number,
    ``true`` a bool, ``row`` text).

    >>> option_pair("percdamp=0.05"), option_pair("comparison=row")
    (('percdamp', 0.05), ('comparison', 'row'))
    """
    import yaml

    name, equals, raw = text.partition("=")
    name = name.strip()
    if not equals or not name.isidentifier() or not raw.strip():
        raise argparse.ArgumentTypeError(
            f"--option takes NAME=VALUE, e.g. p=2 or percdamp=0.05, got {bounded_repr(text)}"
        )
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, (bool, int, float, str)):
        value = raw.strip()  # "[1]" or "a: b" stay the text they are
    return name, value


def add_ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="evaluate on a Ray cluster: its head HOST:PORT, or none for a local one (needs "
        'pip install "prunelab[ray]"); same table and checkpoint as without',
    )


def run_options(args: argparse.Namespace, progress, checkpoint: str | None):
    """A long run's ``RunOptions``: device, progress, checkpoint, resume and ``--ray``."""
    from ..sweeps import RunOptions

    ray = getattr(args, "ray", None)
    return RunOptions(
        device=args.device,
        progress=progress,
        checkpoint=checkpoint,
        resume=args.resume,
        executor=None if ray is None else "ray",
        address=(ray or "").strip() or None,
    )
