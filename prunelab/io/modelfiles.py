"""The user's own model files: state_dicts for a known architecture, ``.pt2`` programs,
pickled modules, and the trust that the last two need.

What each kind of file may do is in the docstring of :mod:`prunelab.io.zoo` (the ``file:``
spec), which calls :func:`load_file`. A state_dict or a program's weights go into a fresh
model of the architecture ``arch=`` names (:mod:`.builders`); a pickled module, or a program
run as exported, loads only with trust, since reading it runs code from the file
(:class:`TrustRequired` otherwise). Everything else is read with ``weights_only=True``, after a
first pass on the ``meta`` device (:mod:`prunelab.runtime.torchfiles`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..runtime import torchfiles as _torchfiles
from ..runtime.files import bounded_repr, one_line
from .architectures import ARCHITECTURES, sample_architecture_of
from .builders import (
    TORCHVISION_CLASSES,
    TORCHVISION_INPUT,
    ModelBundle,
    seeded,
    skeleton,
    torchvision_model,
)
from .data import check_file_size, digits_for
from .specs import Spec, parse_spec

__all__ = ["TrustRequired", "arch_spec", "load_file", "load_state_dict"]

_DATA_KEYS = {"x", "y", "class_names"}


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


def load_state_dict(
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


def arch_spec(spec: Spec) -> Spec:
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
    made = skeleton(arch)
    if made is None:
        return None
    try:
        with torch.device("meta"):
            default = seeded(made[0])
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
    arch = arch_spec(spec)
    if arch.scheme == "sample":
        return seeded(ARCHITECTURES[arch.target].factory), arch
    classes = None
    if state is not None and "num_classes" not in arch.options:
        classes = _num_classes_of(arch, state)
    if classes is not None:
        options = {**arch.options, "num_classes": str(classes)}
        arch = Spec(arch.scheme, arch.target, options, f"{arch.text}?num_classes={classes}")
    model, _ = torchvision_model(arch, arch.target)
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
        load_state_dict(model, weights, source=str(path), arch=arch.text)
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


def load_file(spec: Spec, *, trust: bool, untrusted: bool, limit: str | int | None) -> ModelBundle:
    """The bundle of a ``file:`` spec (what :func:`prunelab.io.zoo.load` does for files).

    Args:
        spec: The parsed ``file:`` spec, with its ``arch``, ``trust``, ``input`` and
            ``num_classes`` options.
        trust: The person running prunelab allows code from the file to run.
        untrusted: The spec comes from an untrusted place: its ``?trust=1`` is refused.
        limit: The memory limit that reading the archive must stay under.

    Raises:
        TrustRequired: A pickled module or a ``.pt2`` program without ``arch=``, not trusted.
        ValueError: A file that cannot be read, or a state_dict that does not fit.
    """
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
    load_state_dict(model, _as_state_dict(payload, path), source=str(path), arch=arch.text)
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
    load_state_dict(model, state, source=str(path), arch=arch.text)
    return _bundle_for(model, spec, path, arch)
