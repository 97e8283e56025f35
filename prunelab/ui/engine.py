"""Cached engine calls for the app.

Models, datasets and prepared Pruners are cached once for all sessions (``st.cache_resource``):
the engine never mutates a model it is given, so sharing is safe. Each cached function is
keyed by hashable settings only; objects arrive as ``_``-prefixed arguments that Streamlit
does not hash.

Every cache is bounded (least recently used entries go first), so a class of students on
different models does not grow the server without bound: the bounds are the constants below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from .. import figures
from ..analysis.evaluation import evaluate
from ..analysis.flops import flops_by_layer, with_masks
from ..analysis.layer_stats import weight_stats
from ..core.calibration import Calibration
from ..core.masks import Masks
from ..core.pruner import Pruner
from ..core.strategies import get_strategy
from ..core.targets import Target, targets
from ..io import data as data_lib
from ..io import zoo
from ..io.recipes import Recipe
from ..runtime import memory

T = TypeVar("T")

# -- cache bounds: what one server keeps for all of its sessions together -------------------
MAX_MODELS = 6  # models picked by spec (samples, torchvision architectures)
MAX_UPLOADS = 2  # uploaded model files (and, in a cache of their own, uploaded data files)
MAX_MODELS_KEPT = MAX_MODELS + MAX_UPLOADS  # models in memory, with their calibrations
MAX_CALIBRATIONS_PER_MODEL = 2  # gradients and activations, one per evaluation data
MAX_DATASETS = 8
MAX_PRUNERS = 16  # prepared strategies: scores and their sorted copy, ~2x the pruned weights
MAX_TABLES = 64  # small results: dense metrics, FLOP tables
# figures of one layer (weights, mask, histogram, channels) keyed by the layer's mask: moving a
# slider back to a value, or switching views, draws a kept figure instead of building it again
MAX_FIGURES = 64
# metrics of masked models (a few numbers each), per model, data and masks
MAX_EVALUATIONS = 256
# finished long runs (sensitivity tables, sweeps, training curves: small tables), enough for
# each session of a class to find its own again after a page switch or its own st.rerun
MAX_RESULTS = 64

# evaluate on every slider move only below this many parameters; above, on a button
AUTO_EVALUATE_PARAMS = 5_000_000
CALIBRATION_BATCHES = 4

# -- the server's torch thread policy ------------------------------------------------------
# Every session's work runs on one intra-op thread (override: PRUNELAB_APP_THREADS). The server
# already runs sessions in parallel threads, and the machine is often shared: with more intra-op
# threads, OpenMP's workers spin-wait for a core that another process holds, and a batch-16
# digits-cnn forward pass took 120-150 ms instead of about 1 ms. torch reads the count set here
# in every thread that starts torch work afterwards, so setting it once, when the app first
# imports this module (before any page does torch work), covers every script run.
APP_THREADS_ENV = "PRUNELAB_APP_THREADS"


def app_threads() -> int:
    """Intra-op threads for the app's torch work: ``PRUNELAB_APP_THREADS``, else 1."""
    text = os.environ.get(APP_THREADS_ENV, "1")
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    warnings.warn(
        f"{APP_THREADS_ENV} must be a whole number >= 1, got {text!r}; using 1 thread",
        stacklevel=2,
    )
    return 1


torch.set_num_threads(app_threads())


@dataclass(frozen=True)
class Loaded:
    """A cached model with the calibrations computed on it.

    A Calibration holds its model, so it lives here, in the model's own cache entry: when the
    model leaves the cache, its calibrations go with it instead of keeping it in memory.
    """

    bundle: zoo.ModelBundle
    calibrations: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    # Counted once per cached model, not on every rerun (every page shows them in the sidebar)
    @cached_property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.bundle.model.parameters())

    @cached_property
    def model_bytes(self) -> int:
        """Bytes of the parameters and buffers (:func:`prunelab.runtime.memory.model_bytes`)."""
        return memory.model_bytes(self.bundle.model)

    @cached_property
    def prunable(self) -> tuple[Target, ...]:
        """The model's prunable weights (:func:`prunelab.core.targets.targets`)."""
        return tuple(targets(self.bundle.model))


@dataclass(frozen=True)
class Choice:
    """What the sidebar chose: a model and the data to judge it on."""

    model_key: str
    loaded: Loaded
    data_spec: str | None
    data: object | None

    @property
    def bundle(self) -> zoo.ModelBundle:
        return self.loaded.bundle

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.bundle.model

    @property
    def parameters(self) -> int:
        return self.loaded.parameters


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


def upload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@st.cache_resource(max_entries=MAX_DATASETS, show_spinner="Loading the data...")
def load_data(spec: str) -> object:
    # a web visitor's spec: it may not download nor create folders on the server
    return data_lib.load(spec, split="test", untrusted=True)


_CALIBRATIONS_LOCK = threading.Lock()


