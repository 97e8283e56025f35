"""Every cache of the app, each bounded: models, data, prepared strategies, results, figures.

Models, datasets and prepared Pruners are cached once for all sessions (``st.cache_resource``):
the engine never mutates a model it is given, so sharing is safe. Each cached function is
keyed by hashable settings only; objects arrive as ``_``-prefixed arguments that Streamlit
does not hash (masks travel that way, named in the key by their digest).

Every cache is bounded (least recently used entries go first), so a class of students on
different models does not grow the server without bound: the bounds are the constants below.
What one session keeps for itself (a speed report, prepared files, settings already run) is in
a :class:`Bounded` store in its session state (:func:`session_store`), bounded as well.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from torch.utils.data import Subset

from .. import activations as act
from .. import figures, shrinking
from ..analysis.evaluation import evaluate
from ..analysis.flops import flops_by_layer
from ..analysis.generation import next_tokens
from ..analysis.layer_stats import weight_stats
from ..analysis.storage import compression, storage_table
from ..core.calibration import Calibration
from ..core.masks import Masks
from ..core.pruner import Pruner
from ..core.strategies import get_strategy
from ..io import data as data_lib
from ..io import zoo
from ..io.recipes import Recipe
from .engine import Choice, Loaded, masks_digest

__all__ = [
    "MAX_CALIBRATIONS_PER_MODEL",
    "MAX_DATASETS",
    "MAX_EVALUATIONS",
    "MAX_FIGURES",
    "MAX_MODELS",
    "MAX_MODELS_KEPT",
    "MAX_PRUNERS",
    "MAX_RESULTS",
    "MAX_SESSION_ENTRIES",
    "MAX_TABLES",
    "MAX_UPLOADS",
    "Bounded",
    "activations_of",
    "calibration",
    "coupled_groups",
    "dense_metrics",
    "evaluate_masks",
    "figure",
    "flop_table",
    "layer_sparsity_figure",
    "lesson_result",
    "load_data",
    "load_model",
    "load_upload",
    "load_upload_data",
    "pruner",
    "recipe_masks",
    "remember",
    "remembered",
    "session_store",
    "shrink_plan",
    "sparsifier_mask",
    "storage_sizes",
    "threshold_effect",
    "train_split",
    "weight_table",
]

T = TypeVar("T")

# -- cache bounds: what one server keeps for all of its sessions together -------------------
MAX_MODELS = 6  # models picked by spec (samples, torchvision architectures)
MAX_UPLOADS = 2  # uploaded model files (and, in a cache of their own, uploaded data files)
MAX_MODELS_KEPT = MAX_MODELS + MAX_UPLOADS  # models in memory, with their calibrations
MAX_CALIBRATIONS_PER_MODEL = 2  # gradients and activations, one per evaluation data
MAX_DATASETS = 8
MAX_TRAIN_SPLITS = 4  # training splits (the Train page), beside the test splits above
MAX_PRUNERS = 16  # prepared strategies: scores and their sorted copy, ~2x the pruned weights
MAX_TABLES = 64  # small results: dense metrics, FLOP tables, coupled groups, byte counts
# figures of one layer (weights, mask, histogram, channels) keyed by the layer's mask: moving a
# slider back to a value, or switching views, draws a kept figure instead of building it again
MAX_FIGURES = 64
# metrics of masked models (a few numbers each), per model, data and masks
MAX_EVALUATIONS = 256
# finished long runs (sensitivity tables, sweeps, training curves: small tables), enough for
# each session of a class to find its own again after a page switch or its own st.rerun
MAX_RESULTS = 64
MAX_RECIPE_MASKS = 32  # masks of recipes drafted on the Sensitivity page
MAX_PLANS = 4  # each plan holds a shrunk copy of its model: keep few
# activation statistics and thresholding effects of one layer (small: per-channel numbers)
MAX_ACTIVATIONS = 64
MAX_EFFECTS = 128
MAX_SESSION_ENTRIES = 16  # what one session keeps for itself, per store

CALIBRATION_BATCHES = 4


class Bounded:
    """A mapping that keeps its ``limit`` most recently used entries; safe between threads.

    Sessions run in threads of one server process, hence the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._store: OrderedDict = OrderedDict()

    def get(self, key: Hashable) -> object | None:
        """The value for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._store:
                return None
            self._store.move_to_end(key)
            return self._store[key]

    def put(self, key: Hashable, value: T) -> T:
        """Keep ``value`` under ``key``, dropping the least recently used beyond the limit."""
        with self._lock:
            self._store[key] = value
            self._store.move_to_end(key)
            while len(self._store) > self.limit:
                self._store.popitem(last=False)
        return value

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def values(self) -> Iterator[object]:
        with self._lock:
            return iter(list(self._store.values()))


def session_store(name: str, *, limit: int = MAX_SESSION_ENTRIES) -> Bounded:
    """This session's own bounded store named ``name`` (a :class:`~prunelab.ui.state.Keys`)."""
    store = st.session_state.get(name)
    if not isinstance(store, Bounded):
        store = st.session_state[name] = Bounded(limit)
    return store


