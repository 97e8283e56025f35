"""The Export page's logic: which masks, the shrink plan, the quality of what is downloaded,
sizes, measured speed and the files (prepared on request, kept for the session)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import streamlit as st

from ...analysis import speed_report
from ...core.masks import Masks
from ...core.targets import targets
from ...figures.fmt import metric_value
from ...io.exports import FORMATS, SUFFIXES, export_bytes
from ...io.hf import is_hf_model
from ...io.recipes import Recipe
from ...shrinking import ShrinkPlan
from .. import cache, engine
from ..engine import Choice
from ..errors import error_boundary, failing_as
from ..quality import change_of, headline_name
from ..state import Keys

__all__ = [
    "CHANNEL",
    "CHANNEL_STRATEGY",
    "LARGE_DROP",
    "LARGE_PERPLEXITY_RISE",
    "PRUNE",
    "RECIPE",
    "SPEED_ROUNDS",
    "Picked",
    "Quality",
    "auto_evaluate",
    "channel_masks",
    "download_name",
    "formats",
    "groups",
    "mask_sources",
    "measure_speed",
    "plan",
    "prepare_files",
    "prepared_files",
    "prune_page_masks",
    "quality",
    "recipe_file_masks",
    "sizes",
    "speed",
]

PRUNE, RECIPE, CHANNEL = "masks from the Prune page", "a recipe file", "channel pruning here"
CHANNEL_STRATEGY = "weight-norm-channel"
SPEED_ROUNDS = 21  # interleaved timing rounds per batch size
LARGE_DROP = 0.05  # accuracy or agreement lost (absolute): worth a warning before download
LARGE_PERPLEXITY_RISE = 1.5  # a perplexity 50% above dense's: worth the same warning
_MASKS_FAILED = "Could not build the masks"


@dataclass(frozen=True)
class Picked:
    """The masks to export, what to call them, and their recipe (None: they have none)."""

    masks: Masks
    label: str
    recipe_text: str | None

    @cached_property  # hashed once per page run, not by each use below
    def digest(self) -> str:
        return engine.masks_digest(self.masks)


def mask_sources() -> list[str]:
    """Where masks can come from: the Prune page's first, when it made some."""
    has_current = isinstance(st.session_state.get(Keys.masks), Masks)
    return [PRUNE, CHANNEL, RECIPE] if has_current else [CHANNEL, RECIPE]


def auto_evaluate(choice: Choice) -> bool:
    """Whether the downloads are evaluated at once (small models) or on a button."""
    return choice.parameters <= engine.AUTO_EVALUATE_PARAMS


def prune_page_masks(choice: Choice) -> Picked | None:
    """The Prune page's masks, or None when they belong to another model."""
    with failing_as(_MASKS_FAILED):
        masks = st.session_state[Keys.masks]
        label = st.session_state.get(Keys.masks_label, "the Prune page's masks")
        current_recipe = st.session_state.get(Keys.recipe)
        recipe_text = current_recipe().dumps() if current_recipe is not None else None
        if engine.masks_misfit(choice, masks):
            return None
    return Picked(masks, label, recipe_text)


def channel_masks(choice: Choice, sparsity: float) -> Picked:
    """Channel masks of every layer at ``sparsity``, by the weights' norm."""
    with failing_as(_MASKS_FAILED):
        layers = tuple(t.fqn for t in targets(choice.model))
        pruner = cache.pruner(
            choice.model_key, choice.data_spec, CHANNEL_STRATEGY, (), layers, 0, _choice=choice
        )
        recipe = Recipe(strategy=CHANNEL_STRATEGY, granularity="channel", default_sparsity=sparsity)
        label = f"{CHANNEL_STRATEGY} at {sparsity:.0%}"
        return Picked(pruner.masks(sparsity=sparsity), label, recipe.dumps())


def recipe_file_masks(choice: Choice, name: str, payload: bytes) -> Picked:
    """The masks of an uploaded recipe file on the chosen model."""
    with failing_as(_MASKS_FAILED):
        text = payload.decode("utf-8", errors="replace")
        recipe = Recipe.loads(text, name=name)
        calibration = None
        if recipe.build_strategy().needs:
            if choice.data is None or choice.data_spec is None:
                raise ValueError(f"the recipe's strategy {recipe.strategy!r} needs data: pick data")
            calibration = cache.calibration(choice.model_key, choice.data_spec, choice)
        return Picked(recipe.masks(choice.model, calibration), f"recipe {name}", recipe.dumps())


def plan(choice: Choice, picked: Picked) -> ShrinkPlan | str:
    """The plan that shrinks the model for these masks, or why they cannot shrink it."""
    return cache.shrink_plan(choice.model_key, picked.digest, choice, picked.masks)


@dataclass(frozen=True)
class Quality:
    """Accuracy (or agreement with dense, without labels) of the dense model and of each
    download: the masked model (state_dict, sparse) and the shrunk one (pt2)."""

    name: str  # "accuracy", "perplexity" (a language model) or "agreement"
    dense: float
    values: dict[str, float]

    @property
    def label(self) -> str:
        return {"accuracy": "Accuracy", "perplexity": "Perplexity"}.get(
            self.name, "Agreement with dense"
        )

    @property
    def worst(self) -> float:
        # perplexity is worse when higher
        pick = max if self.name == "perplexity" else min
        return pick(self.values.values())

    @property
    def large_drop(self) -> bool:
        if self.name == "perplexity":
            return self.worst > self.dense * LARGE_PERPLEXITY_RISE
        return self.dense - self.worst > LARGE_DROP

    def shown(self, value: float) -> str:
        """A value of this metric as the page writes it: a share in percent, perplexity not."""
        return metric_value(self.name, value)

    def change(self, value: float) -> str:
        """A value's change from dense: points of a share, perplexity's difference."""
        return change_of(self.name, value, self.dense)


