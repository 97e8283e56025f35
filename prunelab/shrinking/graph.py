"""Torch-Pruning's dependency graph of a model, and the groups of layers that must lose the
same channels (:func:`coupled_groups`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ..core.apply import copy_model
from ..core.targets import CONV, CONV_TRANSPOSE

__all__ = ["coupled_groups", "train_mode"]

_LAYERS = (nn.Linear, *CONV, *CONV_TRANSPOSE)
# norms whose statistics span the channels they normalise: a zeroed channel still counts in
# them, a removed one does not (GroupNorm is handled per norm group in .plan)
_CHANNEL_NORMS = (nn.LayerNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


@dataclass
class _Group:
    group: object  # a torch_pruning Group built with every channel of its root
    channels: int
    layers: list[str]
    outputs: bool  # the channels are the model's outputs (no layer reads them): they stay
    inputs: bool = False  # the channels are the model input's: they stay
    norm: str | None = None  # a LayerNorm over these channels: they stay (see .plan)
    keep: torch.Tensor | None = None

    @property
    def fixed(self) -> bool:
        """Whether no channel of the group can be removed (pruned ones stay as zero rows)."""
        return self.outputs or self.inputs or self.norm is not None


def grouped(module: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (whose inputs are its outputs)."""
    groups = getattr(module, "groups", 1)
    return groups > 1 and not module.in_channels == module.out_channels == groups


@contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in train mode as far as it is deterministic, its buffers restored after.

    The model and every module with tensors of its own (norms: batch statistics) train;
    modules without tensors (dropout, and wrappers such as torchvision's auxiliary heads that
    call ``F.dropout(training=self.training)``) are in eval mode, since their training flag
    only makes the output random, and two random outputs cannot be compared. Running
    statistics are put back, so the check leaves the model as it found it.
    """
    flags = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.train()
    for module in model.modules():
        if module is not model and not module._parameters and not module._buffers:
            module.training = False
    try:
        yield model
    finally:
        with torch.no_grad():
            for buffer, value in buffers:
                if buffer.shape == value.shape:
                    buffer.copy_(value)
        for module, flag in flags.items():
            module.training = flag


def _tp():
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "shrink needs the torch-pruning package (pip install torch-pruning)"
        ) from exc
    return torch_pruning


def _check_input(example_input: object) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"example_input must be one input batch as a tensor, got {type(example_input).__name__}"
        )
    return example_input


def _graph(work: nn.Module, example_input: torch.Tensor):
    """Torch-Pruning's dependency graph of ``work`` (a private copy), the shapes of the outputs
    of the model in eval mode (see :func:`_shapes`), how many times each module (by name) was
    called in the trace, and whether the model has branches that run in training only.

    The graph is traced in eval mode. Where that leaves modules with parameters uncalled (the
    auxiliary classifiers of GoogLeNet and Inception run in training only), it is traced again
    in train mode (:func:`train_mode`), so that their channels are removed with the rest and
    the shrunk model still trains; Torch-Pruning itself traces in eval mode only. A model that
    declares auxiliary heads (:func:`_has_aux_heads`) is traced once, in train mode."""
    if _has_aux_heads(work):  # known to have them: one trace, in train mode, covers both
        with torch.no_grad():  # the eval-mode output shapes, which the check needs
            outputs = _shapes(work.eval()(example_input))
        graph, _, calls = _trace(work, example_input, train=True)
        return graph, outputs, calls, True
    graph, outputs, calls = _trace(work, example_input, train=False)
    # a module neither called nor inside a called one (whose forward may use a child's
    # weights directly, as MultiheadAttention its out_proj's) runs in training only
    idle = [
        n
        for n, m in work.named_modules()
        if n and m._parameters and n not in calls and n.rpartition(".")[0] not in calls
    ]
    if not idle:
        return graph, outputs, calls, False
    graph, _, calls = _trace(work, example_input, train=True)
    return graph, outputs, calls, True


def _has_aux_heads(work: nn.Module) -> bool:
    """Whether ``work`` says it has auxiliary classifiers (torchvision's GoogLeNet and
    Inception v3: ``aux_logits``). Only a shortcut: the eval-mode trace finds training-only
    branches of any model, but tracing twice cost GoogLeNet a quarter of its shrinking time."""
    return getattr(work, "aux_logits", False) is True and any(
        "aux" in name.lower() for name, _ in work.named_children()
    )


@contextmanager
def _branch_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with the modules that have children in train mode and the leaves in eval mode.

    For tracing the graph: a training-only branch is chosen by a container's forward
    (``if self.training and self.aux_logits``), while a leaf's flag changes only its values
    (batch statistics, dropout), not which layers run. With its norms in eval mode the model
    traces on one sample (batch statistics of a 1x1 map need two) and leaves its buffers be."""
    flags = {m: m.training for m in model.modules()}
    for module in model.modules():
        module.training = next(module.children(), None) is not None
    try:
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def _trace(work: nn.Module, example_input: torch.Tensor, *, train: bool):
    """One trace of :func:`_graph`: the graph, the output shapes and the calls per module."""
    tp = _tp()
    training = work.training
    flags = [p.requires_grad for p in work.parameters()]
    outputs: list = []
    calls: dict[str, int] = {}

    def count(name: str) -> Callable:
        def hook(*_: object) -> None:
            calls[name] = calls.get(name, 0) + 1

        return hook

    hooks = [m.register_forward_hook(count(n)) for n, m in work.named_modules() if n]

    def forward(module: nn.Module, inputs: torch.Tensor) -> object:
        # given a bare tensor, Torch-Pruning first tries module(*inputs), which for a batch of
        # one runs the model on the unbatched sample until a layer refuses it: one call, no
        # wasted partial forward
        if inputs.is_floating_point():  # the trace then shows which ops read the input itself
            inputs = inputs.detach().requires_grad_()
        if not train:
            out = module(inputs)
        else:  # Torch-Pruning puts the model in eval mode before calling this
            with _branch_mode(module):
                out = module(inputs)
        outputs.append(_shapes(out))
        return out

    work.eval()
    for param in work.parameters():
        param.requires_grad_(True)  # the graph is traced through autograd
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                work, example_inputs=example_input, forward_fn=forward, verbose=False
            )
    except Exception as exc:
        raise ValueError(
            f"Torch-Pruning could not trace the model ({type(exc).__name__}: {exc}); shrink "
            "needs a model it can run on example_input"
        ) from exc
    finally:
        for handle in hooks:
            handle.remove()
        work.train(training)
        for param, flag in zip(work.parameters(), flags, strict=True):
            param.requires_grad_(flag)
    return graph, outputs[0], calls


