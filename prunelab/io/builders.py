"""Fresh models of the known architectures, and the bundle every loaded model comes in.

The sample models' architectures are in :mod:`.architectures`; torchvision's are built here
(:func:`torchvision_model`), seeded so that a randomly initialised model is the same every
time. :func:`skeleton` says how to build one without its weights, so that the memory check and
the class-count reader of :mod:`.modelfiles` can build it on the ``meta`` device. Both the zoo
(:mod:`.zoo`) and the user's files (:mod:`.modelfiles`) hand out a :class:`ModelBundle`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..runtime.files import bounded_repr
from .architectures import ARCHITECTURES
from .data import import_torchvision
from .specs import MAX_CLASSES, Spec

__all__ = [
    "TORCHVISION_CLASSES",
    "TORCHVISION_INPUT",
    "ModelBundle",
    "seeded",
    "skeleton",
    "torchvision_model",
]

TORCHVISION_INPUT = (3, 224, 224)
TORCHVISION_CLASSES = 1000  # torchvision's default num_classes (ImageNet)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model (in eval mode) and what is needed to run and judge it.

    Attributes:
        model: The model, in eval mode. Treat it as read-only: prunelab never modifies it.
        name: Short name, e.g. ``"digits-cnn"``.
        spec: The spec it was loaded from.
        input_shape: Shape of one input, without the batch dimension.
        input_dtype: Dtype of the input (int64 token ids for the sentiment LSTM).
        task: What the model does: ``"classification"`` or ``"language-model"`` (a causal
            LM: token ids in, next-token logits ``(batch, tokens, vocab)`` out).
        class_names: Names of the output classes, or None when unknown.
        default_data: Spec of the data to evaluate it on, or None.
        card: The model card (sample models), or None.
        tokenizer: The Hugging Face tokenizer of an ``hf:`` model (text <-> token ids), or
            None.

    >>> from prunelab.io.zoo import load
    >>> bundle = load("sample:digits-cnn")
    >>> bundle.input_shape, bundle.default_data, bundle.class_names[:2]
    ((1, 8, 8), 'sample:digits', ('0', '1'))
    """

    model: nn.Module = field(repr=False)
    name: str
    spec: str
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype = torch.float32
    task: str = "classification"
    class_names: tuple[str, ...] | None = None
    default_data: str | None = None
    card: Mapping[str, object] | None = field(default=None, repr=False, compare=False)
    tokenizer: object | None = field(default=None, repr=False, compare=False)

    def example_input(self, batch_size: int = 1, *, seed: int = 0) -> torch.Tensor:
        """A seeded random input batch of the right shape and dtype.

        Floats are uniform in [0, 1]; integer inputs are token ids below the vocabulary size
        of a Hugging Face model's config, else below the size of the model's first embedding.

        >>> from prunelab.io.zoo import load
        >>> load("sample:sentiment-lstm").example_input(batch_size=3).dtype
        torch.int64
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size, *self.input_shape)
        if self.input_dtype.is_floating_point:
            return torch.rand(shape, generator=generator).to(self.input_dtype)
        high = getattr(getattr(self.model, "config", None), "vocab_size", None)
        if not isinstance(high, int):
            embedding = next((m for m in self.model.modules() if isinstance(m, nn.Embedding)), None)
            high = embedding.num_embeddings if embedding is not None else 2
        return torch.randint(0, high, shape, generator=generator, dtype=self.input_dtype)


def seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with seed 0, leaving the caller's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return factory()


def _num_classes(spec: Spec) -> int | None:
    count = spec.integer("num_classes")
    if count is not None and not 1 <= count <= MAX_CLASSES:
        raise ValueError(
            f"num_classes={count} in {bounded_repr(spec.text)} must be from 1 to {MAX_CLASSES:,}"
        )
    return count


def torchvision_model(
    spec: Spec, arch: str, *, untrusted: bool = False
) -> tuple[nn.Module, tuple[str, ...] | None]:
    """A torchvision classification model and its class names (None without weights).

    Args:
        spec: The spec whose ``weights=`` and ``num_classes=`` options apply.
        arch: The torchvision architecture's name, e.g. ``"resnet18"``.
        untrusted: The spec comes from an untrusted place: pretrained weights that are not
            cached are refused instead of downloaded.

    Raises:
        ValueError: An unknown architecture or weights name, an out-of-range
            ``num_classes``, or pretrained weights that are neither cached nor downloadable.
    """
    torchvision = import_torchvision()
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = difflib.get_close_matches(arch, available, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown torchvision classification model {arch!r}{hint} "
            "(`prunelab models` lists them all)"
        )
    kwargs = {}
    if (num_classes := _num_classes(spec)) is not None:
        kwargs["num_classes"] = num_classes
    weights = spec.options.get("weights")
    if not weights or weights.lower() == "none":
        # random init, but the same random model every time
        model = seeded(lambda: torchvision.models.get_model(arch, weights=None, **kwargs))
        return model, None
    try:
        weights_enum = torchvision.models.get_model_weights(arch)[weights]
    except KeyError:
        known = torchvision.models.get_model_weights(arch)
        names = ", ".join(["DEFAULT", *(w.name for w in known)])
        raise ValueError(f"unknown weights {weights!r} for {arch}; available: {names}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
    if untrusted and not cached.is_file():
        raise ValueError(
            f"pretrained weights {weights_enum} are not cached in {cached.parent}, and a spec "
            "from an untrusted place (a file's provenance or a web form) downloads nothing"
        )
    try:
        model = seeded(lambda: torchvision.models.get_model(arch, weights=weights_enum, **kwargs))
    except ValueError:
        raise
    except Exception as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise ValueError(
            f"pretrained weights {weights_enum} for {arch} are not cached in {cache} and "
            f"cannot be downloaded here ({type(exc).__name__}: {exc}); use "
            f"torchvision:{arch} for a randomly initialised model"
        ) from exc
    categories = weights_enum.meta.get("categories")
    return model, tuple(categories) if categories else None


def skeleton(spec: Spec) -> tuple[Callable[[], nn.Module], int | None] | None:
    """How to build a sample or torchvision model without its weights, and its parameter
    count from torchvision's weights metadata where there is one; None for unknown models
    (the loader then says what is wrong)."""
    if spec.scheme == "sample":
        arch = ARCHITECTURES.get(spec.target)
        return None if arch is None else (arch.factory, None)
    torchvision = import_torchvision()
    if spec.target not in torchvision.models.list_models(module=torchvision.models):
        return None
    kwargs = {}
    if (num_classes := _num_classes(spec)) is not None:
        kwargs["num_classes"] = num_classes
    known = torchvision.models.get_model_weights(spec.target)
    count = next(iter(known)).meta.get("num_params") if len(known) else None

    def build() -> nn.Module:
        return torchvision.models.get_model(spec.target, weights=None, **kwargs)

    return build, count
