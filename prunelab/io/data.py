"""Datasets by spec: bundled offline samples, torchvision datasets, tensors from a file.

Specs:

* ``sample:digits`` -- scikit-learn's bundled copy of the UCI 8x8 handwritten digits
  (1797 images, offline). Pixels are scaled to [0, 1] (divided by 16) and shaped
  ``(1, 8, 8)``; labels are int64 0-9. The split is fixed: ``train_test_split(test_size=0.25,
  random_state=0, stratify=labels)``, giving 1347 train and 450 test images.
  Options make the same digits fit other image models: ``input=CxHxW`` resizes them
  (bilinear) and repeats the grey channel C times, ``limit=N`` keeps the first N images and
  ``labels=0`` drops the labels, so that only fidelity to the dense model is measured.
  ``sample:digits?input=3x224x224&labels=0&limit=16`` is how a torchvision model is judged
  offline (see :func:`digits_for`): real handwriting, not noise, but not the data such a
  model was trained on, so no accuracy is claimed.
* ``sample:sentiment`` -- a *synthetic* sentiment set generated deterministically by prunelab
  (see :func:`sentiment_sentences`): short reviews built from positive, negative and neutral
  words, with negation ("not good" is negative, "not bad" positive), intensifiers and
  contrast ("... but ..." takes the polarity of the second clause). 3000 train and 1000 test
  sentences, no sentence in both. Inputs are int64 token ids of length 16, left-padded
  with 0; labels 0 = negative, 1 = positive.
* ``torchvision:<MNIST|FashionMNIST|CIFAR10>?root=<dir>&download=1`` -- the real torchvision
  datasets read from ``root`` (default ``~/.cache/prunelab/data``) as float tensors in [0, 1];
  downloaded only when ``download=1`` is given.
* ``file:<path>`` -- a ``torch.save`` file holding a dict with tensor ``x`` (inputs), optionally
  ``y`` (int labels) and ``class_names`` (list of str). A file holds one split; it is returned
  for either ``split``. Read with ``weights_only=True``; files over :data:`MAX_FILE_BYTES`
  are refused before they are read.

* ``sample:pydoc-text``, ``text:<file>?tokenizer=...``, ``hfdata:<dir>?column=text&...`` --
  token sequences for language models (inputs and next-token labels), read by
  :mod:`prunelab.io.text`; options ``context=`` (tokens per sequence, default 128) and
  ``limit=`` (sequences).

A bare name (``digits``) means the sample set, a bare existing path means ``file:``.

>>> data = load("sample:digits", limit=5)
>>> len(data), tuple(data.inputs.shape), data.class_names[:3]
(5, (5, 1, 8, 8), ('0', '1', '2'))
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ..runtime import files as _io
from ..runtime import memory
from ..runtime import torchfiles as _torchfiles
from ..runtime.files import bounded_repr, check_regular_file, one_line
from .sentiment import decode, encode, sentiment_sentences, sentiment_vocabulary
from .specs import MAX_CLASSES, Spec, check_split, parse_spec
from .text import TEXT_SAMPLES, TEXT_SCHEMES, TokenData, load_text

__all__ = [
    "MAX_FILE_BYTES",
    "SAMPLE_DATASETS",
    "TORCHVISION_DATASETS",
    "Spec",
    "TensorData",
    "TokenData",
    "TorchvisionUnavailable",
    "check_file_size",
    "class_names",
    "decode",
    "digits_for",
    "encode",
    "import_torchvision",
    "list_datasets",
    "load",
    "parse_spec",
    "sentiment_sentences",
    "sentiment_vocabulary",
    "torchvision_spec",
]

# the largest model or data file read from a ``file:`` spec (see prunelab._io)
MAX_FILE_BYTES = _io.MAX_FILE_BYTES
SAMPLE_DATASETS = ("digits", "sentiment", *TEXT_SAMPLES)
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "CIFAR10")
DEFAULT_ROOT = "~/.cache/prunelab/data"
DIGITS_TEST_SIZE = 0.25
DIGITS_RANDOM_STATE = 0
DIGITS_SHAPE = (1, 8, 8)
DIGITS_TEST_COUNT = 450
# resized digits for other image models (digits_for): about this many input values, at
# least this many images
DIGITS_FIT_VALUES = 16 * 3 * 224 * 224
DIGITS_FIT_MIN = 16


# -- tensors in memory ---------------------------------------------------------------------


class TensorData(Dataset):
    """Inputs and optional labels held as tensors; a ``Dataset`` yielding ``(x, y)`` or ``x``.

    Attributes:
        inputs: All inputs, first dimension = samples.
        labels: int64 labels or None for unlabelled data.
        class_names: Names of the classes, or None.
        name: Where the data came from (its spec).

    >>> data = TensorData(torch.zeros(3, 2), torch.tensor([0, 1, 0]), name="demo")
    >>> len(data), data[1][1].item()
    (3, 1)
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        class_names: Sequence[str] | None = None,
        name: str = "",
    ) -> None:
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1:
            raise TypeError("inputs must be a tensor whose first dimension indexes samples")
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
                raise TypeError("labels must be a 1-d tensor of class indices")
            if labels.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"{labels.shape[0]} labels for {inputs.shape[0]} inputs; they must match"
                )
            if labels.is_floating_point():
                raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
            labels = labels.long()
        self.inputs = inputs
        self.labels = labels
        self.class_names = tuple(class_names) if class_names is not None else None
        self.name = name

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if self.labels is None:
            return self.inputs[index]
        return self.inputs[index], self.labels[index]

    def __repr__(self) -> str:
        labelled = "labelled" if self.labels is not None else "unlabelled"
        shape = "x".join(map(str, self.inputs.shape[1:])) or "scalar"
        return f"TensorData({self.name or 'tensors'}: {len(self)} {labelled} samples of {shape})"

    def head(self, limit: int | None) -> TensorData:
        """The first ``limit`` samples (all when None)."""
        if limit is None or limit >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:limit]
        return TensorData(self.inputs[:limit], labels, class_names=self.class_names, name=self.name)


