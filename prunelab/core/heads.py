"""Attention heads as prunable groups: which heads a model has, how important each is, and
head masks that become weight masks.

A head ``h`` of an attention layer with ``H`` heads of width ``d`` owns rows ``h*d:(h+1)*d``
of each of the query, key and value projections and the same columns of the output
projection. Three layouts are recognised (:func:`attention_layers`):

* ``torch.nn.MultiheadAttention`` (torchvision's ViT): ``in_proj_weight`` (q, k, v stacked
  along dim 0) and ``out_proj``;
* a module with a fused ``qkv`` Linear, an output ``proj`` Linear and ``num_heads``
  (torchvision's Swin, timm's ViT);
* Hugging Face GPT-2's ``c_attn``/``c_proj`` (``Conv1D``: ``x @ W``, so q, k, v run along the
  weight's dim 1 and ``c_proj``'s inputs along its dim 0).

**Importance** (:func:`head_importance`) is the L2 norm of all of a head's weights: its q, k, v
rows and its output columns. It needs no data, is the same for any input, and is ready at
once (the app shows it without a calibration pass). It is crude: a head with large weights may
still attend to nothing useful. The data-aware score of Michel et al. (2019), how much the loss
moves when a head's output is scaled, catches that:
:func:`prunelab.core.head_scores.head_taylor_importance` and the strategy ``head-taylor``.

**Masks** (:func:`masks_for_heads`): a pruned head loses its output-projection columns and its
q, k, v rows and biases. The columns alone already silence it (its output is multiplied by
zero), so the masked model computes exactly what a model without the head computes, which is
what :func:`prunelab.shrinking.shrink` returns for head masks.

>>> from torch import nn
>>> net = nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True)
>>> [(a.fqn, a.num_heads, a.head_dim) for a in attention_layers(net)]
[('self_attn', 4, 4)]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .granularity import HEAD
from .masks import Masks
from .options import HIDDEN, SCOPE, SCOPES
from .selection import Layer, Selection
from .strategies import Strategy, register_strategy
from .targets import get_parameter

__all__ = [
    "AttentionLayer",
    "HeadMagnitude",
    "HeadMasks",
    "HeadSelection",
    "attention_layers",
    "head_importance",
    "heads_of",
    "masks_for_heads",
    "no_heads_error",
    "select_heads",
]


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module whose heads can be pruned.

    Attributes:
        fqn: The module's name in the model.
        kind: ``"mha"`` (nn.MultiheadAttention), ``"qkv"`` (fused qkv/proj Linears) or
            ``"conv1d"`` (GPT-2's c_attn/c_proj).
        num_heads: Number of heads.
        head_dim: Width of one head.
        qkv: ``(parameter fqn, dim)`` of the tensors whose ``dim`` runs over q, k, v, each
            laid out head after head.
        out: ``(parameter fqn, dim)`` of the output projection's weight, ``dim`` running over
            the heads' outputs.
    """

    fqn: str
    kind: str
    num_heads: int
    head_dim: int
    qkv: tuple[tuple[str, int], ...]
    out: tuple[str, int]

    def rows(self, heads: Sequence[int]) -> torch.Tensor:
        """Indices along a q/k/v dim that ``heads`` own (in each of q, k and v)."""
        width = self.num_heads * self.head_dim
        idx = [
            part * width + h * self.head_dim + i
            for part in range(3)
            for h in heads
            for i in range(self.head_dim)
        ]
        return torch.tensor(idx, dtype=torch.long)

    def columns(self, heads: Sequence[int]) -> torch.Tensor:
        """Indices along the output projection's input dim that ``heads`` own."""
        idx = [h * self.head_dim + i for h in heads for i in range(self.head_dim)]
        return torch.tensor(idx, dtype=torch.long)


