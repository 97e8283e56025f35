"""Which tensors of a model can be pruned, named by their fully-qualified parameter name."""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..runtime.functional import check_materialized

__all__ = [
    "OutputLayers",
    "Target",
    "get_parameter",
    "grouped_readers",
    "is_hf_conv1d",
    "output_layers",
    "resolve_targets",
    "targets",
    "weight_dims",
]

# the module types whose weights prunelab prunes, for isinstance checks (one home: FLOP
# counting and shrinking ask the same questions)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
RNN = (nn.RNN, nn.LSTM, nn.GRU)
_RNN_WEIGHT = re.compile(r"^weight_(ih|hh)_l\d+(_reverse)?$")
# scores are computed in float32 for the half types (see Pruner); other dtypes (float8,
# complex, integers) have no ordering or arithmetic prunelab could rely on
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Target:
    """One prunable weight tensor.

    Attributes:
        fqn: Fully-qualified parameter name, e.g. ``"features.0.weight"``.
        module_type: Class name of the owning module, e.g. ``"Conv2d"``.
        shape: Shape of the weight.
        numel: Number of elements.
        out_dim: Dimension that indexes output channels (1 for transposed convolutions).
        in_dim: Dimension that indexes input channels/features.
        bias: fqn of the bias that belongs to the same output channels, if any.
        groups: Number of groups of a grouped convolution (1 otherwise).
        out_groups: Number of groups of the grouped convolution that reads the output
            channels (see :func:`grouped_readers`; 1 when none does or it is not known).
    """

    fqn: str
    module_type: str
    shape: tuple[int, ...]
    numel: int
    out_dim: int = 0
    in_dim: int = 1
    bias: str | None = None
    groups: int = 1
    out_groups: int = 1

    @property
    def module_fqn(self) -> str:
        """Name of the module that owns the weight (``""`` for the root module)."""
        return self.fqn.rpartition(".")[0]

    @property
    def param_name(self) -> str:
        """Name of the parameter inside its module (``"weight"``, ``"weight_ih_l0"``)."""
        return self.fqn.rpartition(".")[2]


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is Hugging Face's ``Conv1D`` (GPT-2's projections), or a subclass.

    Told by class name and module path so that transformers is never imported for it.
    """
    return any(
        cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers.")
        for cls in type(module).__mro__
    )


def weight_dims(module: nn.Module) -> tuple[int, int]:
    """``(out_dim, in_dim)``: which dimensions of ``module``'s weight index its output and
    input channels. The one place that knows each layout; every granularity, criterion and
    reshape reads it from :class:`Target`.

    Linear, convolutions and RNN weights are ``(out, in, ...)``. Transposed convolutions
    store ``(in, out / groups, ...)``, and Hugging Face's ``Conv1D`` (GPT-2) stores
    ``(in, out)``: it computes ``x @ W + b``, the transpose of a Linear of the same layer.

    >>> weight_dims(nn.Linear(4, 3)), weight_dims(nn.ConvTranspose2d(4, 3, 2))
    ((0, 1), (1, 0))
    """
    if isinstance(module, CONV_TRANSPOSE) or is_hf_conv1d(module):
        return 1, 0
    return 0, 1


def _prunable(module: nn.Module, name: str) -> bool:
    if isinstance(module, (nn.Linear, *CONV, *CONV_TRANSPOSE)) or is_hf_conv1d(module):
        return name == "weight"
    if isinstance(module, RNN):
        return bool(_RNN_WEIGHT.match(name))
    return False


def _bias_of(module: nn.Module, module_fqn: str, name: str, out_size: int) -> str | None:
    bias_name = name.replace("weight", "bias", 1)
    bias = getattr(module, bias_name, None)
    if not isinstance(bias, torch.Tensor) or bias.ndim != 1 or bias.shape[0] != out_size:
        return None
    return f"{module_fqn}.{bias_name}" if module_fqn else bias_name


def _tied_elsewhere(model: nn.Module) -> set[int]:
    """ids of parameters that a module holds as something other than a prunable weight."""
    return {
        id(param)
        for module in model.modules()
        for name, param in module.named_parameters(recurse=False)
        if not _prunable(module, name)
    }


def _all_targets(model: nn.Module) -> list[Target]:
    found = []
    # A weight tied to a non-prunable one (a language model's output head, which *is* its
    # embedding table) is not a target: pruning it would prune the embeddings too, and
    # torch's pruning would untie it (weight_orig/weight_mask), doubling the model's size.
    seen: set[int] = _tied_elsewhere(model)
    for module_fqn, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not _prunable(module, name) or param.ndim < 2:
                continue
            seen.add(id(param))
            fqn = f"{module_fqn}.{name}" if module_fqn else name
            if param.dtype not in DTYPES:
                accepted = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
                raise ValueError(
                    f"{fqn} is {str(param.dtype).removeprefix('torch.')}; prunelab prunes "
                    f"weights of dtype {accepted} (convert the model, e.g. model.float())"
                )
            out_dim, in_dim = weight_dims(module)
            found.append(
                Target(
                    fqn=fqn,
                    module_type=type(module).__name__,
                    shape=tuple(param.shape),
                    numel=param.numel(),
                    out_dim=out_dim,
                    in_dim=in_dim,
                    bias=_bias_of(module, module_fqn, name, param.shape[out_dim]),
                    groups=getattr(module, "groups", 1),
                )
            )
    return found


def _as_patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _filter(found: list[Target], patterns: list[str], *, keep: bool, what: str) -> list[Target]:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(t.fqn, pattern) for t in found):
            available = ", ".join(t.fqn for t in found[:12])
            more = f" (and {len(found) - 12} more)" if len(found) > 12 else ""
            raise ValueError(
                f"{what} pattern {pattern!r} matches no prunable tensor; "
                f"available: {available}{more}"
            )
    return [t for t in found if any(fnmatch.fnmatchcase(t.fqn, p) for p in patterns) == keep]


def targets(
    model: nn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> list[Target]:
    """List the prunable weight tensors of ``model``.

    Weights of Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d layers, Hugging Face's
    ``Conv1D`` (GPT-2; its weight is stored transposed, see :func:`weight_dims`), and the
    input-hidden and hidden-hidden weights of RNN/LSTM/GRU layers. Biases, normalisation
    layers and embeddings are not targets. A tensor shared by several prunable modules is
    listed once; one shared with an embedding (a language model's tied output head) is not
    listed, since pruning it would prune the embedding table too.

    Args:
        model: The model to inspect; it is not modified.
        include: Glob pattern(s) on fqn; only matching tensors are kept.
        exclude: Glob pattern(s) on fqn; matching tensors are dropped.

    Returns:
        Targets in module registration order.

    Raises:
        ValueError: If the model has no prunable tensor, a pattern matches nothing, the model
            is on the meta device, a prunable weight has no elements (a zero-width layer), or
            a prunable weight has a dtype other than float32, float64, float16 or bfloat16.

    >>> import torch.nn as nn
    >>> [t.fqn for t in targets(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
    ['0.weight', '2.weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_materialized(model)
    found = _all_targets(model)
    if not found:
        # a torch.export program comes back as a GraphModule: its layers are gone, only ops
        program = isinstance(model, torch.fx.GraphModule)
        hint = (
            "; a torch.export program (.pt2) runs as exported, its layers flattened into "
            "operations: to prune it, load its weights into its architecture (arch=...)"
        )
        raise ValueError(
            f"{type(model).__name__} has no prunable tensors: prunelab prunes the weights of "
            "Linear, Conv1d/2d/3d, ConvTranspose, Hugging Face Conv1D and RNN/LSTM/GRU layers"
            + (hint if program else "")
        )
    if empty := [t for t in found if t.numel == 0]:
        shape = "x".join(map(str, empty[0].shape))
        raise ValueError(
            f"{empty[0].fqn} ({empty[0].module_type}) has no weights (shape {shape}): a "
            "zero-width layer cannot be scored, pruned or shrunk; give it at least one "
            "channel or take it out of the model"
        )
    if (patterns := _as_patterns(include)) is not None:
        found = _filter(found, patterns, keep=True, what="include")
    if (patterns := _as_patterns(exclude)) is not None:
        found = _filter(found, patterns, keep=False, what="exclude")
    if not found:
        raise ValueError("include/exclude patterns left no tensor to prune")
    return found


def resolve_targets(model: nn.Module, selection: Sequence[Target | str] | None) -> list[Target]:
    """Turn ``None`` (all), fqn strings / glob patterns or Targets into a list of Targets."""
    if selection is None:
        return targets(model)
    if isinstance(selection, str):
        selection = [selection]
    found = targets(model)
    by_fqn = {t.fqn: t for t in found}
    chosen: dict[str, Target] = {}
    for item in selection:
        if isinstance(item, Target):
            if item.fqn not in by_fqn:
                raise ValueError(f"target {item.fqn!r} is not a prunable tensor of this model")
            chosen[item.fqn] = by_fqn[item.fqn]
        elif isinstance(item, str):  # matched against the list above, not a rescan per item
            for t in _filter(found, [item], keep=True, what="include"):
                chosen[t.fqn] = t
        else:
            raise TypeError(f"targets must be Target objects or fqn strings, got {item!r}")
    return [t for t in by_fqn.values() if t.fqn in chosen]


def get_parameter(model: nn.Module, fqn: str) -> torch.Tensor:
    """Return the tensor named ``fqn`` (a parameter or a buffer) of ``model``."""
    module_fqn, _, name = fqn.rpartition(".")
    try:
        module = model.get_submodule(module_fqn) if module_fqn else model
    except AttributeError as exc:
        raise ValueError(f"model has no module {module_fqn!r} (from {fqn!r})") from exc
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"model has no tensor {fqn!r}")
    return value


@dataclass(frozen=True)
class OutputLayers:
    """The targets whose outputs are the model's outputs.

    Attributes:
        fqns: Target fqns whose output reaches the model's output without passing through
            another prunable layer (the final classifier, and every layer that feeds the
            output through a skip connection).
        how: How they were found: ``"traced"`` (from the model's graph) or, when the model
            cannot be traced, a sentence saying so and what was assumed instead.
    """

    fqns: tuple[str, ...]
    how: str = "traced"


# tracing a large model takes tens of milliseconds and a sensitivity run asks once per
# layer: remember the answer per model object, for as long as its targets stay the same
_OUTPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_OUTPUTS_LOCK = threading.Lock()  # the app's sessions are threads of one process


def output_layers(model: nn.Module) -> OutputLayers:
    """Find the prunable layers that produce the model's outputs.

    The model's graph is traced symbolically (``torch.fx``; no input is needed and the model
    is not run or modified) and walked back from its outputs; each path stops at the first
    prunable layer it meets (a Linear, convolution or RNN module, or a function applied to a
    target weight). Those layers' output channels are the model's outputs: channel pruning
    them deletes outputs (classes) outright. A model that cannot be traced (data-dependent
    control flow, ...) falls back to its last prunable layer in registration order, and
    ``how`` says so.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> output_layers(net).fqns
    ('2.weight',)
    """
    found = targets(model)
    signature = tuple((t.fqn, t.shape) for t in found)
    with _OUTPUTS_LOCK:
        cached = _OUTPUTS.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    head = _declared_head(model, found)
    try:
        result = head if head is not None else OutputLayers(_traced_outputs(model, found))
    except Exception as exc:  # tracing fails in many ways; each means "untraceable"
        text = str(exc).strip()
        reason = text.splitlines()[0][:160] if text else type(exc).__name__
        result = OutputLayers(
            (found[-1].fqn,),
            how=(
                f"the model's graph could not be traced ({reason}), so its last prunable "
                f"layer, {found[-1].fqn}, is taken to produce the outputs"
            ),
        )
    with _OUTPUTS_LOCK:
        _OUTPUTS[model] = (signature, result)
    return result


def _declared_head(model: nn.Module, found: list[Target]) -> OutputLayers | None:
    """The output layer a model names itself (Hugging Face's ``get_output_embeddings()``,
    a language model's ``lm_head``), or None when it names none.

    Such models do not trace with ``torch.fx``, and the fallback (the last prunable layer) is
    wrong for them: GPT-2's last block's ``mlp.c_proj`` feeds the residual stream, not the
    logits. The head itself is a target only when untied; tied to the input embedding it is
    not prunable at all, and then no prunable layer produces the outputs.
    """
    named = getattr(model, "get_output_embeddings", None)
    if not callable(named):
        return None
    try:
        head = named()
    except (AttributeError, NotImplementedError):  # a base model without a head
        return None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    for t in found:
        if get_parameter(model, t.fqn) is weight:
            return OutputLayers((t.fqn,), how="the model's own output head")
    return OutputLayers(
        (),
        how="the model's output head is tied to its input embedding, which is not a prunable "
        "target: no prunable layer produces the outputs",
    )


def _trace(model: nn.Module, by_module: Mapping[str, list[str]]) -> torch.fx.Graph:
    from torch import fx

    class _Tracer(fx.Tracer):
        # prunable modules stay whole, whatever their class (subclasses of nn.Linear, ...)
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in by_module or super().is_leaf_module(module, qualified_name)

    return _Tracer().trace(model)


def _traced_outputs(model: nn.Module, found: list[Target]) -> tuple[str, ...]:
    from torch import fx

    by_module: dict[str, list[str]] = {}
    for t in found:
        by_module.setdefault(t.module_fqn, []).append(t.fqn)
    fqns = {t.fqn for t in found}
    graph = _trace(model, by_module)
    outputs = [node for node in graph.nodes if node.op == "output"]
    hits: list[str] = []
    seen: set[fx.Node] = set()
    todo = [n for node in outputs for n in node.all_input_nodes]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and node.target in by_module:
            hits.extend(by_module[node.target])
            continue
        if node.op == "get_attr" and node.target in fqns:
            hits.append(node.target)
            continue
        weights = [
            n.target for n in node.all_input_nodes if n.op == "get_attr" and n.target in fqns
        ]
        if weights:  # a function applied to a target weight (F.linear(x, self.fc.weight))
            hits.extend(weights)
            continue
        todo.extend(node.all_input_nodes)
    if not hits:
        raise ValueError("no prunable layer reaches the outputs")
    return tuple(t.fqn for t in found if t.fqn in set(hits))


# what may lie between a layer and the grouped convolution reading its channels without
# moving them: normalisation, activations, dropout, and element-wise arithmetic
_IN_PLACE_MODULES = (
    "torch.nn.modules.activation",
    "torch.nn.modules.batchnorm",
    "torch.nn.modules.dropout",
    "torch.nn.modules.linear",
)
_ELEMENTWISE = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    torch.add,
    torch.mul,
    torch.relu,
    torch.sigmoid,
    nn.functional.relu,
    nn.functional.relu6,
    nn.functional.gelu,
    nn.functional.silu,
    nn.functional.hardswish,
}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "sigmoid", "contiguous"}


def _grouped(module: nn.Module) -> bool:
    groups = getattr(module, "groups", 1)
    return groups > 1 and not module.in_channels == module.out_channels == groups


def grouped_readers(model: nn.Module, found: Sequence[Target]) -> dict[str, int]:
    """Per convolution target, the groups of the grouped convolutions that read its outputs.

    A grouped convolution (ResNeXt's, RegNet's) can lose an input channel only at a position
    that every group loses, so the layer feeding it is best pruned by position too (see
    :class:`prunelab.core.granularity.Channel`). The traced graph is followed from each
    layer through normalisation, activations and element-wise arithmetic; anything that
    moves channels (concatenation, reshapes) or a model that cannot be traced leaves the
    layer out (it is then pruned channel by channel, as before).
    """
    if not any(isinstance(m, CONV) and _grouped(m) for m in model.modules()):
        return {}  # nothing reads by position: no need to trace (every channel Pruner asks)
    by_module: dict[str, list[str]] = {}
    for t in found:
        by_module.setdefault(t.module_fqn, []).append(t.fqn)
    try:
        graph = _trace(model, by_module)
    except Exception:  # untraceable: channel by channel, as before
        return {}
    modules = dict(model.named_modules())
    readers: dict[str, int] = {}
    for node in graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is None or node.target not in by_module or not isinstance(module, CONV):
            continue
        groups = _reader_groups(node, modules, by_module)
        if groups > 1 and module.out_channels % groups == 0:
            readers.update(dict.fromkeys(by_module[node.target], groups))
    return readers


def _reader_groups(start, modules: Mapping[str, nn.Module], by_module) -> int:
    groups, seen, todo = 1, set(), list(start.users)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "output":
            continue
        if module is not None and node.target in by_module:
            if isinstance(module, CONV) and _grouped(module):
                groups = math.lcm(groups, module.groups)
            continue  # a prunable layer: its own outputs are its own business
        passes = (
            (module is not None and type(module).__module__ in _IN_PLACE_MODULES)
            or (node.op == "call_function" and node.target in _ELEMENTWISE)
            or (node.op == "call_method" and node.target in _ELEMENTWISE_METHODS)
        )
        if not passes:
            return 1
        todo.extend(node.users)
    return groups