# -- digits --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    index = torch.arange(len(labels)).numpy()
    train, test = train_test_split(
        index,
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_RANDOM_STATE,
        stratify=bunch.target,
    )
    return {
        "train": (images[train], labels[train]),
        "test": (images[test], labels[test]),
    }


def _digits(split: str, spec: Spec) -> TensorData:
    spec.check_options(["input", "labels", "limit"])
    inputs, labels = _digits_splits()[split]
    count = spec.integer("limit")
    if count is not None:
        if count < 1:
            raise ValueError(f"limit={count} in {spec.text!r} must be at least 1")
        inputs, labels = inputs[:count], labels[:count]
    shape = spec.shape("input")
    if shape is not None and shape != DIGITS_SHAPE:
        if len(shape) != 3:
            raise ValueError(
                f"input={spec.options['input']} in {spec.text!r}: digits are images, give "
                "channels x height x width, e.g. input=3x224x224"
            )
        channels, height, width = shape
        resized = F.interpolate(inputs, size=(height, width), mode="bilinear", align_corners=False)
        inputs = resized.clamp(0, 1).repeat(1, channels, 1, 1)
    names = tuple(str(d) for d in range(10))
    keep_labels = "labels" not in spec.options or spec.flag("labels")
    return TensorData(
        inputs.clone(),
        labels.clone() if keep_labels else None,
        class_names=names if keep_labels else None,
        name=spec.text if spec.options else "sample:digits",
    )