def _name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _layer(fqn: str, module: nn.Module) -> AttentionLayer | None:
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim or module.in_proj_weight is None:
            return None  # separate q/k/v sizes: not laid out as one stacked weight
        qkv = [(_name(fqn, "in_proj_weight"), 0)]
        if module.in_proj_bias is not None:
            qkv.append((_name(fqn, "in_proj_bias"), 0))
        return AttentionLayer(
            fqn,
            "mha",
            module.num_heads,
            module.head_dim,
            tuple(qkv),
            (_name(fqn, "out_proj.weight"), 1),
        )
    heads = getattr(module, "num_heads", None)
    if not isinstance(heads, int) or heads < 1:
        return None
    qkv_mod, out_mod = getattr(module, "qkv", None), getattr(module, "proj", None)
    if isinstance(qkv_mod, nn.Linear) and isinstance(out_mod, nn.Linear):
        width = out_mod.in_features
        if qkv_mod.out_features != 3 * width or width % heads:
            return None
        qkv = [(_name(fqn, "qkv.weight"), 0)]
        if qkv_mod.bias is not None:
            qkv.append((_name(fqn, "qkv.bias"), 0))
        return AttentionLayer(
            fqn, "qkv", heads, width // heads, tuple(qkv), (_name(fqn, "proj.weight"), 1)
        )
    c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
    if type(c_attn).__name__ == "Conv1D" and type(c_proj).__name__ == "Conv1D":
        if getattr(module, "is_cross_attention", False):
            return None  # q comes from another projection (q_attn)
        width = c_proj.weight.shape[0]
        if c_attn.weight.shape[1] != 3 * width or width % heads:
            return None
        return AttentionLayer(
            fqn,
            "conv1d",
            heads,
            width // heads,
            ((_name(fqn, "c_attn.weight"), 1), (_name(fqn, "c_attn.bias"), 0)),
            (_name(fqn, "c_proj.weight"), 0),
        )
    return None


def attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """The attention modules of ``model`` whose heads can be pruned, in module order."""
    found = []
    for fqn, module in model.named_modules():
        layer = _layer(fqn, module)
        if layer is not None:
            found.append(layer)
    return found


def _head_view(tensor: torch.Tensor, dim: int, heads: int, width: int) -> torch.Tensor:
    """``tensor`` as (heads, everything else of that head) along ``dim`` of ``width`` a part."""
    moved = tensor.detach().float().movedim(dim, 0)
    parts = moved.shape[0] // width  # 3 for q/k/v tensors, 1 for the output projection
    return moved.reshape(parts, heads, width // heads, -1).transpose(0, 1).reshape(heads, -1)


def head_importance(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{attention fqn: one score per head}``: the L2 norm of the head's q/k/v and output
    weights (see the module docstring for why weights).

    >>> from torch import nn
    >>> net = nn.MultiheadAttention(8, 2)
    >>> head_importance(net)[""].shape
    torch.Size([2])
    """
    scores = {}
    for layer in attention_layers(model):
        width = layer.num_heads * layer.head_dim
        total = torch.zeros(layer.num_heads)
        for fqn, dim in (*layer.qkv, layer.out):
            view = _head_view(get_parameter(model, fqn), dim, layer.num_heads, width)
            total += view.square().sum(dim=1)
        scores[layer.fqn] = total.sqrt()
    return scores


class HeadMasks(Mapping[str, torch.Tensor]):
    """Which heads of which attention layer are kept: ``{attention fqn: bool[num_heads]}``.

    >>> hm = HeadMasks({"enc.0.attn": torch.tensor([True, False, True, True])})
    >>> hm.pruned(), hm.total()
    (1, 4)
    """

    def __init__(self, kept: Mapping[str, torch.Tensor]) -> None:
        for fqn, mask in kept.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 1:
                raise TypeError(f"head mask for {fqn!r} must be a 1-D bool tensor (True = kept)")
        self._kept = {fqn: mask.detach().cpu() for fqn, mask in kept.items()}

    def __getitem__(self, fqn: str) -> torch.Tensor:
        return self._kept[fqn]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def pruned(self) -> int:
        """Number of heads pruned over all layers."""
        return sum(int((~m).sum()) for m in self._kept.values())

    def total(self) -> int:
        """Number of heads over all layers."""
        return sum(m.numel() for m in self._kept.values())

    def __repr__(self) -> str:
        return f"HeadMasks({len(self)} layers, {self.pruned()} of {self.total()} heads pruned)"


def select_heads(
    scores: Mapping[str, torch.Tensor], *, sparsity: float, scope: str = "global"
) -> HeadMasks:
    """Keep the highest-scoring heads, pruning the fraction ``sparsity`` of them.

    ``scope="global"`` ranks all heads together, ``"layer"`` prunes the fraction in each
    layer. Every layer keeps at least its best head (a layer without heads has nothing to
    shrink to). Ties go to the earlier head.

    >>> s = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0, 0.5])}
    >>> {k: v.tolist() for k, v in select_heads(s, sparsity=0.5).items()}
    {'a': [True, False], 'b': [True, False]}
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity (fraction of heads pruned) must be in [0, 1], got {sparsity}")
    kept = {fqn: torch.ones(len(s), dtype=torch.bool) for fqn, s in scores.items()}
    groups = [list(scores)] if scope == "global" else [[fqn] for fqn in scores]
    for names in groups:
        entries = []
        for i, fqn in enumerate(names):
            entries += [(s, i, fqn, h) for h, s in enumerate(scores[fqn].tolist())]
        entries.sort(key=lambda e: (e[0], -e[1], -e[3]))  # lowest first, later heads first
        budget = round(sparsity * len(entries))
        for _, _, fqn, h in entries:
            if budget <= 0:
                break
            if int(kept[fqn].sum()) > 1:
                kept[fqn][h] = False
                budget -= 1
    return HeadMasks(kept)


