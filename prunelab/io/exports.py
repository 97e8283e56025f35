"""Hand over the pruned model: a baked state_dict, a ``torch.export`` program, or sparse.

Formats:

* ``state_dict``: the masked model's weights with the zeros written in (same architecture,
  same shapes), for ``model.load_state_dict`` or ``prunelab.zoo`` with ``arch=``.
* ``pt2``: a ``torch.export`` program of the *shrunk* model when the masks are channel
  masks (else of the masked model), with a dynamic batch dimension; loads with
  ``torch.export.load`` and with ``prunelab.io.zoo.load("file:model.pt2")``. A Hugging Face
  model is exported as token ids -> logits (no key-value cache).
* ``sparse``: the masked weights in the smallest of COO/CSR/bitmask overall
  (:func:`prunelab.analysis.save_sparse`), read back with :func:`prunelab.analysis.load_sparse`.
* ``hf``: for Hugging Face models only, a ``save_pretrained`` *directory* of the model with
  the zeros written in (and its tokenizer, when given), for ``from_pretrained`` and
  ``prunelab.io.zoo.load("hf:<dir>")``. Tied weights (GPT-2's output head and embedding
  table) stay tied; :func:`export_bytes` gives it as a zip archive.

Files are written atomically (temp file beside the target, then rename), so an interrupted
export never leaves a partial file. :func:`export_bytes` builds the same bytes in memory (the
app's download buttons use it), and :func:`load_snippet` gives the few lines that load a file.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from torch import nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
>>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
>>> with tempfile.TemporaryDirectory() as folder:
...     result = export(net, masks, Path(folder) / "net.pt", format="state_dict")
...     state = torch.load(result.path, weights_only=True)
>>> result.model, int((state["0.weight"] == 0).sum()) == int((~masks["0.weight"]).sum())
('masked', True)
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch import nn

from ..analysis.storage import LAYOUTS, compression, sparse_payload
from ..core.apply import apply, bake
from ..core.masks import Masks, check_masks
from ..runtime.files import atomic_write
from ..shrinking import shrink
from .architectures import LANGUAGE_MODELS
from .hf import check_ties, is_hf_model

__all__ = ["FORMATS", "Exported", "export", "export_bytes", "load_snippet"]

FORMATS = ("state_dict", "pt2", "sparse", "hf")
SUFFIXES = {"state_dict": ".pt", "pt2": ".pt2", "sparse": ".sparse.pt", "hf": ""}


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote.

    Attributes:
        path: The file, or the directory of ``"hf"`` (None for :func:`export_bytes`).
        format: ``"state_dict"``, ``"pt2"``, ``"sparse"`` or ``"hf"``.
        model: Which model went in: ``"shrunk"`` (channels removed) or ``"masked"``.
        size: Bytes written.
        note: Why this model (e.g. why a pt2 is not shrunk), or ``""``.
        layout: Sparse layout used (``"sparse"`` only).
    """

    path: Path | None
    format: str
    model: str
    size: int
    note: str = ""
    layout: str | None = None


def _check(format: str, masks: object, model: nn.Module) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; accepted: {', '.join(FORMATS)}")
    if format == "hf" and not is_hf_model(model):
        raise ValueError(
            f"export format 'hf' (save_pretrained) is for Hugging Face models; this is a "
            f"{type(model).__name__}: use {', '.join(f for f in FORMATS if f != 'hf')}"
        )
    check_masks(masks)


def _baked(model: nn.Module, masks: Masks) -> nn.Module:
    baked = bake(apply(model, masks))
    check_ties(model, baked)  # an untied copy would double the model's size silently
    return baked


def _save_pretrained(model: nn.Module, masks: Masks, folder: Path, tokenizer: object) -> None:
    _baked(model, masks).save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def _write_folder(model: nn.Module, masks: Masks, path: Path, tokenizer: object) -> int:
    """save_pretrained into a directory beside ``path``, then swap it in: an interrupted
    export leaves the old directory (or none), never a half-written one."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; format 'hf' writes a directory")
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _save_pretrained(model, masks, scratch, tokenizer)
        size = sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
        scratch.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return size
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _zip_folder(model: nn.Module, masks: Masks, handle: IO[bytes], tokenizer: object) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        _save_pretrained(model, masks, Path(scratch), tokenizer)
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(Path(scratch).rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(scratch).as_posix())


class _Logits(nn.Module):
    """A Hugging Face model as token ids -> logits, without its key-value cache: what a
    ``torch.export`` program can return (a cache object is no tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, use_cache=False).logits


