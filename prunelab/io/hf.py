"""Hugging Face ``transformers`` models by spec: ``hf:<directory>`` and ``hf:<hub id>``.

* ``hf:<directory>`` -- a directory written by ``save_pretrained`` (``config.json`` and the
  weights, ``model.safetensors`` or ``pytorch_model.bin``; tokenizer files when present).
* ``hf:<hub id>`` (``hf:gpt2``, ``hf:org/name``) -- loaded by ``from_pretrained``: from the
  local Hugging Face cache, else downloaded when the hub can be reached. Offline and not
  cached, it is a one-line error that says so (pass a local directory instead).

Options (``?key=value``, as in other specs):

* ``task=causal-lm`` (``AutoModelForCausalLM``; the default when the config names a causal
  LM) or ``task=sequence-classification`` (``AutoModelForSequenceClassification``; a
  classifier, as prunelab's other models).
* ``context=<n>`` -- tokens per input sequence (default: the model's maximum positions,
  at most :data:`DEFAULT_CONTEXT`).
* ``trust_remote_code=1`` -- run the model's own Python code from the directory or hub.
  Never implied: this flag (or ``trust=True``, the CLI's ``--trust``) must be given, and it
  is refused in a spec from an untrusted place.

``transformers`` is imported only here, and only when such a model is loaded.

>>> import tempfile, transformers
>>> config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40)
>>> folder = tempfile.mkdtemp()
>>> transformers.GPT2LMHeadModel(config).save_pretrained(folder)
>>> from prunelab.io.specs import parse_spec
>>> bundle = load_hf(parse_spec(f"hf:{folder}", schemes=["hf"]))
>>> bundle.task, bundle.input_shape, bundle.input_dtype
('language-model', (128,), torch.int64)
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..analysis.generation import max_positions
from ..runtime import memory
from ..runtime.files import bounded_repr
from .builders import ModelBundle
from .specs import Spec

__all__ = [
    "DEFAULT_CONTEXT",
    "TASKS",
    "check_ties",
    "estimate_hf",
    "hf_directory",
    "is_hf_model",
    "load_hf",
    "tied_groups",
]

DEFAULT_CONTEXT = 128
TASKS = {
    "causal-lm": ("AutoModelForCausalLM", "language-model"),
    "sequence-classification": ("AutoModelForSequenceClassification", "classification"),
}
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hf_directory(target: str) -> Path | None:
    """The local directory ``target`` names, or None when it names none (a hub id)."""
    path = Path(target).expanduser()
    return path if path.is_dir() else None


def _default_task(config: object) -> str:
    names = " ".join(getattr(config, "architectures", None) or [])
    if "ForSequenceClassification" in names:
        return "sequence-classification"
    if "CausalLM" in names or "LMHeadModel" in names or not names:
        return "causal-lm"
    raise ValueError(
        f"cannot tell the task of a {names} model; pass task=<one of {', '.join(TASKS)}>"
    )


def _context(config: object, spec: Spec) -> int:
    most = max_positions(config)
    asked = spec.integer("context")
    if asked is None:
        return min(most or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    if asked < 1 or (most is not None and asked > most):
        raise ValueError(f"context={asked} must be from 1 to the model's {most} positions")
    return asked


def _hub_reachable() -> str | None:
    """None when the hub answers a connection, else why not (one short phrase)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:  # a quick check: from_pretrained itself retries for most of a minute offline
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable ({exc.strerror or type(exc).__name__})"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' progress bars ("Loading weights: 100%") and info/warning logs off while
    a model loads, as they were afterwards: loading a known model is not news, and the bars
    land in the server's log and the CLI's output."""
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _pretrained(loader, source: str, *, local: bool, untrusted: bool, **kwargs):
    """``loader.from_pretrained(source)``, quietly (:func:`_quiet`)."""
    with _quiet():
        return _from_pretrained(loader, source, local=local, untrusted=untrusted, **kwargs)


def _from_pretrained(loader, source: str, *, local: bool, untrusted: bool, **kwargs):
    """``loader.from_pretrained(source)``: a directory as it is; a hub id from the cache,
    else from the hub when it can be reached (never for an untrusted spec)."""
    if local:
        return loader.from_pretrained(source, **kwargs)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        pass
    where = "the local Hugging Face cache"
    if untrusted:
        raise ValueError(
            f"hf:{source} is not in {where}, and a spec from an untrusted place downloads "
            "nothing; pass a local directory (hf:/path/to/saved_model)"
        )
    if (why := _hub_reachable()) is not None:
        raise ValueError(
            f"hf:{source} is not in {where} and the network is unreachable ({why}); "
            "pass a local directory saved with save_pretrained (hf:/path/to/dir)"
        )
    return loader.from_pretrained(source, **kwargs)


def _tokenizer(source: str, *, local: bool, trust_remote_code: bool):
    import transformers

    try:
        return _pretrained(
            transformers.AutoTokenizer,
            source,
            local=local,
            untrusted=True,  # a model without its tokenizer still loads: never download for it
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a model saved without a tokenizer: token ids only


def load_hf(
    spec: Spec,
    *,
    trust: bool = False,
    untrusted: bool = False,
    name: str | None = None,
    default_data: str | None = None,
    card: dict | None = None,
) -> ModelBundle:
    """Load an ``hf:`` spec (see the module docstring) into a :class:`ModelBundle`.

    Args:
        spec: The parsed spec.
        trust: Allow the model's own code, as ``trust_remote_code=1`` does (the CLI's
            ``--trust``).
        untrusted: The spec comes from an untrusted place: remote code is refused, and
            nothing is downloaded.
        name, default_data, card: What a sample model adds to its bundle.

    Raises:
        ValueError: An unknown option or task, remote code without the flag, a directory
            without a model, a hub id neither cached nor reachable.
    """
    spec.check_options(["task", "context", "trust_remote_code"])
    source = spec.target
    folder = hf_directory(source)
    if folder is None and not _HUB_ID.match(source):
        raise ValueError(
            f"hf:{bounded_repr(source)} is neither a directory nor a hub id (name or "
            "org/name); pass a directory saved with save_pretrained"
        )
    if folder is not None and not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} has no config.json: pass a directory written by save_pretrained"
        )
    remote = spec.flag("trust_remote_code") or trust
    if spec.flag("trust_remote_code") and untrusted:
        raise ValueError("trust_remote_code=1 is refused in a spec from an untrusted place")
    import transformers  # seconds to import: only when a Hugging Face model is asked for

    local = folder is not None
    where = str(folder) if local else source
    config = _pretrained(
        transformers.AutoConfig, where, local=local, untrusted=untrusted, trust_remote_code=remote
    )
    task = spec.options.get("task") or _default_task(config)
    if task not in TASKS:
        raise ValueError(f"unknown task={task!r}; accepted: {', '.join(TASKS)}")
    auto, kind = TASKS[task]
    try:
        model = _pretrained(
            getattr(transformers, auto),
            where,
            local=local,
            untrusted=untrusted,
            trust_remote_code=remote,
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ValueError(
                f"hf:{source} needs its own Python code to run; pass trust_remote_code=1 "
                "if you trust it (it runs code from the model's files)"
            ) from None
        raise
    labels = getattr(config, "id2label", None) if kind == "classification" else None
    return ModelBundle(
        model=model.eval(),
        name=name or (folder.name if local else source),
        spec=spec.text,
        input_shape=(_context(config, spec),),
        input_dtype=torch.int64,
        task=kind,
        class_names=tuple(labels[i] for i in sorted(labels)) if labels else None,
        default_data=default_data,
        card=card,
        tokenizer=_tokenizer(where, local=local, trust_remote_code=remote),
    )


def estimate_hf(spec: Spec) -> memory.MemoryEstimate | None:
    """What a directory's model takes, from the size of its weight files; None for a hub id
    (its size is not known before it is fetched)."""
    folder = hf_directory(spec.target)
    if folder is None:
        return None
    size = sum(p.stat().st_size for pattern in _WEIGHTS for p in folder.glob(pattern))
    if size == 0:
        return None
    return memory.MemoryEstimate(
        what=spec.text,
        elements=None,
        model_bytes=size,
        working_bytes=size * memory.WORKING_COPIES,
        basis=f"{memory.format_bytes(size)} of weight files x {memory.WORKING_COPIES} "
        "working copies",
    )


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers`` model (it has ``save_pretrained`` and a
    config), told without importing transformers."""
    return callable(getattr(model, "save_pretrained", None)) and hasattr(model, "config")


