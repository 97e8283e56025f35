"""Token sequences for language models: bundled text, a text file, a Hugging Face dataset.

A language model is judged on next-token prediction. Each spec below gives text; the text is
tokenized, the token ids are joined (documents separated by the tokenizer's end-of-text token
where it has one) and cut into non-overlapping sequences of ``context`` tokens. A sequence's
labels are its next tokens: ``inputs[i] = ids[i*c : (i+1)*c]``, ``labels[i] =
ids[i*c+1 : (i+1)*c+1]``, so every token after the first is predicted exactly once and
nothing is padded (the last, partial sequence is dropped). The result is a
:class:`TokenData`: inputs and labels ``(sequences, context)`` int64, which
``prunelab.evaluate``, the sweeps, sensitivity, calibration and the CLI read like any data.

Specs (options: ``context=`` tokens per sequence, default 128; ``limit=N`` sequences;
``tokenizer=``):

* ``sample:pydoc-text`` -- CPython's help texts (:func:`prunelab.io.corpus.pydoc_text`,
  split by topic into train and test), tokenized with the sample language model's tokenizer
  (``sample_models/pydoc-gpt``). No download, on every machine.
* ``text:<file>?tokenizer=<dir or sample:pydoc-gpt>`` -- a UTF-8 text file of at most
  :data:`MAX_TEXT_BYTES`; binary, empty and non-UTF-8 files are refused, saying so. One file
  is one split: it is returned for either ``split``.
* ``hfdata:<dir>?column=text&tokenizer=...`` -- a Hugging Face dataset saved with
  ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: the ``split`` sub-directory is
  read, ``validation`` standing in for a missing ``test``). It is read with ``datasets`` when
  installed, else its Arrow files are read with ``pyarrow`` (which ``datasets`` writes, so
  no extra package is needed when pyarrow is there).

The tokenizer is a directory holding ``tokenizer.json`` (read with the ``tokenizers``
library: fast, no ``transformers`` import) or any directory ``transformers.AutoTokenizer``
reads; ``sample:pydoc-gpt`` names the sample model's. A tokenizer object (a
``tokenizers.Tokenizer`` or a ``transformers`` tokenizer, e.g. a loaded model bundle's) may be
passed to :func:`prunelab.io.data.load` instead and wins over the spec's option.

>>> data = load_text("sample:pydoc-text?context=32&limit=4")
>>> tuple(data.inputs.shape), bool((data.inputs[0, 1:] == data.labels[0, :-1]).all())
((4, 32), True)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..runtime.files import bounded_repr, check_regular_file, one_line
from .specs import Spec, check_split, parse_spec

__all__ = [
    "DEFAULT_CONTEXT",
    "MAX_CONTEXT",
    "MAX_TEXT_BYTES",
    "SAMPLE_TOKENIZER",
    "TEXT_SAMPLES",
    "TEXT_SCHEMES",
    "TokenData",
    "load_text",
    "load_tokenizer",
    "token_sequences",
]

DEFAULT_CONTEXT = 128
MAX_CONTEXT = 1 << 16  # tokens per sequence: beyond it no model here has positions for them
MAX_TEXT_BYTES = 64 * 2**20  # a text file or a dataset's text column, at most
SAMPLE_TOKENIZER = "sample:pydoc-gpt"
TEXT_SAMPLES = ("pydoc-text",)
TEXT_SCHEMES = ("text", "hfdata")
_BINARY_PROBE = 8192  # bytes looked at for NUL bytes, the mark of a binary file


class TokenData(Dataset):
    """Token sequences and their next tokens, as tensors: a Dataset of ``(inputs, labels)``.

    Attributes:
        inputs: int64 token ids ``(sequences, context)``.
        labels: int64 next-token ids, the same shape (-100 marks a position not scored).
        name: Where the data came from (its spec).
        tokenizer: The tokenizer that made it (to decode tokens), or None.
        kind: ``"tokens"``: how :func:`prunelab.runtime.metrics.is_token_data` knows it.

    >>> data = TokenData(torch.arange(8).reshape(2, 4), torch.arange(1, 9).reshape(2, 4))
    >>> data
    TokenData(tokens: 2 sequences of 4 tokens)
    """

    kind = "tokens"
    class_names = None

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        name: str = "",
        tokenizer: object | None = None,
    ) -> None:
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 2:
            raise TypeError("inputs must be token ids of shape (sequences, context)")
        if not isinstance(labels, torch.Tensor) or labels.shape != inputs.shape:
            raise ValueError("labels must be next-token ids of the inputs' shape")
        if inputs.is_floating_point() or labels.is_floating_point():
            raise TypeError("token ids must be integers")
        self.inputs = inputs.long()
        self.labels = labels.long()
        self.name = name
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"TokenData({self.name or 'tokens'}: {len(self)} sequences of "
            f"{self.inputs.shape[1]} tokens)"
        )

    def head(self, limit: int | None) -> TokenData:
        """The first ``limit`` sequences (all when None)."""
        if limit is None or limit >= len(self):
            return self
        return TokenData(
            self.inputs[:limit], self.labels[:limit], name=self.name, tokenizer=self.tokenizer
        )


def token_sequences(ids: Iterable[int] | torch.Tensor, context: int) -> tuple[torch.Tensor, ...]:
    """``ids`` cut into non-overlapping ``(inputs, labels)`` of ``context`` tokens each.

    >>> inputs, labels = token_sequences(range(10), 4)
    >>> inputs.tolist(), labels.tolist()
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    """
    ids = torch.as_tensor(ids if isinstance(ids, torch.Tensor) else list(ids), dtype=torch.long)
    count = (ids.numel() - 1) // context
    if count < 1:
        raise ValueError(
            f"the text gives {ids.numel():,} tokens, fewer than one sequence of context="
            f"{context} needs ({context + 1}); give more text or a smaller context="
        )
    inputs = ids[: count * context].reshape(count, context)
    labels = ids[1 : count * context + 1].reshape(count, context)
    return inputs.clone(), labels.clone()


# -- tokenizers ------------------------------------------------------------------------------


def _sample_tokenizer_dir() -> Path:
    from .zoo import sample_dir

    return sample_dir() / "pydoc-gpt"


@functools.lru_cache(maxsize=4)
def _tokenizer_from_dir(folder: str) -> object:
    path = Path(folder)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:
            raise ValueError(
                f"cannot read tokenizer {path / 'tokenizer.json'}: {one_line(exc)}"
            ) from exc
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ValueError(
            f"no tokenizer in {path}: give a directory holding tokenizer.json or what "
            f"transformers.AutoTokenizer reads ({one_line(exc, limit=160)})"
        ) from exc


def load_tokenizer(spec: str | os.PathLike) -> object:
    """A tokenizer by name: ``sample:pydoc-gpt`` or a local directory (see the module doc).

    >>> load_tokenizer("sample:pydoc-gpt").get_vocab_size()
    1024

    Raises:
        ValueError: If the directory does not exist or holds no tokenizer.
    """
    text = os.fspath(spec).strip()
    if text in (SAMPLE_TOKENIZER, "pydoc-gpt"):
        return _tokenizer_from_dir(str(_sample_tokenizer_dir()))
    folder = Path(text.removeprefix("hf:")).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"tokenizer {bounded_repr(text)} is not a directory; give {SAMPLE_TOKENIZER} or a "
            "directory holding tokenizer.json (a Hugging Face model's folder)"
        )
    return _tokenizer_from_dir(str(folder.resolve()))


def _encode(tokenizer: object, text: str) -> list[int]:
    """Token ids of ``text``, from a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise TypeError(
            f"tokenizer must be a tokenizers.Tokenizer or a transformers tokenizer, got "
            f"{type(tokenizer).__name__}"
        )
    out = encode(text)
    ids = getattr(out, "ids", out)  # tokenizers gives an Encoding, transformers a list
    return [int(i) for i in ids]