def _program(model: nn.Module, example_input: torch.Tensor):
    if is_hf_model(model):
        model = _Logits(model)
    one = example_input[:1]
    # export with a batch of 2: a batch of 1 would be specialised to a fixed size
    example = one.expand(2, *one.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ValueError(
            f"torch.export could not export the model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); export format 'state_dict' or "
            "'sparse' instead"
        ) from exc


def _write(
    handle: IO[bytes],
    model: nn.Module,
    masks: Masks,
    format: str,
    example_input: torch.Tensor | None,
    tokenizer: object = None,
) -> tuple[str, str, str | None]:
    """Write one export to ``handle``; returns (model kind, note, sparse layout)."""
    if format == "state_dict":
        torch.save(_baked(model, masks).state_dict(), handle)
        return "masked", "", None
    if format == "hf":
        _zip_folder(model, masks, handle, tokenizer)
        return "masked", "a save_pretrained directory, zipped", None
    if format == "sparse":
        sizes = compression(model, masks)
        layout = min(LAYOUTS, key=lambda k: sizes[f"{k}_bytes"])
        torch.save(sparse_payload(model, masks, layout=layout), handle)
        return "masked", f"every masked weight stored as {layout}", layout
    if not isinstance(example_input, torch.Tensor):
        raise ValueError("format 'pt2' needs example_input (one input batch) to trace the model")
    try:
        chosen, kind, note = shrink(model, masks, example_input=example_input), "shrunk", ""
    except ValueError as exc:
        chosen, kind = bake(apply(model, masks)), "masked"
        note = f"not shrunk, the zeros are written in instead: {exc}"
    torch.export.save(_program(chosen, example_input), handle)
    return kind, note, None


def export(
    model: nn.Module,
    masks: Masks,
    path: str | os.PathLike,
    *,
    format: str = "state_dict",
    example_input: torch.Tensor | None = None,
    tokenizer: object | None = None,
) -> Exported:
    """Write the pruned model to ``path`` in ``format``, atomically.

    Args:
        model: The dense model; not modified.
        masks: The masks to apply (channel masks give a shrunk ``pt2``).
        path: The file to write (the directory, for ``"hf"``); its parent must exist.
        format: ``"state_dict"``, ``"pt2"``, ``"sparse"`` or ``"hf"`` (see the module
            docstring).
        example_input: One input batch; needed for ``"pt2"``.
        tokenizer: A Hugging Face tokenizer saved beside an ``"hf"`` export (the bundle's
            ``tokenizer``), so that the directory loads as it came.

    Returns:
        An :class:`Exported` saying what was written.

    Raises:
        ValueError: Unknown format, no example input for pt2, or a model torch.export
            cannot export. Nothing is written then.
    """
    _check(format, masks, model)
    path = Path(path)
    if format == "hf":
        size = _write_folder(model, masks, path, tokenizer)
        return Exported(path, format, "masked", size, "a save_pretrained directory")
    with atomic_write(path) as handle:
        kind, note, layout = _write(handle, model, masks, format, example_input)
    return Exported(path, format, kind, path.stat().st_size, note, layout)


def export_bytes(
    model: nn.Module,
    masks: Masks,
    *,
    format: str = "state_dict",
    example_input: torch.Tensor | None = None,
    tokenizer: object | None = None,
) -> tuple[bytes, Exported]:
    """The bytes :func:`export` would write, built in memory (for downloads); an ``"hf"``
    directory comes as a zip archive of it.

    >>> from torch import nn
    >>> import prunelab
    >>> net = nn.Linear(4, 2)
    >>> data, info = export_bytes(net, prunelab.prune(net, "global-magnitude", sparsity=0.5))
    >>> info.format, info.size == len(data)
    ('state_dict', True)
    """
    _check(format, masks, model)
    buffer = io.BytesIO()
    kind, note, layout = _write(buffer, model, masks, format, example_input, tokenizer)
    data = buffer.getvalue()
    return data, Exported(None, format, kind, len(data), note, layout)


def load_snippet(path: str | os.PathLike, format: str, *, spec: str | None = None) -> str:
    """The short Python that loads an exported file.

    Args:
        path: The exported file.
        format: Its format.
        spec: The model spec it came from (``sample:...``/``torchvision:...``), used to
            name the architecture of a state_dict or sparse file.

    >>> print(load_snippet("model.pt2", "pt2"))
    import torch
    <BLANKLINE>
    model = torch.export.load("model.pt2").module()  # runs code from the file: trusted only
    # or, in prunelab: prunelab.io.zoo.load("file:model.pt2", trust=True).model
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; accepted: {', '.join(FORMATS)}")
    name = str(path)
    arch = spec or "<the model's spec>"
    if format == "hf":
        unzip = ""
        if name.endswith(".zip"):  # the app's download: the directory, zipped
            name = name.removesuffix(".zip")
            unzip = f"# first: unzip {name}.zip -d {name}\n"
        return (
            f"{unzip}import transformers\n\n"
            f'model = transformers.AutoModelForCausalLM.from_pretrained("{name}")\n'
            f'tokenizer = transformers.AutoTokenizer.from_pretrained("{name}")  # if saved\n'
            f'# or, in prunelab: prunelab.io.zoo.load("hf:{name}").model'
        )
    if format == "pt2":
        return (
            "import torch\n\n"
            f"model = torch.export.load({name!r}).module()  # runs code from the file: "
            "trusted only\n"
            f'# or, in prunelab: prunelab.io.zoo.load("file:{name}", trust=True).model'
        ).replace("'", '"')
    if format == "state_dict":
        known = spec is None or not (
            spec.startswith("hf:") or spec.endswith(tuple(LANGUAGE_MODELS))
        )
        return (
            "import torch\nimport prunelab\n\n"
            f'model = prunelab.io.zoo.load("{arch}").model  # the same architecture\n'
            f'model.load_state_dict(torch.load("{name}", weights_only=True))'
            + (f'\n# or: prunelab.io.zoo.load("file:{name}?arch={arch}").model' if known else "")
        )
    return (
        "import prunelab\nfrom prunelab.analysis.storage import load_sparse\n\n"
        f'architecture = prunelab.io.zoo.load("{arch}").model\n'
        f'model, masks = load_sparse("{name}", architecture)'
    )