def digits_for(input_shape: Sequence[int], *, values: int = DIGITS_FIT_VALUES) -> str | None:
    """The spec of bundled digits that fit an image model's input, or None for non-images.

    The images are resized to the model's input and carry no labels: a model trained on
    other data (an ImageNet architecture) can be judged by its fidelity to the dense model,
    offline, but any accuracy on them would mean nothing. So that every pass over them stays
    quick, they hold about ``values`` input values: 16 images at 3x224x224 (9 MiB), all 450
    test digits at 3x32x32.

    >>> digits_for((3, 224, 224))
    'sample:digits?input=3x224x224&labels=0&limit=16'
    >>> load(digits_for((3, 16, 16))).inputs.shape
    torch.Size([450, 3, 16, 16])
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        return None
    limit = max(DIGITS_FIT_MIN, min(DIGITS_TEST_COUNT, values // math.prod(shape)))
    return f"sample:digits?input={'x'.join(map(str, shape))}&labels=0&limit={limit}"


def _sentiment(split: str) -> TensorData:
    sentences = sentiment_sentences(split)
    inputs = encode([text for text, _ in sentences])
    labels = torch.tensor([label for _, label in sentences], dtype=torch.int64)
    return TensorData(inputs, labels, class_names=("negative", "positive"), name="sample:sentiment")


# -- torchvision ---------------------------------------------------------------------------


class TorchvisionUnavailable(ValueError):
    """torchvision is not installed, or is installed but cannot be imported."""


def import_torchvision() -> ModuleType:
    """Import torchvision lazily, turning any failure into a clear TorchvisionUnavailable.

    A torchvision built for another torch version typically fails at import time (for
    example "operator torchvision::nms does not exist"); the rest of prunelab still works.
    """
    try:
        import torchvision
    except ModuleNotFoundError as exc:
        raise TorchvisionUnavailable(
            "torchvision is not installed (pip install torchvision); sample: and file: "
            "specs work without it"
        ) from exc
    except Exception as exc:
        raise TorchvisionUnavailable(
            f"torchvision is installed but cannot be imported ({type(exc).__name__}: {exc}); "
            f"it probably does not match torch {torch.__version__}. Install the matching "
            "torchvision; sample: and file: specs work without it"
        ) from exc
    return torchvision


def torchvision_spec(name: str, root: str | os.PathLike, *, download: bool = False) -> str:
    """The spec of a torchvision dataset in ``root``, built from its parts, never pasted: a
    folder whose name would change the spec's meaning (``?``, ``&``, ``=``) is refused, so a
    value typed into a form cannot add options such as ``download=1``.

    >>> torchvision_spec("MNIST", "/data")
    'torchvision:MNIST?root=/data'

    Raises:
        ValueError: For an unknown dataset, or a folder that cannot be written in a spec.
    """
    names = {n.lower(): n for n in TORCHVISION_DATASETS}
    if not isinstance(name, str) or name.lower() not in names:
        raise ValueError(
            f"unknown torchvision dataset {bounded_repr(name)}; available: "
            f"{', '.join(TORCHVISION_DATASETS)}"
        )
    folder = os.fspath(root).strip()
    if not folder or any(c in folder for c in "?&=\n\r") or len(folder) > 1024:
        raise ValueError(
            f"dataset folder {bounded_repr(folder)} cannot be used: give a folder path of at "
            "most 1,024 characters without ?, & or ="
        )
    spec = f"torchvision:{names[name.lower()]}?root={folder}"
    return spec + "&download=1" if download else spec


def _torchvision_dataset(spec: Spec, split: str, *, untrusted: bool) -> Dataset:
    spec.check_options(["root", "download"])
    names = {n.lower(): n for n in TORCHVISION_DATASETS}
    name = names.get(spec.target.lower())
    if name is None:
        raise ValueError(
            f"unknown torchvision dataset {spec.target!r}; available: "
            f"{', '.join(TORCHVISION_DATASETS)}"
        )
    root = Path(os.path.expanduser(spec.options.get("root", DEFAULT_ROOT)))
    download = spec.flag("download")
    if untrusted and download:
        raise ValueError(
            f"{spec.text!r} asks to download, but the spec comes from an untrusted place (a "
            "file's provenance or a web form), which never downloads nor creates folders; "
            "put the files in an existing folder"
        )
    torchvision = import_torchvision()
    from torchvision import transforms

    if not download and not root.is_dir():
        raise ValueError(
            f"dataset folder {root} does not exist; give a folder that holds {name} in "
            "torchvision's layout" + ("" if untrusted else " (or add download=1 to the spec)")
        )

    if download:
        root.mkdir(parents=True, exist_ok=True)
    cls = getattr(torchvision.datasets, name)
    try:
        return cls(
            str(root), train=split == "train", download=download, transform=transforms.ToTensor()
        )
    except RuntimeError as exc:
        if download:
            raise ValueError(f"could not download {name} into {root}: {one_line(exc)}") from exc
        raise ValueError(
            f"{name} ({split} split) not found under {root}: put the files there in "
            "torchvision's layout"
            + ("" if untrusted else ", or add download=1 to the spec to download them")
        ) from exc
    except OSError as exc:  # network failures during download
        raise ValueError(f"could not download {name} into {root}: {one_line(exc)}") from exc


# -- files ---------------------------------------------------------------------------------


def check_file_size(path: Path, what: str) -> Path:
    """Refuse a missing file, anything but a regular file (a directory, a FIFO,
    ``/dev/zero``), or one larger than :data:`MAX_FILE_BYTES`, before reading it.

    Returns:
        The path, with ``~`` expanded.

    Raises:
        FileNotFoundError: If nothing is at ``path``.
        ValueError: Naming what is wrong: not a regular file, or its size and the limit.
    """
    return check_regular_file(path, what, MAX_FILE_BYTES)


def _file(spec: Spec) -> TensorData:
    spec.check_options([])
    path = check_file_size(Path(spec.target).expanduser(), "data file")
    expected = "(a torch.save dict with tensors 'x' and 'y' is expected): "
    try:
        preview = _torchfiles.peek(path, "data file")
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read data file {path} {expected}{one_line(exc)}") from exc
    _check_data_payload(preview, path)
    try:
        payload = _torchfiles.load(path)
    except Exception as exc:
        raise ValueError(f"cannot read data file {path} {expected}{one_line(exc)}") from exc
    names = payload.get("class_names")
    return TensorData(payload["x"], payload.get("y"), class_names=names, name=f"file:{path}")


def _check_data_payload(payload: object, path: Path) -> None:
    """Refuse contents that are not ``{"x": tensor, "y": tensor, "class_names": [str]}``
    (checked on the ``meta`` device, before any tensor is read)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("x"), torch.Tensor):
        found = (
            bounded_repr(list(payload)[:6])
            if isinstance(payload, Mapping)
            else type(payload).__name__
        )
        raise ValueError(
            f"data file {path} must hold a dict with a tensor 'x' (inputs) and optionally "
            f"'y' (labels) and 'class_names'; found {found}"
        )
    extra = [k for k in payload if k not in ("x", "y", "class_names")]
    if extra:
        raise ValueError(
            f"data file {path} holds unexpected keys {bounded_repr(extra[:6])}; accepted: "
            "x, y, class_names"
        )
    labels = payload.get("y")
    if labels is not None and not isinstance(labels, torch.Tensor):
        raise ValueError(f"'y' in data file {path} must be a tensor of class indices")
    # a tensor saved as an expanded view of a few bytes claims any number of samples
    claimed = memory.payload_bytes(payload, what=f"data file {path.name}")
    if claimed > MAX_FILE_BYTES:
        raise ValueError(
            f"data file {path} claims {len(payload['x']):,} samples, "
            f"{memory.format_bytes(claimed)} as tensors, but data files hold at most "
            f"{memory.format_bytes(MAX_FILE_BYTES)} (expanded views are refused)"
        )
    names = payload.get("class_names")
    if names is not None and (
        not isinstance(names, (list, tuple))
        or len(names) > MAX_CLASSES
        or not all(isinstance(n, str) and len(n) <= 200 for n in names)
    ):
        raise ValueError(
            f"'class_names' in data file {path} must be a list of at most {MAX_CLASSES:,} "
            "short strings"
        )


