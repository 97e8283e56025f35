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

A bare sample name (``digits-cnn``) or an existing path is accepted as well.

Every model is checked against the memory limit before it is built (:func:`estimate_memory`,
:mod:`prunelab.memory`): one whose working set would not fit (a ``vit_h_14`` on a small
machine) is refused with the estimate and the limit, instead of failing halfway.

>>> bundle = load("sample:digits-mlp")
>>> bundle.model(bundle.example_input(batch_size=2)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..errors import InputError
from ..runtime import memory
from ..runtime import torchfiles as _torchfiles
from ..runtime.files import bounded_repr, one_line
from .architectures import ARCHITECTURES, sample_architecture_of
from .data import check_file_size, digits_for, import_torchvision
from .specs import MAX_CLASSES, Spec, parse_spec

__all__ = [
    "ModelBundle",
    "TrustRequired",
    "estimate_memory",
    "list_models",
    "load",
    "sample_dir",
    "sample_table",
]

SCHEMES = ("sample", "torchvision", "file")
TORCHVISION_INPUT = (3, 224, 224)
TORCHVISION_CLASSES = 1000  # torchvision's default num_classes (ImageNet)
_SAMPLE_ENV = "PRUNELAB_SAMPLE_MODELS"
_DATA_KEYS = {"x", "y", "class_names"}


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model (in eval mode) and what is needed to run and judge it.

    Attributes:
        model: The model, in eval mode. Treat it as read-only: prunelab never modifies it.
        name: Short name, e.g. ``"digits-cnn"``.
        spec: The spec it was loaded from.
        input_shape: Shape of one input, without the batch dimension.
        input_dtype: Dtype of the input (int64 token ids for the sentiment LSTM).
        task: What the model does; ``"classification"``.
        class_names: Names of the output classes, or None when unknown.
        default_data: Spec of the data to evaluate it on, or None.
        card: The model card (sample models), or None.

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

    def example_input(self, batch_size: int = 1, *, seed: int = 0) -> torch.Tensor:
        """A seeded random input batch of the right shape and dtype.

        Floats are uniform in [0, 1]; integer inputs are token ids below the size of the
        model's first embedding.

        >>> load("sample:sentiment-lstm").example_input(batch_size=3).dtype
        torch.int64
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size, *self.input_shape)
        if self.input_dtype.is_floating_point:
            return torch.rand(shape, generator=generator).to(self.input_dtype)
        embedding = next((m for m in self.model.modules() if isinstance(m, nn.Embedding)), None)
        high = embedding.num_embeddings if embedding is not None else 2
        return torch.randint(0, high, shape, generator=generator, dtype=self.input_dtype)


class TrustRequired(InputError):
    """A file that only loads by running code from it, asked for without trust.

    Front ends catch it to say how trust is given there (the CLI's ``--trust``, the app's
    checkbox when its operator allows trusted uploads). ``kind`` is ``"pickle"`` (a pickled
    object) or ``"program"`` (a ``torch.export`` program, whose weights alone load safely
    with ``arch=``).
    """

    def __init__(self, message: str, *, kind: str = "pickle") -> None:
        super().__init__(message)
        self.kind = kind


def _seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with seed 0, leaving the caller's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return factory()


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


def _load_sample(spec: Spec) -> ModelBundle:
    spec.check_options([])
    arch = ARCHITECTURES.get(spec.target)
    if arch is None:
        raise ValueError(
            f"unknown sample model {spec.target!r}; available: "
            f"{', '.join('sample:' + n for n in ARCHITECTURES)}"
        )
    path = sample_dir() / f"{arch.name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"weights of sample:{arch.name} missing ({path}); rebuild them with "
            "`python sample_models/build.py`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _seeded(arch.factory)
    _load_state_dict(model, state, source=str(path), arch=f"sample:{arch.name}")
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
    """One row per sample model: spec, input, parameters, test accuracy, description.

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
                "data": arch.data,
                "description": arch.description,
            }
        )
    return pd.DataFrame(rows)


# -- torchvision ---------------------------------------------------------------------------


def _num_classes(spec: Spec) -> int | None:
    count = spec.integer("num_classes")
    if count is not None and not 1 <= count <= MAX_CLASSES:
        raise ValueError(
            f"num_classes={count} in {bounded_repr(spec.text)} must be from 1 to {MAX_CLASSES:,}"
        )
    return count


