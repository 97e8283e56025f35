"""Removing attention heads from torchvision's Swin Transformer (v1 and v2).

torchvision's ``ShiftedWindowAttention`` calls the functional ``shifted_window_attention``,
which takes each head's width as ``input width // num_heads``: with fewer heads and the same
input (the residual stream keeps its width), it would split the q, k, v rows wrongly. So a
head-pruned Swin attention becomes a :class:`HeadPrunedWindowAttention` (or its v2 twin), the
same module with the kept heads' q, k, v rows, output-projection columns and per-head
relative-position bias (v2: logit scales and the bias MLP's outputs), whose forward is that
function with the head width kept explicitly. Windows, shifts and their masks are unchanged.

>>> from torchvision.models.swin_transformer import ShiftedWindowAttention
>>> attn = ShiftedWindowAttention(8, [2, 2], [0, 0], num_heads=2).eval()
>>> x = torch.randn(1, 4, 4, 8)
>>> prune_window_heads(attn, [1])
>>> attn.num_heads, attn.head_dim, tuple(attn(x).shape)
(1, 4, (1, 4, 4, 8))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

__all__ = [
    "HeadPrunedWindowAttention",
    "HeadPrunedWindowAttentionV2",
    "per_head_tensors",
    "prune_window_heads",
]


def per_head_tensors(module: nn.Module) -> list[tuple[str, int]]:
    """``(parameter name, dim)`` of the tensors of a Swin attention other than q/k/v and the
    output projection that hold one slice per head (empty for other modules)."""
    if isinstance(module, ShiftedWindowAttentionV2):
        return [("logit_scale", 0), ("cpb_mlp.2.weight", 0)]
    if isinstance(module, ShiftedWindowAttention):
        return [("relative_position_bias_table", 1)]
    return []


def _window_attention(module: nn.Module, x: torch.Tensor, logit_scale=None) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` with ``module.head_dim`` as the head width."""
    heads, head_dim, ws = module.num_heads, module.head_dim, module.window_size
    B, H, W, C = x.shape
    pad_r, pad_b = (ws[1] - W % ws[1]) % ws[1], (ws[0] - H % ws[0]) % ws[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift = [
        0 if ws[0] >= pad_H else module.shift_size[0],
        0 if ws[1] >= pad_W else module.shift_size[1],
    ]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    n_windows = (pad_H // ws[0]) * (pad_W // ws[1])
    x = x.view(B, pad_H // ws[0], ws[0], pad_W // ws[1], ws[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * n_windows, ws[0] * ws[1], C)
    qkv_bias = module.qkv.bias
    if logit_scale is not None and qkv_bias is not None:  # v2: no key bias
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length].zero_()
    qkv = F.linear(x, module.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(x.size(0), x.size(1), 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:  # v2: cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * head_dim**-0.5).matmul(k.transpose(-2, -1))
    attn = attn + module.get_relative_position_bias()
    if sum(shift) > 0:
        mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None))
        for count, (h, w) in enumerate((h, w) for h in h_slices for w in w_slices):
            mask[h[0] : h[1], w[0] : w[1]] = count
        mask = mask.view(pad_H // ws[0], ws[0], pad_W // ws[1], ws[1])
        mask = mask.permute(0, 2, 1, 3).reshape(n_windows, ws[0] * ws[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(x.size(0) // n_windows, n_windows, heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=module.attention_dropout, training=module.training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * head_dim)
    x = F.dropout(
        F.linear(x, module.proj.weight, module.proj.bias),
        p=module.dropout,
        training=module.training,
    )
    x = x.view(B, pad_H // ws[0], pad_W // ws[1], ws[0], ws[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


class HeadPrunedWindowAttention(ShiftedWindowAttention):
    """A Swin (v1) window attention with fewer heads of the original width (``head_dim``);
    made by :func:`prune_window_heads`, never constructed directly."""

    head_dim: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _window_attention(self, x)


class HeadPrunedWindowAttentionV2(ShiftedWindowAttentionV2):
    """:class:`HeadPrunedWindowAttention` for Swin v2 (cosine attention, logit scales)."""

    head_dim: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _window_attention(self, x, self.logit_scale)


def _sliced(param: torch.Tensor, dim: int, idx: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(param.detach().index_select(dim, idx.to(param.device)).clone())


def prune_window_heads(module: nn.Module, kept: Sequence[int]) -> None:
    """Keep only the heads ``kept`` of a torchvision Swin attention, in place."""
    heads = module.num_heads
    width = module.proj.in_features
    head_dim = width // heads
    heads_idx = torch.tensor(list(kept), dtype=torch.long)
    cols = (heads_idx[:, None] * head_dim + torch.arange(head_dim)).flatten()
    rows = torch.cat([part * width + cols for part in range(3)])
    with torch.no_grad():
        module.qkv.weight = _sliced(module.qkv.weight, 0, rows)
        if module.qkv.bias is not None:
            module.qkv.bias = _sliced(module.qkv.bias, 0, rows)
        module.proj.weight = _sliced(module.proj.weight, 1, cols)
        for name, dim in per_head_tensors(module):
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            setattr(owner, attr, _sliced(getattr(owner, attr), dim, heads_idx))
    module.qkv.out_features, module.proj.in_features = 3 * len(cols), len(cols)
    if isinstance(module, ShiftedWindowAttentionV2):
        module.cpb_mlp[2].out_features = len(kept)
        module.__class__ = HeadPrunedWindowAttentionV2
    else:
        module.__class__ = HeadPrunedWindowAttention
    module.num_heads, module.head_dim = len(kept), head_dim