def masks_for_heads(
    model: nn.Module, heads: Mapping[str, torch.Tensor], *, base: Masks | None = None
) -> Masks:
    """Weight masks that prune ``heads``: out-projection columns and q/k/v rows and biases.

    Tensors that are targets (see :func:`prunelab.targets`) get their masks as target masks,
    the others (``in_proj_weight``, biases) as coupled masks. ``base`` masks (e.g. of MLP
    channels) are combined: an element is kept when both keep it.

    >>> from torch import nn
    >>> net = nn.MultiheadAttention(8, 2)
    >>> m = masks_for_heads(net, {"": torch.tensor([True, False])})
    >>> m["out_proj.weight"][0].tolist()
    [True, True, True, True, False, False, False, False]
    """
    from .targets import targets

    by_fqn = {layer.fqn: layer for layer in attention_layers(model)}
    target_fqns = {t.fqn for t in targets(model)}
    weights = dict(base.items()) if base is not None else {}
    coupled = dict(base.coupled) if base is not None else {}
    for fqn, kept in heads.items():
        layer = by_fqn.get(fqn)
        if layer is None:
            raise ValueError(
                f"head mask for {fqn!r} names no attention layer of this model; attention "
                f"layers: {', '.join(by_fqn) or 'none'}"
            )
        if kept.shape != (layer.num_heads,):
            raise ValueError(f"head mask for {fqn!r} needs {layer.num_heads} values")
        gone = [h for h in range(layer.num_heads) if not bool(kept[h])]
        if not gone:
            continue
        for pfqn, dim in layer.qkv:
            _cut(model, pfqn, dim, layer.rows(gone), weights, coupled, target_fqns)
        _cut(model, *layer.out, layer.columns(gone), weights, coupled, target_fqns)
    return Masks(weights, coupled=coupled)


def _cut(model, fqn, dim, idx, weights, coupled, target_fqns) -> None:
    store = weights if fqn in target_fqns else coupled
    shape = tuple(get_parameter(model, fqn).shape)
    mask = store.get(fqn)
    mask = torch.ones(shape, dtype=torch.bool) if mask is None else mask.clone()
    store[fqn] = mask.index_fill_(dim, idx, False)


def heads_of(model: nn.Module, masks: Masks) -> HeadMasks:
    """The heads that ``masks`` prune: a head is pruned when all of its output-projection
    columns are zeroed. Empty for models without attention layers."""
    found = {}
    everything = masks.all()
    for layer in attention_layers(model):
        fqn, dim = layer.out
        mask = everything.get(fqn)
        if mask is None:
            found[layer.fqn] = torch.ones(layer.num_heads, dtype=torch.bool)
            continue
        width = layer.num_heads * layer.head_dim
        found[layer.fqn] = _head_view(mask, dim, layer.num_heads, width).bool().any(dim=1)
    return HeadMasks(found)


def no_heads_error(name: str, layers: int) -> ValueError:
    """What a head strategy says of a model without attention layers it recognises (worded as
    every strategy that finds nothing to prune says it)."""
    return ValueError(
        f"strategy {name!r} can prune none of the {layers} layer(s): it prunes attention "
        "heads, and this model has no attention layer it recognises (nn.MultiheadAttention, "
        "a qkv/proj attention such as Swin's, or GPT-2's c_attn/c_proj)"
    )