# -- models and data ---------------------------------------------------------------------------


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading the model...")
def load_model(spec: str) -> Loaded:
    return Loaded(zoo.load(spec))


def _read_upload(name: str, payload: bytes, read: Callable[[Path], T]) -> T:
    """``read(path)`` on the uploaded bytes, written to a private temporary folder that is
    deleted right after. Messages name the uploaded file, never the temporary path."""
    suffix = Path(name).suffix or ".pt"
    stem = re.sub(r"[^\w.-]", "_", Path(name).stem)[:100] or "upload"
    with tempfile.TemporaryDirectory(prefix="prunelab-upload-") as folder:
        path = Path(folder) / f"{stem}{suffix}"
        path.write_bytes(payload)
        try:
            return read(path)
        except Exception as exc:  # the message is rebuilt without the path, of the same kind
            text = str(exc).replace(str(path), name).replace(folder, "(upload)")
            try:
                named = type(exc)(text)
                named.__dict__.update(exc.__dict__)  # e.g. TrustRequired.kind
            except Exception:
                named = ValueError(text)
            raise named from None


@st.cache_resource(max_entries=MAX_UPLOADS, show_spinner="Loading the uploaded model...")
def load_upload(digest: str, name: str, options: str, trust: bool, _payload: bytes) -> Loaded:
    """Load an uploaded model file; ``options`` is the spec's query (``arch=...&input=...``)."""
    del digest  # the cache key; the bytes themselves are not hashed on every rerun
    query = f"?{options}" if options else ""

    def read(path: Path) -> zoo.ModelBundle:
        bundle = zoo.load(f"file:{path}{query}", trust=trust)
        return dataclasses.replace(bundle, name=Path(name).stem, spec=f"file:{name}{query}")

    return Loaded(_read_upload(name, _payload, read))


@st.cache_resource(max_entries=MAX_UPLOADS, show_spinner="Loading the uploaded data...")
def load_upload_data(digest: str, name: str, _payload: bytes) -> data_lib.TensorData:
    """Load an uploaded data file (a ``torch.save`` dict with ``x`` and ``y``): its test split."""
    del digest

    def read(path: Path) -> data_lib.TensorData:
        loaded = data_lib.load(f"file:{path}", split="test")
        loaded.name = f"file:{name}"
        return loaded

    return _read_upload(name, _payload, read)


@st.cache_resource(max_entries=MAX_DATASETS, show_spinner="Loading the data...")
def load_data(spec: str) -> object:
    # a web visitor's spec: it may not download nor create folders on the server
    return data_lib.load(spec, split="test", untrusted=True)


@st.cache_resource(max_entries=MAX_TRAIN_SPLITS, show_spinner="Loading the training split...")
def train_split(spec: str) -> object:
    return data_lib.load(spec, split="train")


def _first_samples(data: object, count: int) -> object:
    """The first ``count`` samples of ``data`` (all of it when it has fewer)."""
    if hasattr(data, "__len__") and len(data) > count:
        return Subset(data, range(count))
    return data


# -- prepared strategies -----------------------------------------------------------------------

_CALIBRATIONS_LOCK = threading.Lock()


def calibration(model_key: str, data_spec: str, _choice: Choice) -> Calibration:
    """The calibration of the chosen model on this data, made once and kept with the model.

    Making one is cheap: gradients and activations are computed on first use, then kept.
    A Calibration holds its model, so it lives in the model's own cache entry (at most
    ``MAX_CALIBRATIONS_PER_MODEL`` there): when the model leaves the cache, they go with it.
    """
    del model_key  # the cached model itself holds its calibrations
    kept = _choice.loaded.calibrations
    with _CALIBRATIONS_LOCK:
        if data_spec not in kept:
            kept[data_spec] = Calibration(
                _choice.model, _choice.data, batches=CALIBRATION_BATCHES, batch_size=64
            )
            while len(kept) > MAX_CALIBRATIONS_PER_MODEL:
                kept.popitem(last=False)
        kept.move_to_end(data_spec)
        return kept[data_spec]