def _end_of_text(tokenizer: object) -> int | None:
    """The id that separates documents (GPT-2's ``<|endoftext|>``), if the tokenizer has one."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        return eos
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if callable(token_to_id):
        for name in ("<|endoftext|>", "</s>", "<eos>"):
            if (found := token_to_id(name)) is not None:
                return int(found)
    return None


def _tokenize(tokenizer: object, documents: Iterable[str], needed: int | None) -> list[int]:
    """The documents' ids joined by end-of-text, stopping once ``needed`` ids are there."""
    eos = _end_of_text(tokenizer)
    ids: list[int] = []
    for document in documents:
        if ids and eos is not None:
            ids.append(eos)
        ids.extend(_encode(tokenizer, document))
        if needed is not None and len(ids) >= needed:
            break
    return ids


# -- sources of text -------------------------------------------------------------------------


def _read_text_file(target: str) -> str:
    path = check_regular_file(Path(target).expanduser(), "text file", MAX_TEXT_BYTES)
    raw = path.read_bytes()
    if b"\x00" in raw[:_BINARY_PROBE]:
        raise ValueError(
            f"{path} looks binary (it holds NUL bytes); text: specs read UTF-8 text files "
            "(for tensors use file:, for a Hugging Face dataset hfdata:)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {exc.start:,} cannot be decoded); save it as UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(f"{path} holds no text: nothing to tokenize")
    return text


def _dataset_split_dir(root: Path, split: str) -> Path:
    """The folder of one split: ``root`` itself for a Dataset, a sub-folder for a DatasetDict."""
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        for name in (split, "validation") if split == "test" else (split,):
            if name in splits and (root / name).is_dir():
                return root / name
        raise ValueError(
            f"dataset {root} has splits {', '.join(map(str, splits)) or 'none'}; none of them "
            f"is {split!r}" + (" (nor 'validation')" if split == "test" else "")
        )
    return root


def _arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.is_file():
        names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        files = [folder / n for n in names]
    else:
        files = sorted(folder.glob("*.arrow"))
    if not files or not all(f.is_file() for f in files):
        raise ValueError(
            f"{folder} is not a saved Hugging Face dataset: no Arrow files (it should be what "
            "datasets' save_to_disk writes: state.json, dataset_info.json, data-*.arrow)"
        )
    return files


def _dataset_column(root: Path, split: str, column: str) -> list[str]:
    """The ``column`` of a saved dataset as strings, read with ``datasets`` or ``pyarrow``."""
    folder = _dataset_split_dir(root, split)
    try:
        import datasets
    except ModuleNotFoundError:
        datasets = None
    if datasets is not None:
        table = datasets.load_from_disk(str(folder)).data.table
    else:
        try:
            import pyarrow as pa
        except ModuleNotFoundError:
            raise ValueError(
                "reading a Hugging Face dataset directory needs the datasets package or "
                "pyarrow: pip install datasets (or pyarrow)"
            ) from None
        tables = []
        for file in _arrow_files(folder):
            check_regular_file(file, "dataset file", MAX_TEXT_BYTES * 4)
            with pa.memory_map(str(file)) as source:
                try:
                    tables.append(pa.ipc.open_stream(source).read_all())
                except pa.ArrowInvalid:
                    tables.append(pa.ipc.open_file(source).read_all())
        table = pa.concat_tables(tables)
    if column not in table.column_names:
        raise ValueError(
            f"dataset {root} has no column {column!r}; its columns: "
            f"{', '.join(table.column_names)} (choose one with column=)"
        )
    values = table.column(column).to_pylist()
    if not all(isinstance(v, str) or v is None for v in values):
        raise ValueError(f"column {column!r} of dataset {root} does not hold text")
    texts = [v for v in values if v and v.strip()]
    if sum(len(t) for t in texts) > MAX_TEXT_BYTES:
        raise ValueError(
            f"column {column!r} of dataset {root} holds over {MAX_TEXT_BYTES // 2**20} MiB of "
            "text; prunelab evaluates on a sample: save a smaller slice of it"
        )
    if not texts:
        raise ValueError(f"column {column!r} of dataset {root} holds no text")
    return texts


# -- entry point -----------------------------------------------------------------------------


def _context(spec: Spec) -> int:
    context = spec.integer("context")
    context = DEFAULT_CONTEXT if context is None else context
    if not 1 <= context <= MAX_CONTEXT:
        raise ValueError(
            f"context={context} in {spec.text!r} must be from 1 to {MAX_CONTEXT:,} tokens"
        )
    return context


def load_text(
    spec: str | Spec,
    *,
    split: str = "test",
    limit: int | None = None,
    tokenizer: object | None = None,
) -> TokenData:
    """Token sequences by spec (``sample:pydoc-text``, ``text:``, ``hfdata:``; see the module
    docstring). Usually reached through :func:`prunelab.io.data.load`.

    Args:
        spec: The spec, as text or parsed.
        split: ``"train"`` or ``"test"``.
        limit: Keep the first ``limit`` sequences (the spec's ``limit=`` counts too).
        tokenizer: A tokenizer object; it wins over the spec's ``tokenizer=`` option.

    Raises:
        ValueError: For an unknown spec or option, unreadable text, no tokenizer, or too
            little text for one sequence.
    """
    split = check_split(split)
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec, schemes=(*TEXT_SCHEMES, "sample"))
    accepted = ["context", "limit", "tokenizer"] + (["column"] if parsed.scheme == "hfdata" else [])
    parsed.check_options(accepted)
    context = _context(parsed)
    for count in (parsed.integer("limit"), limit):
        if count is not None and count < 1:
            raise ValueError(f"limit={count} for {parsed.text!r} must be at least 1")
    limits = [c for c in (parsed.integer("limit"), limit) if c is not None]
    wanted = min(limits) if limits else None
    if tokenizer is None:
        named = parsed.options.get("tokenizer")
        if named is None and parsed.scheme != "sample":
            raise ValueError(
                f"{parsed.text!r} names no tokenizer: add tokenizer=<a model directory> or "
                f"tokenizer={SAMPLE_TOKENIZER}"
            )
        tokenizer = load_tokenizer(named or SAMPLE_TOKENIZER)
    if parsed.scheme == "sample":
        if parsed.target not in TEXT_SAMPLES:
            raise ValueError(f"unknown sample text {parsed.target!r}; available: pydoc-text")
        from .corpus import pydoc_text

        documents = [pydoc_text(split)]
    elif parsed.scheme == "text":
        documents = [_read_text_file(parsed.target)]
    elif parsed.scheme == "hfdata":
        root = Path(parsed.target).expanduser()
        if not root.is_dir():
            raise ValueError(f"dataset directory {root} does not exist")
        documents = _dataset_column(root, split, parsed.options.get("column", "text"))
    else:
        raise ValueError(f"{parsed.text!r} is not a text spec (sample:, text:, hfdata:)")
    needed = None if wanted is None else wanted * context + 1
    ids = _tokenize(tokenizer, documents, needed)
    inputs, labels = token_sequences(ids, context)
    name = parsed.text if parsed.scheme != "sample" or parsed.options else "sample:pydoc-text"
    return TokenData(inputs, labels, name=name, tokenizer=tokenizer).head(wanted)