class HeadSelection(Selection):
    """Head masks for a sparsity (fraction of heads), as weight masks, from one score per head
    (any head strategy's: ``scores`` maps each attention layer to its heads' scores)."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[Layer],
        scope: str,
        *,
        scores: Mapping[str, torch.Tensor],
        name: str,
    ) -> None:
        self._scores = dict(scores)
        self._name = name
        if not self._scores:
            raise no_heads_error(name, len(layers))
        self._targets = {layer.fqn for layer in layers}
        self._scope = scope
        self._layers = attention_layers(model)
        self._shapes = {
            fqn: tuple(get_parameter(model, fqn).shape)
            for layer in self._layers
            for fqn, _ in (*layer.qkv, layer.out)
        }
        self._last: tuple[tuple, Masks] | None = None

    def _heads(self, sparsity: float, per_layer: Mapping[str, float]) -> HeadMasks:
        heads = dict(select_heads(self._scores, sparsity=sparsity, scope=self._scope))
        # a head owns an equal share of its layer's output-projection columns and of its
        # q/k/v rows, so either tensor's sparsity is the fraction of the layer's heads pruned:
        # a recipe's per-layer numbers re-apply (GPT-2's c_attn and Swin's qkv are targets)
        owners = {fqn: layer for layer in self._layers for fqn, _ in (*layer.qkv, layer.out)}
        asked: dict[str, tuple[str, float]] = {}
        for fqn, value in per_layer.items():
            layer = owners.get(fqn)
            if layer is None:
                if value:
                    raise ValueError(
                        f"strategy {self._name!r} prunes attention heads; {fqn} is not an "
                        "attention projection, so its sparsity must be 0"
                    )
                continue
            first, before = asked.setdefault(layer.fqn, (fqn, value))
            if abs(before - value) > 1e-9:
                raise ValueError(
                    f"strategy {self._name!r} prunes the same heads from {first} and {fqn} "
                    f"(both of attention layer {layer.fqn}): their sparsities must agree, "
                    f"got {before} and {value}"
                )
        for name, (_, value) in asked.items():
            one = {name: self._scores[name]}
            heads[name] = select_heads(one, sparsity=value, scope="layer")[name]
        return HeadMasks(heads)

    def _masks(self, sparsity: float, per_layer: Mapping[str, float]) -> Masks:
        key = (sparsity, tuple(sorted(per_layer.items())))
        if self._last is None or self._last[0] != key:
            heads = self._heads(sparsity, per_layer)
            weights: dict[str, torch.Tensor] = {}
            coupled: dict[str, torch.Tensor] = {}
            for layer in self._layers:
                gone = [h for h in range(layer.num_heads) if not bool(heads[layer.fqn][h])]
                if not gone:
                    continue
                cuts = [(f, d, layer.rows(gone)) for f, d in layer.qkv]
                for fqn, dim, idx in [*cuts, (*layer.out, layer.columns(gone))]:
                    store = weights if fqn in self._targets else coupled
                    store[fqn] = torch.ones(self._shapes[fqn], dtype=torch.bool).index_fill_(
                        dim, idx, False
                    )
            self._last = (key, Masks(weights, coupled=coupled))
        return self._last[1]

    def masks(self, *, sparsity, threshold, per_layer):
        if threshold is not None:
            raise ValueError(
                f"strategy {self._name!r} selects by sparsity (fraction of heads pruned) only"
            )
        return dict(self._masks(sparsity or 0.0, per_layer or {}).items())

    def coupled(self, full: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The q/k/v and output tensors that are not targets, for the last masks asked."""
        return dict(self._last[1].coupled) if self._last is not None else {}

    def scores(self) -> dict[str, torch.Tensor]:
        return dict(self._scores)


@register_strategy("head-magnitude")
@dataclass(frozen=True)
class HeadMagnitude(Strategy):
    """Prune whole attention heads by the L2 norm of their weights; sparsity = fraction of heads.

    Args:
        scope: ``"global"`` (one ranking of all heads) or ``"layer"`` (the fraction in each
            attention layer).
    """

    # what the scores are, for the heads x layers picture (figures.head_importance_map)
    score_name: ClassVar[str] = "weight L2 norm"
    scope: str = field(default="global", kw_only=True, metadata={"option": SCOPE})
    granularity: object = field(default=HEAD, kw_only=True, metadata=HIDDEN)
    prune_outputs: bool = field(default=False, kw_only=True, metadata=HIDDEN)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")

    def unsupported(self, target) -> str | None:
        return None  # heads span several tensors: the masks say which, the rest stays whole

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        raise ValueError(
            f"strategy {self.name!r} needs the model (heads span several tensors): use "
            f"prunelab.prune(model, {self.name!r}, sparsity=...) or prunelab.Pruner"
        )

    def prepare_model(self, model: nn.Module, layers: Sequence[Layer]) -> Selection:
        """What :class:`prunelab.Pruner` calls instead of :meth:`prepare`: head importance
        needs the q/k/v tensors, which are not all targets."""
        return HeadSelection(
            model, layers, self.scope, scores=head_importance(model), name=self.name
        )


# the data-aware head strategy builds on the classes above; importing it here registers
# "head-taylor" right after "head-magnitude" whichever module is imported first
from . import head_scores as _head_scores  # noqa: E402, F401
