"""The app's side of the engine: the chosen model and data, digests of masks, thread policy.

What the sidebar chose travels to every page as a :class:`Choice`, around a cached model
(:class:`Loaded`). Masks are named in cache keys by :func:`masks_digest`. The caches themselves
are in :mod:`prunelab.ui.cache`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import streamlit as st
import torch

from ..core.masks import Masks
from ..core.targets import Target, targets
from ..io import zoo
from ..runtime import memory

__all__ = [
    "APP_THREADS_ENV",
    "AUTO_EVALUATE_PARAMS",
    "RAY_ADDRESS_ENV",
    "Choice",
    "Loaded",
    "app_threads",
    "digest",
    "masks_digest",
    "masks_misfit",
    "out_dim",
    "progress_bar",
    "sweep_executor",
    "upload_digest",
]

# evaluate on every slider move only below this many parameters; above, on a button
AUTO_EVALUATE_PARAMS = 5_000_000

# -- the server's torch thread policy ------------------------------------------------------
# Every session's work runs on one intra-op thread (override: PRUNELAB_APP_THREADS). The server
# already runs sessions in parallel threads, and the machine is often shared: with more intra-op
# threads, OpenMP's workers spin-wait for a core that another process holds, and a batch-16
# digits-cnn forward pass took 120-150 ms instead of about 1 ms. torch reads the count set here
# in every thread that starts torch work afterwards, so setting it once, when the app first
# imports this module (before any page does torch work), covers every script run.
APP_THREADS_ENV = "PRUNELAB_APP_THREADS"


# -- where the app's long runs evaluate ------------------------------------------------------
# A sensitivity analysis of a large model outgrows the app's machine: PRUNELAB_RAY_ADDRESS
# (HOST:PORT of a Ray head, or "local") sends its rows to a Ray cluster; the table, the
# checkpoint and the progress are the same as in the app's own process.
RAY_ADDRESS_ENV = "PRUNELAB_RAY_ADDRESS"


def sweep_executor():
    """The executor of the app's sensitivity runs: ``None`` (in the app's process) unless
    ``PRUNELAB_RAY_ADDRESS`` names a Ray cluster (``"local"``: one started by the first run).

    >>> RAY_ADDRESS_ENV
    'PRUNELAB_RAY_ADDRESS'
    """
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not address:
        return None
    return _ray_executor(None if address == "local" else address)


@functools.lru_cache(maxsize=4)
def _ray_executor(address: str | None):
    # one executor per address, staying connected: its actors serve the app's next run too
    # (a worker process takes seconds to start: it imports torch)
    from ..sweeps.executors import RayExecutor

    return RayExecutor(address=address, stay_connected=True)


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


def upload_digest(payload: bytes) -> str:
    """A short digest of an uploaded file's bytes (its cache key)."""
    return hashlib.sha256(payload).hexdigest()[:16]


def digest(*tensors: torch.Tensor) -> str:
    """A short digest of tensors' values (a cache key for what is drawn from them)."""
    hashed = hashlib.blake2b(digest_size=12)
    for tensor in tensors:
        hashed.update(str(tuple(tensor.shape)).encode())
        hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hashed.hexdigest()


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


def progress_bar(label: str):
    """A ``progress(fraction, message)`` callback drawing an ``st.progress`` bar."""
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {message}")

    return bar, report
