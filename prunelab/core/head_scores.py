"""Data-aware attention-head importance (Michel, Levy & Neubig, 2019, "Are Sixteen Heads
Really Better than One?") and the strategy ``head-taylor`` that prunes by it.

Put a gate ``xi_h = 1`` on the output of head ``h``; the head's importance is how much the
loss moves when the gate moves, summed over the calibration batches::

    I_h = sum over batches b of | dL_b / dxi_h |

with ``L_b`` the model's mean loss on batch ``b`` (cross-entropy over samples for a
classifier, over the tokens not labelled -100 for a language model, as
:mod:`prunelab.runtime.metrics` counts ``loss``). The absolute value is taken per batch, as
the authors' ``compute_heads_importance`` adds ``head_mask.grad.abs()`` after each batch
(their released loop never zeroes that gradient, so each batch there adds the running sum's
magnitude; the paper's expectation ``E |dL/dxi_h|`` is what is computed here). Each layer's
scores are then divided by their L2 norm, which the paper found needed to rank heads of
different layers together; ``minmax=True`` maps all scores to [0, 1] as well (it changes no
ranking).

No gate is inserted: at ``xi = 1`` the head's gate gradient is the first-order Taylor term of
its output-projection columns, ``dL/dxi_h = sum_{j in h} W_out[:, j] . dL/dW_out[:, j]``, so
the weight gradients of the output projections suffice for every layout
(:func:`prunelab.core.heads.attention_layers`), including ``nn.MultiheadAttention``, whose
``out_proj`` is never called as a module (a hook there would not fire). The gradients come
from :meth:`prunelab.core.calibration.Calibration.batch_gradients`, one per batch; the model
is not touched.

A head whose weights are large but whose output the loss ignores scores near zero here and
high under ``head-magnitude``: that is the case this score exists for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .calibration import Calibration
from .heads import (
    HeadMagnitude,
    HeadSelection,
    _head_view,
    attention_layers,
    no_heads_error,
)
from .options import Option
from .selection import Layer, Selection
from .strategies import register_strategy
from .targets import get_parameter

__all__ = ["HeadTaylor", "head_taylor_importance"]


def head_taylor_importance(
    model: nn.Module,
    calibration: Calibration,
    *,
    normalize: bool = True,
    minmax: bool = False,
) -> dict[str, torch.Tensor]:
    """``{attention fqn: one score per head}``: the sum over calibration batches of
    ``|dL/dxi_h|``, the loss's gradient w.r.t. a gate on the head's output (see the module
    docstring), the counterpart of :func:`prunelab.core.heads.head_importance` that looks at
    data.

    Args:
        model: The model; not modified.
        calibration: ``prunelab.Calibration(model, data)`` with labelled data (its batches,
            device and loss are used).
        normalize: Divide each layer's scores by their L2 norm (Michel et al.'s default).
        minmax: Then map all scores to [0, 1] (the released code's default; rankings stay).

    Raises:
        TypeError: If ``calibration`` is not a Calibration.
        ValueError: If it was made on another model, its data has no labels, or the model has
            no attention layer prunelab recognises.

    >>> from prunelab.core.calibration import Calibration
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), nn.Flatten())
    >>> data = (torch.randn(4, 3, 8), torch.randint(0, 24, (4,)))
    >>> scores = head_taylor_importance(net, Calibration(net, data))
    >>> scores["0.self_attn"].shape, round(float(scores["0.self_attn"].norm()), 4)
    (torch.Size([2]), 1.0)
    """
    if not isinstance(calibration, Calibration):
        raise TypeError(
            "head_taylor_importance needs labelled calibration data as "
            f"prunelab.Calibration(model, (inputs, labels)); got {type(calibration).__name__}"
        )
    if calibration.model is not model:
        raise ValueError("calibration was computed on a different model than the one scored")
    layers = attention_layers(model)
    if not layers:
        raise ValueError(
            "head_taylor_importance scores attention heads, and this model has no attention "
            "layer prunelab recognises (nn.MultiheadAttention, a qkv/proj attention such as "
            "Swin's, or GPT-2's c_attn/c_proj)"
        )
    outs = {layer.out[0]: get_parameter(model, layer.out[0]).detach() for layer in layers}
    totals = {layer.fqn: torch.zeros(layer.num_heads, dtype=torch.float64) for layer in layers}
    for grads in calibration.batch_gradients(list(outs)):
        for layer in layers:
            fqn, dim = layer.out
            product = outs[fqn].to(grads[fqn].device).float() * grads[fqn].float()
            # summed over a head's columns, W . dL/dW is dL/dxi_h (first-order Taylor at xi = 1)
            width = layer.num_heads * layer.head_dim
            gate = _head_view(product, dim, layer.num_heads, width).sum(dim=1)
            totals[layer.fqn] += gate.abs().double().cpu()
    scores = {fqn: total.float() for fqn, total in totals.items()}
    if normalize:
        # the authors' layer-wise L2 normalisation (their 1e-20 keeps a dead layer at 0)
        scores = {fqn: s / (s.norm() + 1e-20) for fqn, s in scores.items()}
    if minmax:
        every = torch.cat(list(scores.values()))
        low, span = every.min(), every.max() - every.min()
        scores = {fqn: (s - low) / span if span > 0 else s * 0 for fqn, s in scores.items()}
    return scores


@register_strategy("head-taylor")
@dataclass(frozen=True)
class HeadTaylor(HeadMagnitude):
    """Prune whole attention heads by |dL/d head gate| on data (Michel et al., 2019).

    The sparsity is the fraction of heads pruned; the scores are
    :func:`head_taylor_importance`'s.

    Args:
        scope: ``"global"`` (one ranking of all heads) or ``"layer"`` (the fraction in each
            attention layer).
        normalize: Divide each layer's scores by their L2 norm before ranking them together.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})
    score_name: ClassVar[str] = "|dL/d gate|, per-layer normalised"
    normalize: bool = field(
        default=True,
        kw_only=True,
        metadata={
            "option": Option(
                "Normalise per layer",
                help="Divide each layer's head scores by their L2 norm before ranking heads "
                "of all layers together (Michel et al.)",
            )
        },
    )

    def prepare_model(self, model: nn.Module, layers: Sequence[Layer]) -> Selection:
        """Score the heads on the layers' calibration (one forward and backward per batch)."""
        if not attention_layers(model):
            raise no_heads_error(self.name, len(layers))
        calibration = next((x.calibration for x in layers if x.calibration is not None), None)
        if calibration is None:
            raise ValueError(
                f"strategy {self.name!r} needs labelled calibration data (gradients): pass "
                "calibration=prunelab.Calibration(model, (inputs, labels))"
            )
        scores = head_taylor_importance(model, calibration, normalize=self.normalize)
        return HeadSelection(model, layers, self.scope, scores=scores, name=self.name)