@st.cache_resource(max_entries=MAX_PRUNERS, show_spinner="Scoring and sorting the weights...")
def pruner(
    model_key: str,
    data_spec: str | None,
    strategy: str,
    options: tuple[tuple[str, object], ...],
    layers: tuple[str, ...],
    seed: int,
    _choice: Choice,
) -> Pruner:
    """The prepared Pruner for these settings: scores computed and sorted once."""
    chosen = get_strategy(strategy, **dict(options))
    cal = None
    if chosen.needs:
        if _choice.data is None or data_spec is None:
            raise ValueError(f"strategy {strategy!r} needs data: pick evaluation data first")
        cal = calibration(model_key, data_spec, _choice)
    return Pruner(_choice.model, chosen, targets=list(layers), calibration=cal, seed=seed)


@st.cache_resource(max_entries=MAX_RECIPE_MASKS, show_spinner=False)
def recipe_masks(model_key: str, key: str, _choice: Choice, _recipe: Recipe) -> Masks:
    """The masks of ``_recipe`` on the chosen model, kept per model and ``key`` (what the
    recipe was made from): moving the recipe builder's slider back, or rerunning the page,
    does not score the layers again."""
    del model_key, key  # the cache key
    return _recipe.masks(_choice.model)


# -- small tables ------------------------------------------------------------------------------


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Evaluating the dense model...")
def dense_metrics(model_key: str, data_spec: str, _choice: Choice) -> dict[str, float]:
    return evaluate(_choice.model, _choice.data)


@st.cache_data(max_entries=MAX_TABLES, show_spinner=False)
def dense_next_tokens(model_key: str, text: str, _choice: Choice) -> list[tuple[str, float]]:
    """The dense model's five likeliest next tokens after ``text``: the same on every slider
    move, so computed once per model and text."""
    return next_tokens(_choice.model, _choice.bundle.tokenizer, text, top=5)


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Counting FLOPs...")
def flop_table(model_key: str, _choice: Choice) -> pd.DataFrame:
    """Dense FLOPs per prunable layer, counted once per model."""
    return flops_by_layer(_choice.model, example_input=_choice.bundle.example_input())


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Reading the weights...")
def weight_table(model_key: str, _choice: Choice) -> pd.DataFrame:
    """Statistics of each prunable weight, once per model (not on every rerun of the page)."""
    return weight_stats(_choice.model)


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Tracing the model's dependency graph...")
def coupled_groups(model_key: str, _choice: Choice) -> pd.DataFrame:
    """The groups of layers whose channels are removed together, once per model."""
    return shrinking.coupled_groups(_choice.model, _choice.bundle.example_input())


@st.cache_resource(max_entries=MAX_PLANS, show_spinner="Working out which channels can go...")
def shrink_plan(model_key: str, digest: str, _choice: Choice, _masks: Masks):
    """The plan that shrinks the model for these masks, or why they cannot shrink it (a str)."""
    try:
        return shrinking.plan_shrink(
            _choice.model, _masks, example_input=_choice.bundle.example_input()
        )
    except ValueError as exc:  # masks that cannot shrink the model: an answer, not an error
        return str(exc)


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Counting bytes...")
def storage_sizes(model_key: str, digest: str, bits: int | None, _choice: Choice, _masks: Masks):
    """Bytes per layer in each sparse format, and the totals."""
    return storage_table(_choice.model, _masks, bits=bits), compression(
        _choice.model, _masks, bits=bits
    )


# -- activations -------------------------------------------------------------------------------


@st.cache_data(max_entries=MAX_ACTIVATIONS, show_spinner="Streaming the activations...")
def activations_of(model_key, data_spec, layer, masks_key, samples, _choice, _masks):
    """Statistics of one layer's activations over the first ``samples`` inputs."""
    # every value (sample=None): one layer over at most `samples` inputs, and the page
    # promises that a dead channel is zero for every input
    data = _first_samples(_choice.data, samples)
    return act.activation_stats(_choice.model, data, layers=[layer], masks=_masks, sample=None)[
        layer
    ]