# -- entry point ---------------------------------------------------------------------------


def load(
    spec: str,
    *,
    split: str = "test",
    limit: int | None = None,
    untrusted: bool = False,
    tokenizer: object | None = None,
) -> Dataset:
    """Load a dataset by spec (see the module docstring for the accepted specs).

    Args:
        spec: ``sample:digits``, ``sample:sentiment``, ``torchvision:<name>?root=<dir>``,
            ``file:<path>``, or a text spec (``sample:pydoc-text``, ``text:<file>``,
            ``hfdata:<dir>``).
        split: ``"train"`` or ``"test"``.
        limit: Keep only the first ``limit`` samples.
        untrusted: The spec comes from an untrusted place (a file's provenance, a web form):
            it may not download (``download=1`` is refused) nor create folders.
        tokenizer: For text specs: a tokenizer object (a loaded model's), used instead of
            the spec's ``tokenizer=`` option.

    Returns:
        A map-style Dataset yielding ``(input, label)`` pairs (``input`` alone for unlabelled
        files): a :class:`TensorData` for sample and file specs, a
        :class:`~prunelab.io.text.TokenData` for text specs, the torchvision dataset
        (wrapped in a ``Subset`` when limited) otherwise. Every form works with
        :func:`prunelab.runtime.batches.iter_batches` and :func:`prunelab.evaluate`.

    Raises:
        ValueError: For an unknown spec, name, option or split, or a dataset that is not
            there and may not be downloaded.
        FileNotFoundError: For a ``file:`` spec whose file does not exist.

    >>> len(load("sample:sentiment", split="train"))
    3000
    """
    split = check_split(split)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    parsed = parse_spec(
        spec, schemes=("sample", "torchvision", "file", *TEXT_SCHEMES), samples=SAMPLE_DATASETS
    )
    if parsed.scheme in TEXT_SCHEMES or (
        parsed.scheme == "sample" and parsed.target in TEXT_SAMPLES
    ):
        return load_text(parsed, split=split, limit=limit, tokenizer=tokenizer)
    if parsed.scheme == "sample":
        if parsed.target not in SAMPLE_DATASETS:
            raise ValueError(
                f"unknown sample dataset {parsed.target!r}; available: "
                f"{', '.join('sample:' + n for n in SAMPLE_DATASETS)}"
            )
        if parsed.target == "digits":
            return _digits(split, parsed).head(limit)
        parsed.check_options([])
        return _sentiment(split).head(limit)
    if parsed.scheme == "file":
        return _file(parsed).head(limit)
    dataset = _torchvision_dataset(parsed, split, untrusted=untrusted)
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return dataset


def list_datasets() -> list[str]:
    """Specs of the datasets prunelab knows by name.

    >>> list_datasets()[:3]
    ['sample:digits', 'sample:sentiment', 'sample:pydoc-text']
    """
    return [f"sample:{n}" for n in SAMPLE_DATASETS] + [
        f"torchvision:{n}" for n in TORCHVISION_DATASETS
    ]


def class_names(data: object) -> tuple[str, ...] | None:
    """Class names of a dataset from :func:`load`, if it knows them."""
    while isinstance(data, Subset):
        data = data.dataset
    names = getattr(data, "class_names", None) or getattr(data, "classes", None)
    return tuple(str(n) for n in names) if names else None