def _torchvision_model(
    spec: Spec, arch: str, *, untrusted: bool = False
) -> tuple[nn.Module, tuple[str, ...] | None]:
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
        model = _seeded(lambda: torchvision.models.get_model(arch, weights=None, **kwargs))
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
        model = _seeded(lambda: torchvision.models.get_model(arch, weights=weights_enum, **kwargs))
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


def _load_torchvision(spec: Spec, *, untrusted: bool = False) -> ModelBundle:
    spec.check_options(["weights", "num_classes", "input"])
    model, class_names = _torchvision_model(spec, spec.target, untrusted=untrusted)
    shape = spec.shape("input") or TORCHVISION_INPUT
    return ModelBundle(
        model=model.eval(),
        name=spec.target,
        spec=spec.text,
        input_shape=shape,
        class_names=class_names,
        default_data=digits_for(shape),
    )


# -- files ---------------------------------------------------------------------------------


def _load_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, arch: str
) -> None:
    """``model.load_state_dict(state)`` with an error that names the keys that do not fit."""
    _check_state_fits(model, state, source=source, arch=arch)
    model.load_state_dict(state, strict=True)


def _check_state_fits(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    arch: str,
    preview: bool = False,
) -> None:
    """Raise naming the keys of ``state`` that do not fit ``model``. With ``preview``, ``state``
    is the file read onto the ``meta`` device (checked before its tensors are read), so its
    tensors having no values is expected there."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [bounded_repr(k, limit=60).strip("'") for k in state if k not in expected]
    mismatched = [
        f"{k} (file {_shape(state[k])}, model {_shape(expected[k])})"
        for k in expected
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    # other float precisions convert on load; integers, bools or complex numbers are no weights
    wrong_dtypes = [
        f"{k} (file {str(state[k].dtype).removeprefix('torch.')}, model "
        f"{str(expected[k].dtype).removeprefix('torch.')})"
        for k in expected
        if k in state
        and isinstance(state[k], torch.Tensor)
        and expected[k].is_floating_point()
        and not state[k].is_floating_point()
    ]
    # a meta tensor has no values, a sparse one another layout: load_state_dict fails on both
    no_values = [
        k
        for k in expected
        if not preview and isinstance(state.get(k), torch.Tensor) and state[k].is_meta
    ]
    not_dense = [
        k
        for k in expected
        if isinstance(state.get(k), torch.Tensor) and state[k].layout != torch.strided
    ]
    problems = []
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("dtype mismatches (floating-point weights expected)", wrong_dtypes),
        ("tensors on the meta device (shapes without values)", no_values),
        ("sparse tensors (dense weights expected)", not_dense),
    ):
        if keys:
            more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
            problems.append(f"{label}: {', '.join(keys[:4])}{more}")
    if problems:
        raise ValueError(f"state_dict in {source} does not fit {arch}: " + "; ".join(problems))


def _shape(tensor: torch.Tensor) -> str:
    dims = "x".join(map(str, tensor.shape[:8])) or "scalar"
    return dims + "x..." if tensor.ndim > 8 else dims


def _fold_pruned(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # A state_dict of a model from prunelab.apply / torch.nn.utils.prune holds name_orig and
    # name_mask; the architecture expects name = name_orig * name_mask.
    folded = dict(state)
    for key in [k for k in state if k.endswith("_orig")]:
        base = key.removesuffix("_orig")
        if f"{base}_mask" in state:
            folded[base] = state[key] * state[f"{base}_mask"]
            del folded[key], folded[f"{base}_mask"]
    return folded


def _as_state_dict(payload: object, path: Path) -> dict[str, torch.Tensor] | None:
    if not isinstance(payload, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        odd = sorted({type(k).__name__ for k in payload if not isinstance(k, str)})
        if odd:
            raise ValueError(
                "a state_dict's keys are parameter names (strings); this one also has keys "
                f"of type {', '.join(odd)}"
            )
        return _fold_pruned(payload)
    return None


def _arch_spec(spec: Spec) -> Spec:
    """The spec of the architecture named by ``arch=`` (with ``num_classes`` given beside it)."""
    arch_text = spec.options["arch"]
    unknown = ValueError(
        f"unknown architecture arch={arch_text!r}; give sample:<name> "
        f"({', '.join(ARCHITECTURES)}) or torchvision:<arch>"
    )
    try:
        arch = parse_spec(
            arch_text, schemes=("sample", "torchvision"), samples=tuple(ARCHITECTURES)
        )
    except ValueError:
        raise unknown from None
    if arch.scheme == "sample":
        if arch.target not in ARCHITECTURES:
            raise unknown
        return arch
    # num_classes=... given beside arch= belongs to the torchvision architecture
    options = {k: v for k, v in spec.options.items() if k == "num_classes"}
    arch = Spec(arch.scheme, arch.target, {**options, **arch.options}, arch_text)
    arch.check_options(["num_classes"])
    return arch


def _num_classes_of(arch: Spec, state: Mapping[str, torch.Tensor]) -> int | None:
    """The number of classes a state_dict was trained for, read off its output layers.

    The architecture is built with its default number of classes on the ``meta`` device
    (no weights allocated); the tensors whose first dimension is that number in the model,
    and another number in the file, are the classifier's rows: their size is the answer.
    None when nothing tells (then the default, or ``num_classes=`` given, applies).
    """
    made = _skeleton(arch)
    if made is None:
        return None
    try:
        with torch.device("meta"):
            default = _seeded(made[0])
    except Exception:  # builders that compute with tensors cannot run on meta
        return None
    classes = getattr(default, "num_classes", None) or TORCHVISION_CLASSES
    found = {
        int(state[key].shape[0])
        for key, expected in default.state_dict().items()
        if isinstance(state.get(key), torch.Tensor)
        and expected.ndim >= 1
        and expected.shape[0] == classes
        and state[key].ndim == expected.ndim
        and state[key].shape[1:] == expected.shape[1:]
        and state[key].shape[0] not in (0, classes)
    }
    return found.pop() if len(found) == 1 else None


def _arch_model(
    spec: Spec, state: Mapping[str, torch.Tensor] | None = None
) -> tuple[nn.Module, Spec]:
    """A fresh model of the architecture named by ``arch=``, and the arch's own spec.

    For a torchvision architecture without ``num_classes=``, the number of classes is read
    from ``state`` where its classifier shows it (:func:`_num_classes_of`).
    """
    arch = _arch_spec(spec)
    if arch.scheme == "sample":
        return _seeded(ARCHITECTURES[arch.target].factory), arch
    classes = None
    if state is not None and "num_classes" not in arch.options:
        classes = _num_classes_of(arch, state)
    if classes is not None:
        options = {**arch.options, "num_classes": str(classes)}
        arch = Spec(arch.scheme, arch.target, options, f"{arch.text}?num_classes={classes}")
    model, _ = _torchvision_model(arch, arch.target)
    return model, arch


def _guess_input(model: nn.Module) -> tuple[tuple[int, ...], torch.dtype]:
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return (16,), torch.int64
        if isinstance(module, nn.Linear):
            return (module.in_features,), torch.float32
        if isinstance(module, nn.Conv1d):
            return (module.in_channels, 64), torch.float32
        if isinstance(module, nn.Conv2d):
            side = 224 if module.in_channels == 3 else 28
            return (module.in_channels, side, side), torch.float32
        if isinstance(module, nn.Conv3d):
            return (module.in_channels, 16, 112, 112), torch.float32
    raise ValueError("cannot tell the model's input shape; give it as input=CxHxW in the spec")


def _bundle_for(model: nn.Module, spec: Spec, path: Path, arch: Spec | None) -> ModelBundle:
    shape, dtype = None, torch.float32
    class_names = default_data = None
    sample = None
    if arch is not None and arch.scheme == "sample":
        sample = ARCHITECTURES[arch.target]
    elif arch is None:
        sample = sample_architecture_of(model)
    if sample is not None:
        shape, dtype = sample.input_shape, sample.input_dtype
        class_names, default_data = sample.class_names, sample.data
    elif arch is not None:
        shape = TORCHVISION_INPUT
    if (given := spec.shape("input")) is not None:
        shape = given
    if shape is None:
        shape, dtype = _guess_input(model)
    if arch is not None and arch.scheme == "torchvision":
        default_data = digits_for(shape)
    return ModelBundle(
        model=model.eval(),
        name=path.stem,
        spec=spec.text,
        input_shape=tuple(shape),
        input_dtype=dtype,
        class_names=class_names,
        default_data=default_data,
    )


def _load_program(spec: Spec, path: Path, *, trust: bool, limit: str | int | None) -> ModelBundle:
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"cannot read {path} as a torch.export program: it is not a zip archive, as "
            "torch.export.save writes"
        )
    if "arch" in spec.options:
        # only the weights are needed: read them without torch.export.load (which runs code)
        try:
            weights = _torchfiles.pt2_weights(path, limit=limit)
        except _torchfiles.ArchiveError as exc:
            raise ValueError(f"cannot read the weights of {path} safely: {exc}") from exc
        model, arch = _arch_model(spec, weights)
        _load_state_dict(model, weights, source=str(path), arch=arch.text)
        return _bundle_for(model, spec, path, arch)
    if not trust:
        raise TrustRequired(
            f"{path.name} is a torch.export program, and loading it runs code from the file: "
            "give --trust (spec ?trust=1, trust=True) only if you trust it; to read only its "
            "weights, which runs nothing, add ?arch= naming its architecture "
            f"(file:{spec.target}?arch=sample:digits-cnn or ?arch=torchvision:resnet18)",
            kind="program",
        )
    _torchfiles.check_archive(path, "model file", limit=limit)
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a torch.export program: {one_line(exc)}") from exc
    user_inputs = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(user_inputs) != 1 or "val" not in user_inputs[0].meta:
        raise ValueError(
            f"{path} takes {len(user_inputs)} inputs; prunelab runs programs with exactly one"
        )
    value = user_inputs[0].meta["val"]
    if value.ndim == 0 or not isinstance(value.shape[0], torch.SymInt):
        raise ValueError(
            f"{path} was exported with a fixed batch size ({value.shape[0] if value.ndim else 0}"
            "); export with a dynamic batch dimension, e.g. dynamic_shapes={'x': {0: "
            "torch.export.Dim('batch')}}, so that it can be evaluated in batches"
        )
    return ModelBundle(
        model=program.module(),
        name=path.stem,
        spec=spec.text,
        input_shape=spec.shape("input") or tuple(int(d) for d in value.shape[1:]),
        input_dtype=value.dtype,
    )


def _read_trusted(path: Path, limit: str | int | None) -> object:
    _torchfiles.check_archive(path, "model file", limit=limit)
    return torch.load(path, map_location="cpu", weights_only=False)


def _load_file(spec: Spec, *, trust: bool, untrusted: bool, limit: str | int | None) -> ModelBundle:
    spec.check_options(["arch", "trust", "input", "num_classes"])
    if untrusted and spec.flag("trust"):
        raise ValueError(
            f"{spec.text!r} asks to trust its file, but the spec comes from an untrusted "
            "place (a file's provenance or a web form): trust is given only by the person "
            "running prunelab (trust=True, CLI --trust)"
        )
    trust = trust or spec.flag("trust")
    path = check_file_size(Path(spec.target).expanduser(), "model file")
    if path.suffix == ".pt2":
        return _load_program(spec, path, trust=trust, limit=limit)
    try:
        preview = _torchfiles.peek(path, "model file", limit=limit)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"cannot read {path}: not a file written by torch.save or torch.export.save"
            ) from exc
        if not trust:
            raise TrustRequired(
                f"{path} holds a pickled Python object (e.g. a whole nn.Module), and unpickling "
                "can run arbitrary code; load it only if you trust the file: trust=True "
                "(CLI --trust, spec ?trust=1), or save a state_dict and give arch=..."
            ) from exc
        return _from_payload(_read_trusted(path, limit), spec, path)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(
            f"cannot read {path}: not a complete file written by torch.save (truncated, "
            f"corrupted, or another kind of zip?): {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    model, arch = _from_payload(preview, spec, path, check_only=True)
    try:
        payload = _torchfiles.load(path)
    except Exception as exc:
        raise ValueError(
            f"cannot read {path}: not a complete file written by torch.save (truncated, "
            f"corrupted, or another kind of zip?): {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    _load_state_dict(model, _as_state_dict(payload, path), source=str(path), arch=arch.text)
    return _bundle_for(model, spec, path, arch)


def _from_payload(payload: object, spec: Spec, path: Path, *, check_only: bool = False):
    """The bundle of a file's contents; with ``check_only`` (contents on the meta device),
    the checked architecture ``(model, arch spec)`` to load the real contents into."""
    if isinstance(payload, nn.Module):
        if "arch" in spec.options:
            raise ValueError(f"{path} holds a whole module; arch= is only for state_dicts")
        return _bundle_for(payload, spec, path, None)
    if isinstance(payload, Mapping) and "x" in payload and set(payload) <= _DATA_KEYS:
        raise ValueError(
            f"{path} looks like a data file (tensors {', '.join(sorted(payload))}), not a "
            f"model: use it as data, e.g. --data file:{path}"
        )
    state = _as_state_dict(payload, path)
    if state is None:
        found = (
            bounded_repr(list(payload)[:6])
            if isinstance(payload, Mapping)
            else type(payload).__name__
        )
        raise ValueError(f"{path} holds neither a state_dict nor a module (found {found})")
    if "arch" not in spec.options:
        raise ValueError(
            f"{path} holds a state_dict; say which architecture it belongs to with arch=, "
            f"e.g. file:{path}?arch=sample:digits-cnn or ?arch=torchvision:resnet18"
        )
    model, arch = _arch_model(spec, state)
    if check_only:
        _check_state_fits(model, state, source=str(path), arch=arch.text, preview=True)
        return model, arch
    _load_state_dict(model, state, source=str(path), arch=arch.text)
    return _bundle_for(model, spec, path, arch)


# -- memory --------------------------------------------------------------------------------


def _skeleton(spec: Spec) -> tuple[Callable[[], nn.Module], int | None] | None:
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


def _estimate_built(spec: Spec, *, what: str) -> memory.MemoryEstimate | None:
    made = _skeleton(spec)
    if made is None:
        return None
    build, count = made
    try:
        # on the meta device a model has shapes and dtypes but no storage: counting is free
        with torch.device("meta"):
            skeleton = _seeded(build)
    except Exception:  # builders that compute with tensors (torchvision's regnets) need data
        return None if count is None else memory.estimate_count(count, what=what)
    return memory.estimate(skeleton, what=what)


def _estimate(spec: Spec) -> memory.MemoryEstimate | None:
    if spec.scheme != "file":
        return _estimate_built(spec, what=spec.text)
    path = Path(spec.target).expanduser()
    if not path.is_file():
        return None
    found = memory.estimate_file(path, what=spec.text)
    if "arch" in spec.options:
        try:
            built = _estimate_built(_arch_spec(spec), what=spec.text)
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
    return _estimate(parse_spec(spec, schemes=SCHEMES, samples=tuple(ARCHITECTURES)))


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
        spec: ``sample:<name>``, ``torchvision:<arch>[?weights=DEFAULT&num_classes=N]`` or
            ``file:<path>[?arch=...&trust=1&input=CxHxW]``.
        trust: Allow unpickling a whole module from a file (runs code from the file).
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
    parsed = parse_spec(spec, schemes=SCHEMES, samples=tuple(ARCHITECTURES))
    need = _estimate(parsed)
    if need is not None:
        memory.check_fits(need, limit=memory_limit)
    if parsed.scheme == "sample":
        return _load_sample(parsed)
    if parsed.scheme == "torchvision":
        return _load_torchvision(parsed, untrusted=untrusted)
    return _load_file(parsed, trust=trust, untrusted=untrusted, limit=memory_limit)


def list_models(*, torchvision: bool = True) -> list[str]:
    """Specs of the known models: the samples, then torchvision's classification models.

    torchvision models are left out when ``torchvision=False`` or when torchvision cannot be
    imported (``prunelab.io.data.import_torchvision()`` says why).

    >>> list_models(torchvision=False)[0]
    'sample:digits-mlp'
    """
    specs = [f"sample:{name}" for name in ARCHITECTURES]
    if torchvision:
        try:
            tv = import_torchvision()
        except ValueError:
            return specs
        specs += [f"torchvision:{n}" for n in tv.models.list_models(module=tv.models)]
    return specs