@st.cache_data(max_entries=MAX_EFFECTS, show_spinner="Thresholding and evaluating...")
def threshold_effect(model_key, data_spec, layer, threshold, masks_key, samples, _choice, _masks):
    """Sparsity and metrics with one layer's activations thresholded."""
    return act.activation_sparsity_effect(
        _choice.model, _first_samples(_choice.data, samples), [layer], threshold, masks=_masks
    )


@st.cache_data(max_entries=MAX_ACTIVATIONS, show_spinner="Running the activation sparsifier...")
def sparsifier_mask(model_key, data_spec, settings, samples, batch_size, _choice):
    """The activation sparsifier's mask for ``settings`` and the accuracy with it.

    ``settings`` is a ``prunelab.ui.views.activations.SparsifierSettings`` (hashable).
    """
    data = _first_samples(_choice.data, samples)
    sparsifier = act.ActivationSparsifier(
        _choice.model,
        aggregate_fn=act.AGGREGATE_FNS[settings.aggregate],
        reduce_fn=act.REDUCE_FNS[settings.reduce],
        mask_fn=act.MASK_FNS[settings.mask_fn],
        **dict(settings.config),
    )
    sparsifier.register_layer(
        settings.module, features=settings.features, feature_dim=settings.feature_dim
    )
    sparsifier.observe(data, batch_size=batch_size)
    sparsifier.step()
    mask = sparsifier.get_mask(settings.module)
    sparse = sparsifier.squash_mask()
    metrics = evaluate(sparse, data, metrics=("accuracy",))
    return mask, metrics.get("accuracy")


# -- figures and masked metrics ----------------------------------------------------------------


@st.cache_resource(max_entries=MAX_FIGURES, show_spinner=False)
def figure(key: tuple, _build: Callable[[], go.Figure]) -> go.Figure:
    """``_build()``, kept for all sessions under ``key`` (which must name everything drawn).

    A kept figure is shared, never changed: ``st.plotly_chart`` only reads it.
    """
    return _build()


def layer_sparsity_figure(model_key: str, masks: Masks, *, title: str | None = None) -> go.Figure:
    """``figures.layer_sparsity(masks)``, kept per model and per layer's kept count (all it
    draws), so a slider move that leaves every count as it was draws the kept figure."""
    counts = tuple(masks.per_layer()[["fqn", "elements", "kept"]].itertuples(index=False))
    return figure(
        ("layers", model_key, title, counts),
        _build=lambda: figures.layer_sparsity(masks, title=title),
    )


def evaluate_masks(choice: Choice, masks: Masks, *, samples: int | None = None) -> dict[str, float]:
    """Metrics of the masked model (one forward pass over the data; dense outputs cached),
    kept per model, data and masks: a slider moved back to a value, or a recipe target seen
    before, finds its numbers instead of evaluating again. ``samples``: only the first ones
    (the subset a sensitivity table was measured on, so that a measurement is compared with
    a baseline and a prediction from the same samples)."""
    key = masks_digest(masks)
    return dict(_evaluated(choice.model_key, choice.data_spec, key, samples, choice, masks))


@st.cache_resource(max_entries=MAX_EVALUATIONS, show_spinner=False)
def _evaluated(
    model_key: str,
    data_spec: str | None,
    masks_key: str,
    samples: int | None,
    _choice: Choice,
    _masks: Masks,
) -> dict[str, float]:
    data = _choice.data if samples is None else _first_samples(_choice.data, samples)
    return evaluate(_choice.model, data, masks=_masks)


# -- finished long runs, shared by all sessions ------------------------------------------------


@st.cache_resource(max_entries=1)
def _results() -> Bounded:
    return Bounded(MAX_RESULTS)


def remembered(key: tuple) -> object | None:
    """A finished result for ``key`` (settings of a sensitivity run or sweep), if any."""
    return _results().get(key)


def remember(key: tuple, value: T) -> T:
    """Keep ``value``, a finished result, for every session under ``key``."""
    return _results().put(key, value)


@st.cache_resource(max_entries=64, show_spinner=False)
def lesson_result(key: tuple, _build: Callable[[], object]) -> object:
    """A Learn lesson's computation, kept per key (the lesson's inputs), shared by sessions."""
    return _build()
