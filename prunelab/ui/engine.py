"""Cached engine calls for the app.

Models, datasets, calibrations and prepared Pruners are cached once for all sessions
(``st.cache_resource``): the engine never mutates a model it is given, so sharing is safe.
Each cached function is keyed by hashable settings only; objects arrive as ``_``-prefixed
arguments that Streamlit does not hash.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from .. import data as data_lib
from .. import zoo
from ..calibration import Calibration
from ..evaluate import evaluate, flops_by_layer, with_masks
from ..masks import Masks
from ..pruner import Pruner
from ..strategies import Strategy, get_strategy
from ..targets import targets

MAX_MODELS = 6
MAX_PRUNERS = 32
# evaluate on every slider move only below this many parameters; above, on a button
AUTO_EVALUATE_PARAMS = 5_000_000
CALIBRATION_BATCHES = 4


@dataclass(frozen=True)
class Choice:
    """What the sidebar chose: a model and the data to judge it on."""

    model_key: str
    bundle: zoo.ModelBundle
    data_spec: str | None
    data: object | None

    @property
    def model(self) -> torch.nn.Module:
        return self.bundle.model

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.bundle.model.parameters())


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading the model...")
def load_model(spec: str) -> zoo.ModelBundle:
    return zoo.load(spec)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading the uploaded model...")
def load_upload(digest: str, name: str, arch: str | None, trust: bool, _payload: bytes):
    """Load an uploaded file from a private temporary directory, deleted right after."""
    del digest  # the cache key; the bytes themselves are not hashed on every rerun
    suffix = Path(name).suffix or ".pt"
    with tempfile.TemporaryDirectory(prefix="prunelab-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(_payload)
        spec = f"file:{path}" + (f"?arch={arch}" if arch else "")
        bundle = zoo.load(spec, trust=trust)
    return bundle


def upload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@st.cache_resource(max_entries=8, show_spinner="Loading the data...")
def load_data(spec: str) -> object:
    return data_lib.load(spec, split="test")


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Computing gradients and activations...")
def calibration(model_key: str, data_spec: str, _choice: Choice) -> Calibration:
    return Calibration(_choice.model, _choice.data, batches=CALIBRATION_BATCHES, batch_size=64)


def build_strategy(name: str, options: tuple[tuple[str, object], ...]) -> Strategy:
    return get_strategy(name, **dict(options))


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
    chosen = build_strategy(strategy, options)
    cal = None
    if chosen.needs:
        if _choice.data is None or data_spec is None:
            raise ValueError(f"strategy {strategy!r} needs data: pick evaluation data first")
        cal = calibration(model_key, data_spec, _choice)
    return Pruner(_choice.model, chosen, targets=list(layers), calibration=cal, seed=seed)


@st.cache_data(max_entries=64, show_spinner="Evaluating the dense model...")
def dense_metrics(model_key: str, data_spec: str, _choice: Choice) -> dict[str, float]:
    return evaluate(_choice.model, _choice.data)


@st.cache_data(max_entries=MAX_MODELS, show_spinner="Counting FLOPs...")
def flop_table(model_key: str, _choice: Choice) -> pd.DataFrame:
    """Dense FLOPs per prunable layer, counted once per model."""
    return flops_by_layer(_choice.model, example_input=_choice.bundle.example_input())


def effective_flops(table: pd.DataFrame, masks: Masks) -> tuple[int, int]:
    """(dense, effective) FLOPs of the prunable layers, from a dense table and the masks."""
    scaled = with_masks(table, masks)
    return int(scaled["flops"].sum()), int(scaled["effective_flops"].sum())


def out_dim(choice: Choice, fqn: str) -> int:
    """Which dimension of a target weight holds its output channels."""
    return next(t.out_dim for t in targets(choice.model) if t.fqn == fqn)


def evaluate_masks(choice: Choice, masks: Masks) -> dict[str, float]:
    """Metrics of the masked model (one forward pass over the data; dense outputs cached)."""
    return evaluate(choice.model, choice.data, masks=masks)


@st.cache_resource
def _results() -> OrderedDict:
    """Finished long computations, shared by all sessions (bounded, oldest dropped first)."""
    return OrderedDict()


MAX_RESULTS = 16


def remembered(key: tuple) -> object | None:
    """A finished result for ``key`` (settings of a sensitivity run or sweep), if any."""
    store = _results()
    if key in store:
        store.move_to_end(key)
        return store[key]
    return None


def remember(key: tuple, value: object) -> object:
    store = _results()
    store[key] = value
    while len(store) > MAX_RESULTS:
        store.popitem(last=False)
    return value


def progress_bar(label: str):
    """A ``progress(fraction, message)`` callback drawing an ``st.progress`` bar."""
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {message}")

    return bar, report
