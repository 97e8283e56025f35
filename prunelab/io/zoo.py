"""Models by spec: the shipped samples, torchvision architectures, and the user's own files.

Specs:

* ``sample:<name>`` -- a trained model from ``sample_models/`` (see :func:`list_models`).
* ``torchvision:<arch>`` -- a torchvision classification architecture, randomly initialised
  (seeded, offline). Options: ``weights=DEFAULT`` (or another weights name) for pretrained
  weights when cached or downloadable, ``num_classes=<n>``, ``input=3x224x224``.
* ``file:<path>`` -- the user's model:

  - a ``torch.export`` program (``.pt2``), run as exported (``arch=`` loads its weights
    into a known architecture instead, so that its layers can be pruned);
  - a state_dict saved with ``torch.save`` plus ``arch=<sample or torchvision name>``
    (``?arch=sample:digits-cnn``, ``?arch=torchvision:resnet18&num_classes=10``);
  - a pickled ``nn.Module`` -- only with ``trust=True`` (``?trust=1``, CLI ``--trust``), since
    unpickling can run arbitrary code. By default files are read with ``weights_only=True``.

  Files larger than ``prunelab.io.data.MAX_FILE_BYTES`` (200 MiB, the app's upload limit) are
  refused before they are read. A state_dict must fit its architecture: missing, unexpected
  or wrongly shaped keys are an error naming them. Floating-point weights of another
  precision (float16, bfloat16, float64) are converted to the model's dtype, as
  ``load_state_dict`` does; integer, bool or complex tensors where the model has floating-point
  weights are an error (they are not weights of this architecture, or are quantized). NaN or
  inf weights load; pruning them fails with a clear error naming the layer.
  ``input=CxHxW`` sets the input shape where it cannot be known from the file.

* ``hf:<directory>`` or ``hf:<hub id>`` -- a Hugging Face ``transformers`` model (see
  :mod:`.hf`): a causal language model by default (``task=causal-lm``), its tokenizer in
  :attr:`ModelBundle.tokenizer`.

A bare sample name (``digits-cnn``) or an existing path is accepted as well.

Every model is checked against the memory limit before it is built (:func:`estimate_memory`,
:mod:`prunelab.memory`): one whose working set would not fit (a ``vit_h_14`` on a small
machine) is refused with the estimate and the limit, instead of failing halfway.

>>> bundle = load("sample:digits-mlp")
>>> bundle.model(bundle.example_input(batch_size=2)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cache
from pathlib import Path

import pandas as pd
import torch

from ..runtime import memory
from .architectures import ARCHITECTURES, LANGUAGE_MODELS
from .builders import TORCHVISION_INPUT, ModelBundle, seeded, skeleton, torchvision_model
from .data import digits_for, import_torchvision
from .hf import estimate_hf, load_hf
from .modelfiles import TrustRequired, arch_spec, load_file, load_state_dict
from .specs import Spec, parse_spec

__all__ = [
    "SAMPLES",
    "ModelBundle",
    "TrustRequired",
    "estimate_memory",
    "list_models",
    "load",
    "sample_dir",
    "sample_table",
]

SCHEMES = ("sample", "torchvision", "file", "hf")
SAMPLES = (*ARCHITECTURES, *LANGUAGE_MODELS)  # names of the sample models, listing order
_SAMPLE_ENV = "PRUNELAB_SAMPLE_MODELS"


# -- sample models -------------------------------------------------------------------------


def sample_dir() -> Path:
    """The directory holding the sample models' weights and cards.

    Looked up in order: ``$PRUNELAB_SAMPLE_MODELS``; ``prunelab/_sample_models`` (where a
    wheel installs them); ``sample_models/`` beside the package (a source checkout).

    Raises:
        FileNotFoundError: If none of them holds the sample weights.
    """
    package = Path(__file__).resolve().parents[1]  # prunelab/
    candidates = [package / "_sample_models", package.parent / "sample_models"]
    if os.environ.get(_SAMPLE_ENV):
        candidates.insert(0, Path(os.environ[_SAMPLE_ENV]))
    for candidate in candidates:
        if any(candidate.glob("*.pt")):
            return candidate
    raise FileNotFoundError(
        "sample model weights not found in "
        + ", ".join(str(c) for c in candidates)
        + "; rebuild them with `python sample_models/build.py`"
    )


@cache
def _card(name: str) -> dict:
    path = sample_dir() / f"{name}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _load_language_model(spec: Spec) -> ModelBundle:
    sample = LANGUAGE_MODELS[spec.target]
    folder = sample_dir() / sample.name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"weights of sample:{sample.name} missing ({folder}); rebuild them with "
            f"`python sample_models/build.py --only {sample.name}`"
        )
    # the same loading code as a user's hf:<directory>
    bundle = load_hf(
        parse_spec(f"hf:{folder}", schemes=("hf",)),
        name=sample.name,
        default_data=sample.data,
        card=_card(sample.name) or None,
    )
    return dataclasses.replace(bundle, spec=f"sample:{sample.name}")


def _load_sample(spec: Spec) -> ModelBundle:
    spec.check_options([])
    if spec.target in LANGUAGE_MODELS:
        return _load_language_model(spec)
    arch = ARCHITECTURES.get(spec.target)
    if arch is None:
        raise ValueError(
            f"unknown sample model {spec.target!r}; available: "
            f"{', '.join('sample:' + n for n in SAMPLES)}"
        )
    path = sample_dir() / f"{arch.name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"weights of sample:{arch.name} missing ({path}); rebuild them with "
            "`python sample_models/build.py`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = seeded(arch.factory)
    load_state_dict(model, state, source=str(path), arch=f"sample:{arch.name}")
    return ModelBundle(
        model=model.eval(),
        name=arch.name,
        spec=f"sample:{arch.name}",
        input_shape=arch.input_shape,
        input_dtype=arch.input_dtype,
        class_names=arch.class_names,
        default_data=arch.data,
        card=_card(arch.name) or None,
    )


def sample_table() -> pd.DataFrame:
    """One row per sample model: spec, input, parameters, test accuracy (classifiers) or
    test perplexity (language models), data, description.

    Read from the model cards; no weights are loaded.
    """
    rows = []
    for name, arch in ARCHITECTURES.items():
        card = _card(name)
        dtype = str(arch.input_dtype).removeprefix("torch.")
        accuracy = card.get("test_accuracy")
        rows.append(
            {
                "spec": f"sample:{name}",
                "input": "x".join(map(str, arch.input_shape)) + f" {dtype}",
                "params": card.get("parameters"),
                "test acc": f"{accuracy:.2%}" if isinstance(accuracy, float) else "-",
                "test ppl": "-",
                "data": arch.data,
                "description": arch.description,
            }
        )
    for name, sample in LANGUAGE_MODELS.items():
        card = _card(name)
        perplexity = card.get("test_perplexity")
        rows.append(
            {
                "spec": f"sample:{name}",
                "input": f"{sample.context} int64",
                "params": card.get("parameters"),
                "test acc": "-",
                "test ppl": f"{perplexity:.2f}" if isinstance(perplexity, float) else "-",
                "data": sample.data,
                "description": sample.description,
            }
        )
    return pd.DataFrame(rows)


# -- torchvision ---------------------------------------------------------------------------


def _load_torchvision(spec: Spec, *, untrusted: bool = False) -> ModelBundle:
    spec.check_options(["weights", "num_classes", "input"])
    model, class_names = torchvision_model(spec, spec.target, untrusted=untrusted)
    shape = spec.shape("input") or TORCHVISION_INPUT
    return ModelBundle(
        model=model.eval(),
        name=spec.target,
        spec=spec.text,
        input_shape=shape,
        class_names=class_names,
        default_data=digits_for(shape),
    )


# -- memory --------------------------------------------------------------------------------


def _estimate_built(spec: Spec, *, what: str) -> memory.MemoryEstimate | None:
    made = skeleton(spec)
    if made is None:
        return None
    build, count = made
    try:
        # on the meta device a model has shapes and dtypes but no storage: counting is free
        with torch.device("meta"):
            empty = seeded(build)
    except Exception:  # builders that compute with tensors (torchvision's regnets) need data
        return None if count is None else memory.estimate_count(count, what=what)
    return memory.estimate(empty, what=what)


def _estimate(spec: Spec) -> memory.MemoryEstimate | None:
    if spec.scheme == "hf":
        return estimate_hf(spec)
    if spec.scheme == "sample" and spec.target in LANGUAGE_MODELS:
        return estimate_hf(parse_spec(f"hf:{sample_dir() / spec.target}", schemes=("hf",)))
    if spec.scheme != "file":
        return _estimate_built(spec, what=spec.text)
    path = Path(spec.target).expanduser()
    if not path.is_file():
        return None
    found = memory.estimate_file(path, what=spec.text)
    if "arch" in spec.options:
        try:
            built = _estimate_built(arch_spec(spec), what=spec.text)
        except ValueError:
            return found
        if built is not None and built.working_bytes > found.working_bytes:
            return built
    return found


def estimate_memory(spec: str) -> memory.MemoryEstimate | None:
    """What loading and pruning ``spec`` takes, worked out without loading it.

    Sample and torchvision models are built on the ``meta`` device (no weights allocated) to
    count their parameters and buffers; files are judged by their size. See
    :mod:`prunelab.memory` for the working copies counted.

    Returns:
        The estimate, or None for a spec that cannot be estimated (an unknown model or a
        missing file: :func:`load` says what is wrong with it).

    >>> need = estimate_memory("torchvision:vit_h_14")
    >>> need.elements, memory.format_bytes(need.working_bytes)
    (632045800, '11.8 GiB')
    """
    return _estimate(parse_spec(spec, schemes=SCHEMES, samples=SAMPLES))


# -- entry points --------------------------------------------------------------------------


def load(
    spec: str,
    *,
    trust: bool = False,
    memory_limit: str | int | None = None,
    untrusted: bool = False,
) -> ModelBundle:
    """Load a model by spec (see the module docstring for the accepted specs).

    Args:
        spec: ``sample:<name>``, ``torchvision:<arch>[?weights=DEFAULT&num_classes=N]``,
            ``file:<path>[?arch=...&trust=1&input=CxHxW]`` or
            ``hf:<directory or hub id>[?task=causal-lm&context=N&trust_remote_code=1]``.
        trust: Allow unpickling a whole module from a file, or a Hugging Face model's own
            code (both run code from the files).
        memory_limit: Refuse models whose working set (:func:`estimate_memory`) is larger:
            bytes or a size such as ``"16GiB"``; default ``$PRUNELAB_MEMORY_LIMIT``, else the
            memory available now; ``"off"`` for no check.
        untrusted: The spec itself comes from an untrusted place (a file's provenance, a web
            form): its options cannot grant trust (``?trust=1`` is refused) nor download
            pretrained weights that are not cached.

    Returns:
        A :class:`ModelBundle` with the model in eval mode.

    Raises:
        ValueError: Unknown model or option, unreadable file, a state_dict that does not fit
            its architecture, a pickle without ``trust``, unavailable torchvision/weights, or
            a model that needs more memory than the limit (checked before it is built).
        FileNotFoundError: A file that does not exist.

    >>> load("sample:digits-resnet").input_shape
    (1, 8, 8)
    """
    parsed = parse_spec(spec, schemes=SCHEMES, samples=SAMPLES)
    need = _estimate(parsed)
    if need is not None:
        memory.check_fits(need, limit=memory_limit)
    if parsed.scheme == "sample":
        return _load_sample(parsed)
    if parsed.scheme == "torchvision":
        return _load_torchvision(parsed, untrusted=untrusted)
    if parsed.scheme == "hf":
        return load_hf(parsed, trust=trust, untrusted=untrusted)
    return load_file(parsed, trust=trust, untrusted=untrusted, limit=memory_limit)


def list_models(*, torchvision: bool = True) -> list[str]:
    """Specs of the known models: the samples, then torchvision's classification models.

    torchvision models are left out when ``torchvision=False`` or when torchvision cannot be
    imported (``prunelab.io.data.import_torchvision()`` says why).

    >>> list_models(torchvision=False)[0]
    'sample:digits-mlp'
    """
    specs = [f"sample:{name}" for name in SAMPLES]
    if torchvision:
        try:
            tv = import_torchvision()
        except ValueError:
            return specs
        specs += [f"torchvision:{n}" for n in tv.models.list_models(module=tv.models)]
    return specs