def _shapes(out: object) -> object:
    """The shapes in a model output (nested tuples and lists kept), to compare two outputs'
    structure without keeping them."""
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, Mapping):
        return tuple((key, _shapes(value)) for key, value in out.items())
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def _handler_kind(dep) -> str:
    name = dep.handler.__name__
    return "in" if "in_channels" in name else "out"


def _reads_input(node) -> bool:
    """Whether the traced op of ``node`` takes the model input itself (a leaf that is not a
    parameter: :func:`_graph` traces with the input requiring grad)."""
    return any(
        fn is not None and not isinstance(getattr(fn, "variable", None), (nn.Parameter, type(None)))
        for fn, _ in getattr(node.grad_fn, "next_functions", ())
    )


def _groups(graph) -> list[_Group]:
    names = graph._module2name
    found = []
    for group in graph.get_all_groups():
        layers, outputs, inputs, norm = [], True, False, None
        for dep, _ in group:
            module = dep.target.module
            kind = _handler_kind(dep)
            # Torch-Pruning does not track the model input: channels an op passes through
            # (norms, adds, depthwise convolutions) or a layer's input channels, read straight
            # from it, cannot be removed
            several = getattr(module, "groups", 1) > 1
            passes = kind == "in" or not isinstance(module, _LAYERS) or several
            inputs = inputs or (passes and _reads_input(dep.target))
            if isinstance(module, _CHANNEL_NORMS) and module in names:
                norm = norm or names[module]
            if isinstance(module, nn.Module) and module in names:
                layers.append(f"{names[module]} ({kind})")
                if kind == "in" and isinstance(module, _LAYERS):
                    outputs = False  # another layer reads these channels
        found.append(_Group(group, len(group[0].idxs), layers, outputs, inputs, norm))
    return found


def coupled_groups(model: nn.Module, example_input: torch.Tensor) -> pd.DataFrame:
    """Which layers must lose the same channels: one row per dependency group.

    Args:
        model: The model; not modified (the graph is traced on a copy).
        example_input: One input batch to trace the model with.

    Returns:
        A DataFrame with ``group`` (number), ``root`` (the layer the group is named after),
        ``channels``, ``layers`` (module names, ``(out)`` where output channels go and
        ``(in)`` where input channels go), ``size`` (number of modules) and ``removable``
        (False where the channels are the model's outputs, or its input's, or a LayerNorm
        normalises over them).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> table = coupled_groups(net, torch.randn(1, 3, 8, 8))
    >>> table.loc[table["root"] == "0", "layers"].item()
    '0 (out), 1 (out), 3 (in)'
    """
    example_input = _check_input(example_input)
    work = copy_model(model)
    return _group_table(_groups(_graph(work, example_input)[0]), work, with_removed=False)


def _group_table(groups: list[_Group], work: nn.Module, *, with_removed: bool) -> pd.DataFrame:
    names = {m: n for n, m in work.named_modules()}
    rows = []
    for number, item in enumerate(groups):
        root = item.group[0].dep.target.module
        row = {
            "group": number,
            "root": names.get(root, "?"),
            "channels": item.channels,
            "layers": ", ".join(item.layers),
            "size": len(item.layers),
            "removable": not item.fixed,
        }
        if with_removed:
            kept = item.channels if item.keep is None else int(item.keep.sum())
            row["removed"] = item.channels - kept
        rows.append(row)
    columns = ["group", "root", "channels", "layers", "size", "removable"]
    return pd.DataFrame(rows, columns=columns + (["removed"] if with_removed else []))