def quality(choice: Choice, picked: Picked, shrink: ShrinkPlan | None) -> Quality:
    """How well exactly what the downloads hold does, beside dense."""
    dense = cache.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
    name = headline_name(dense) or "agreement"
    # the pt2 holds the shrunk model, which computes what the masks extended to every
    # coupled tensor compute (plan.masks); state_dict and sparse hold the masks as they are
    models = {"state_dict, sparse" if shrink is not None else "download": picked.masks}
    if shrink is not None:
        models["pt2, shrunk"] = shrink.masks
    values = {what: cache.evaluate_masks(choice, m)[name] for what, m in models.items()}
    if len(values) == 2 and abs(values["pt2, shrunk"] - values["state_dict, sparse"]) < 1e-9:
        values = {"download": values["state_dict, sparse"]}
    return Quality(name, dense[name], values)


def groups(choice: Choice, shrink: ShrinkPlan | None) -> pd.DataFrame:
    """The coupled groups to show: the plan's when there is one, only groups of several."""
    if shrink is None:
        try:
            shown = cache.coupled_groups(choice.model_key, choice)
        except ValueError as exc:  # untraceable (a Hugging Face LM): say so, the page goes on
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return pd.DataFrame({"coupled groups": [f"not known: {reason}"]})
    else:
        shown = shrink.groups
    return shown[shown["size"] > 1] if (shown["size"] > 1).any() else shown


def sizes(
    choice: Choice, picked: Picked, bits: int | None, shrink: ShrinkPlan | None
) -> tuple[pd.DataFrame, dict[str, float], dict[str, int]]:
    """Bytes per layer, the totals, and each way to store the model (for the chart)."""
    table, totals = cache.storage_sizes(choice.model_key, picked.digest, bits, choice, picked.masks)
    kinds = {
        "dense": totals["dense_bytes"],
        "COO": totals["coo_bytes"],
        "CSR": totals["csr_bytes"],
        "bitmask": totals["bitmask_bytes"],
        "best mix": totals["best_bytes"],
    }
    if bits is not None:
        kinds[f"best + {bits}-bit"] = totals["quantized_bytes"]
    if shrink is not None:
        element = next(iter(choice.model.parameters())).element_size()
        buffers = sum(b.numel() * b.element_size() for b in choice.model.buffers())
        kinds["shrunk"] = shrink.parameters * element + buffers
    return table, totals, kinds


def measure_speed(choice: Choice, picked: Picked, batches: list[int]) -> None:
    """Time dense, masked and shrunk (with a progress bar); kept for the session."""
    bar, report_progress = engine.progress_bar("Timing dense, masked and shrunk")
    with error_boundary(), failing_as("Could not time the model"):
        report_progress(0.1, "measuring")
        report = speed_report(
            choice.model,
            picked.masks,
            example_input=choice.bundle.example_input(),
            batch_sizes=tuple(sorted(batches)),
            repeats=SPEED_ROUNDS,
        )
        report_progress(1.0, "done")
        _speed_store().put((choice.model_key, picked.digest, tuple(batches)), report)
    bar.empty()


def speed(choice: Choice, picked: Picked, batches: list[int]) -> pd.DataFrame | None:
    """The speed report measured for these masks and batch sizes, if any."""
    return _speed_store().get((choice.model_key, picked.digest, tuple(batches)))


def _speed_store() -> cache.Bounded:
    return cache.session_store(Keys.export_speed_result, limit=1)


def _files_store() -> cache.Bounded:
    return cache.session_store(Keys.export_files, limit=1)  # three models' bytes: keep one


def formats(choice: Choice) -> tuple[str, ...]:
    """The export formats for the chosen model: ``hf`` (a save_pretrained directory) only
    for Hugging Face models."""
    return tuple(f for f in FORMATS if f != "hf" or is_hf_model(choice.model))


def prepare_files(choice: Choice, picked: Picked) -> None:
    """Export the model in every format (with a progress bar); kept for the session.

    A format that cannot hold these masks gets its reason instead of its bytes.
    """
    files: dict[str, object] = {}
    bar, report_progress = engine.progress_bar("Exporting")
    shown = formats(choice)
    for index, fmt in enumerate(shown):
        report_progress(index / len(shown), fmt)
        try:
            files[fmt] = export_bytes(
                choice.model,
                picked.masks,
                format=fmt,
                example_input=choice.bundle.example_input(),
                tokenizer=choice.bundle.tokenizer,
            )
        except ValueError as exc:  # this format cannot hold these masks: said in its column
            files[fmt] = str(exc)
    bar.empty()
    _files_store().put((choice.model_key, picked.digest), files)


def prepared_files(choice: Choice, picked: Picked) -> dict[str, object] | None:
    """``{format: (bytes, info) or the reason it failed}`` prepared for these masks, if any."""
    return _files_store().get((choice.model_key, picked.digest))


def download_name(choice: Choice, fmt: str) -> str:
    """The file name a download of ``fmt`` gets (``hf``: the directory, zipped)."""
    return f"{choice.bundle.name}-pruned{'.zip' if fmt == 'hf' else SUFFIXES[fmt]}"
