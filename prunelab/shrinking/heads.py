"""Removing attention heads: the part of :func:`~prunelab.shrinking.shrink` for head masks
(:mod:`prunelab.core.heads`).

Torch-Pruning removes heads of ``nn.MultiheadAttention`` only together with the embedding
width (its pruner narrows ``embed_dim``, which in ``nn.MultiheadAttention`` is both the
residual stream's width and the heads' total width; its ``prune_num_heads`` option acts on
separate ``qkv`` Linear layers, as in timm). Removing a head while keeping the residual
stream needs a module whose heads' total width may differ from its ``embed_dim``, which
``nn.MultiheadAttention`` cannot express. So prunelab removes heads itself:

* ``nn.MultiheadAttention`` becomes a :class:`HeadPrunedAttention` with the kept heads'
  q, k, v rows and output columns (same ``embed_dim``, fewer ``num_heads``, same
  ``head_dim``; same call signature, so torchvision's ViT calls it unchanged);
* GPT-2's attention keeps its class: ``c_attn`` loses the heads' columns, ``c_proj`` their
  rows, and ``num_heads``/``split_size`` follow (it reshapes by ``head_dim``).

* torchvision's Swin attention (fused ``qkv``/``proj``) becomes a head-pruned twin whose
  forward keeps the head width explicitly (:mod:`.swin`); other fused ``qkv``/``proj``
  modules (timm's) are masked but not shrunk: prunelab cannot know their forward.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.heads import AttentionLayer, attention_layers, heads_of
from ..core.masks import Masks
from ..core.targets import get_parameter
from ..errors import ShrinkError

__all__ = [
    "HeadPrunedAttention",
    "head_parameters",
    "head_rows",
    "head_tensors",
    "remove_heads",
    "split_head_masks",
    "zero_heads",
]


class HeadPrunedAttention(nn.Module):
    """``nn.MultiheadAttention`` with fewer heads than ``embed_dim // head_dim``.

    q, k and v are projected from ``embed_dim`` to ``num_heads * head_dim`` each, attended
    per head, and projected back to ``embed_dim``: what ``nn.MultiheadAttention`` computes
    with the removed heads' output columns zeroed. ``forward`` takes its arguments.

    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> small = HeadPrunedAttention.from_mha(mha, [0]).eval()
    >>> small(torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))[0].shape
    torch.Size([1, 3, 8])
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, bias: bool,
                 out_bias: bool, batch_first: bool, dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        width = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, embed_dim, bias=out_bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, kept: list[int]) -> HeadPrunedAttention:
        """The module ``mha`` with only the heads ``kept``, weights copied."""
        layer = AttentionLayer("", "mha", mha.num_heads, mha.head_dim, (), ("", 1))
        rows, cols = layer.rows(kept), layer.columns(kept)
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, len(kept), mha.head_dim, bias=bias,
                  out_bias=mha.out_proj.bias is not None, batch_first=mha.batch_first,
                  dropout=mha.dropout)  # fmt: skip
        device, dtype = mha.in_proj_weight.device, mha.in_proj_weight.dtype
        new.to(device=device, dtype=dtype)
        with torch.no_grad():
            new.in_proj_weight.copy_(mha.in_proj_weight[rows])
            if bias:
                new.in_proj_bias.copy_(mha.in_proj_bias[rows])
            new.out_proj.weight.copy_(mha.out_proj.weight[:, cols])
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):  # fmt: skip
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query[None], key[None], value[None]
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q, k, v = (
            F.linear(t, wi, bi).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
            for t, wi, bi in zip((query, key, value), w, b, strict=True)
        )
        mask = _merged_mask(attn_mask, key_padding_mask, q)
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5
        if is_causal and mask is None:
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)
            mask = torch.zeros_like(causal, dtype=q.dtype).masked_fill(~causal.tril(), -torch.inf)
        if mask is not None:
            scores = scores + mask
        weights = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = self.out_proj((weights @ v).transpose(1, 2).flatten(2))
        if unbatched:
            out, weights = out[0], weights[0]
        if not self.batch_first and not unbatched:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=-3) if average_attn_weights else weights


def _merged_mask(attn_mask, key_padding_mask, q):
    """nn.MultiheadAttention's two masks as one additive float mask (None when neither)."""
    merged = None
    for mask, shape in ((attn_mask, None), (key_padding_mask, "keys")):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                mask, -torch.inf
            )
        if shape == "keys":  # (N, S) -> (N, 1, 1, S)
            mask = mask[:, None, None, :]
        elif mask.dim() == 3:  # (N * heads, L, S): heads of the full module; not supported
            raise ShrinkError("a head-pruned attention takes 2-D attention masks only")
        merged = mask if merged is None else merged + mask
    return merged