def tied_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """Names of the parameters that share one tensor, one tuple per shared tensor.

    >>> import transformers
    >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)
    >>> tied_groups(transformers.GPT2LMHeadModel(config))
    [('transformer.wte.weight', 'lm_head.weight')]
    """
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return [tuple(group) for group in names.values() if len(group) > 1]


def _original_name(name: str) -> str:
    # torch's pruning renames a reparametrised weight "<name>_orig"
    return name.removesuffix("_orig")


def check_ties(model: nn.Module, copy: nn.Module) -> None:
    """Raise ``ValueError`` when ``copy`` (a pruned or baked copy of ``model``) lost a tie
    that ``model`` has: saved, it would hold the tensor twice and double in size.

    >>> import copy, transformers
    >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)
    >>> model = transformers.GPT2LMHeadModel(config)
    >>> check_ties(model, copy.deepcopy(model))  # deepcopy keeps ties: no error
    """
    kept = {tuple(sorted(_original_name(n) for n in group)) for group in tied_groups(copy)}
    for group in tied_groups(model):
        if tuple(sorted(group)) not in kept:
            raise ValueError(
                f"the pruned copy no longer ties {' and '.join(group)} (the model given does):"
                " saved, it would store the tensor twice; prune a copy whose tied weights "
                "are reparametrised together (prunelab.apply does)"
            )