def calibration(model_key: str, data_spec: str, _choice: Choice) -> Calibration:
    """The calibration of the chosen model on this data, made once and kept with the model.

    Making one is cheap: gradients and activations are computed on first use, then kept.
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


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Evaluating the dense model...")
def dense_metrics(model_key: str, data_spec: str, _choice: Choice) -> dict[str, float]:
    return evaluate(_choice.model, _choice.data)


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Counting FLOPs...")
def flop_table(model_key: str, _choice: Choice) -> pd.DataFrame:
    """Dense FLOPs per prunable layer, counted once per model."""
    return flops_by_layer(_choice.model, example_input=_choice.bundle.example_input())


@st.cache_data(max_entries=MAX_TABLES, show_spinner="Reading the weights...")
def weight_table(model_key: str, _choice: Choice) -> pd.DataFrame:
    """Statistics of each prunable weight, once per model (not on every rerun of the page)."""
    return weight_stats(_choice.model)


def effective_flops(table: pd.DataFrame, masks: Masks) -> tuple[int, int]:
    """(dense, effective) FLOPs of the prunable layers, from a dense table and the masks."""
    scaled = with_masks(table, masks)
    return int(scaled["flops"].sum()), int(scaled["effective_flops"].sum())


def digest(*tensors: torch.Tensor) -> str:
    """A short digest of tensors' values (a cache key for what is drawn from them)."""
    hashed = hashlib.blake2b(digest_size=12)
    for tensor in tensors:
        hashed.update(str(tuple(tensor.shape)).encode())
        hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hashed.hexdigest()


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


def out_dim(choice: Choice, fqn: str) -> int:
    """Which dimension of a target weight holds its output channels."""
    return next(t.out_dim for t in choice.loaded.prunable if t.fqn == fqn)


def masks_digest(masks: Masks) -> str:
    """A short digest of every mask to apply (names and values): what evaluation depends on."""
    hashed = hashlib.blake2b(digest_size=12)
    for fqn, mask in sorted(masks.all().items()):
        hashed.update(fqn.encode())
        hashed.update(digest(mask).encode())
    return hashed.hexdigest()


@st.cache_resource(max_entries=32, show_spinner=False)
def recipe_masks(model_key: str, key: str, _choice: Choice, _recipe: Recipe) -> Masks:
    """The masks of ``_recipe`` on the chosen model, kept per model and ``key`` (what the
    recipe was made from): moving the recipe builder's slider back, or rerunning the page,
    does not score the layers again."""
    del model_key, key  # the cache key
    return _recipe.masks(_choice.model)


def masks_misfit(choice: Choice, masks: Masks) -> str | None:
    """Why ``masks`` do not fit the chosen model (a name it lacks, another shape), or None.

    Masks made on one page travel to the others in session state; the model may have
    changed in between.
    """
    params = dict(choice.model.named_parameters())
    for fqn, mask in masks.all().items():
        if fqn not in params or tuple(params[fqn].shape) != tuple(mask.shape):
            return f"{fqn!r} {tuple(mask.shape)} is not a tensor of {choice.bundle.name}"
    return None


def evaluate_masks(choice: Choice, masks: Masks) -> dict[str, float]:
    """Metrics of the masked model (one forward pass over the data; dense outputs cached),
    kept per model, data and masks: a slider moved back to a value, or a recipe target seen
    before, finds its numbers instead of evaluating again."""
    return dict(_evaluated(choice.model_key, choice.data_spec, masks_digest(masks), choice, masks))


@st.cache_resource(max_entries=MAX_EVALUATIONS, show_spinner=False)
def _evaluated(
    model_key: str, data_spec: str | None, masks_key: str, _choice: Choice, _masks: Masks
) -> dict[str, float]:
    return evaluate(_choice.model, _choice.data, masks=_masks)


class _Results:
    """Finished long computations, shared by all sessions (bounded, oldest dropped first).

    Sessions run in threads of one server process, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: OrderedDict = OrderedDict()

    def get(self, key: tuple) -> object | None:
        with self._lock:
            if key not in self._store:
                return None
            self._store.move_to_end(key)
            return self._store[key]

    def put(self, key: tuple, value: object) -> None:
        with self._lock:
            self._store[key] = value
            self._store.move_to_end(key)
            while len(self._store) > MAX_RESULTS:
                self._store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._store)


@st.cache_resource(max_entries=1)
def _results() -> _Results:
    return _Results()


def remembered(key: tuple) -> object | None:
    """A finished result for ``key`` (settings of a sensitivity run or sweep), if any."""
    return _results().get(key)


def remember(key: tuple, value: object) -> object:
    _results().put(key, value)
    return value


def memory_note(choice: Choice) -> str:
    """What the chosen model costs in memory, and how many the server keeps, in a sentence."""
    model = memory.format_bytes(choice.loaded.model_bytes)
    scores = memory.format_bytes(2 * 4 * sum(t.numel for t in choice.loaded.prunable))
    return (
        f"This model takes {model} in memory (parameters + buffers); each prepared strategy "
        f"adds up to {scores} (importance scores and their sorted copy). Models are shared by "
        f"all sessions: the server keeps at most {MAX_MODELS_KEPT} models ({MAX_MODELS} picked "
        f"by name, {MAX_UPLOADS} uploads) and {MAX_PRUNERS} prepared strategies, and drops the "
        "least recently used first."
    )


def progress_bar(label: str):
    """A ``progress(fraction, message)`` callback drawing an ``st.progress`` bar."""
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {message}")

    return bar, report