def split_head_masks(model: nn.Module, masks: Masks) -> tuple[dict[str, list[int]], Masks]:
    """The heads ``masks`` prune (``{attention fqn: heads kept}``, for layers losing some) and
    the rest of the masks, without the attention layers' q/k/v and output tensors."""
    pruned = {f: m for f, m in heads_of(model, masks).items() if not bool(m.all())}
    kept = {name: torch.nonzero(m).flatten().tolist() for name, m in pruned.items()}
    _, rest = masks.split(set(head_tensors(model, kept)))
    return kept, rest


def head_tensors(model: nn.Module, heads: Mapping[str, list[int]]) -> dict[str, tuple[int, str]]:
    """``{parameter fqn: (dim, layer)}`` of the q/k/v and output tensors of the layers in
    ``heads``."""
    layers = {layer.fqn: layer for layer in attention_layers(model)}
    found = {}
    for name in heads:
        for fqn, dim in layers[name].qkv:
            found[fqn] = (dim, name)
        found[layers[name].out[0]] = (layers[name].out[1], name)
    return found


def head_parameters(model: nn.Module, heads: Mapping[str, list[int]]) -> dict[str, int]:
    """``{parameter fqn: elements removed}`` when only the heads kept in ``heads`` stay."""
    layers = {layer.fqn: layer for layer in attention_layers(model)}
    gone = {}
    for fqn, (dim, name) in head_tensors(model, heads).items():
        layer = layers[name]
        shape = get_parameter(model, fqn).shape
        per_head = shape[dim] // layer.num_heads
        gone[fqn] = shape.numel() // shape[dim] * per_head * (layer.num_heads - len(heads[name]))
    if any(layers[name].kind == "qkv" for name in heads):
        from .swin import per_head_tensors  # imports torchvision

        for name, kept in heads.items():
            for pname, dim in per_head_tensors(model.get_submodule(name)):
                shape = get_parameter(model, f"{name}.{pname}").shape
                removed = layers[name].num_heads - len(kept)
                gone[f"{name}.{pname}"] = shape.numel() // shape[dim] * removed
    return gone


def head_rows(model: nn.Module, heads: Mapping[str, list[int]]) -> dict[str, int]:
    """``{attention fqn: q, k and v rows removed}``."""
    by_name = {layer.fqn: layer for layer in attention_layers(model)}
    return {
        name: 3 * by_name[name].head_dim * (by_name[name].num_heads - len(kept))
        for name, kept in heads.items()
    }


def zero_heads(work: nn.Module, masks: Masks, heads: Mapping[str, list[int]]) -> None:
    """Apply the given masks of the head-pruned layers' tensors to ``work`` in place."""
    layers = {layer.fqn: layer for layer in attention_layers(work)}
    everything = masks.all()
    for name in heads:
        for fqn, _ in (*layers[name].qkv, layers[name].out):
            mask = everything.get(fqn)
            if mask is not None:
                param = get_parameter(work, fqn)
                param.masked_fill_(~mask.to(param.device), 0)


def remove_heads(work: nn.Module, heads: Mapping[str, list[int]]) -> None:
    """Take the pruned heads out of ``work`` in place (``heads``: the kept ones per layer)."""
    layers = {layer.fqn: layer for layer in attention_layers(work)}
    for name, kept in heads.items():
        layer = layers[name]
        module = work.get_submodule(name)
        if layer.kind == "mha":
            parent, _, attr = name.rpartition(".")
            setattr(work.get_submodule(parent), attr, HeadPrunedAttention.from_mha(module, kept))
        elif layer.kind == "conv1d":
            _slice_gpt2(module, layer, kept)
        elif _is_swin(module):
            from .swin import prune_window_heads

            prune_window_heads(module, kept)
        else:
            raise ShrinkError(
                f"shrink cannot remove heads of {name} ({type(module).__name__}): prunelab "
                "knows the forward of nn.MultiheadAttention, torchvision's Swin attention and "
                "GPT-2's attention only, and another forward may derive the head width from "
                "the input width; use the masked model (prunelab.apply) for its head masks"
            )


def _is_swin(module: nn.Module) -> bool:
    """torchvision's Swin attention (v1 or v2), told without importing torchvision."""
    return any(
        cls.__name__ == "ShiftedWindowAttention"
        and cls.__module__.startswith("torchvision.models.swin")
        for cls in type(module).__mro__
    )


def _slice_gpt2(module: nn.Module, layer: AttentionLayer, kept: list[int]) -> None:
    rows, cols = layer.rows(kept), layer.columns(kept)
    with torch.no_grad():
        c_attn, c_proj = module.c_attn, module.c_proj
        c_attn.weight = nn.Parameter(c_attn.weight[:, rows].clone())
        c_attn.bias = nn.Parameter(c_attn.bias[rows].clone())
        c_proj.weight = nn.Parameter(c_proj.weight[cols].clone())
    width = len(kept) * layer.head_dim
    c_attn.nf = 3 * width
    if hasattr(c_proj, "nx"):
        c_proj.nx = width
    module.num_heads = len(kept)
    module.split_size = width
