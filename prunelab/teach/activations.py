"""Lesson 7: weight pruning vs activation pruning. Zeros in parameters vs zeros in what flows.

Weight pruning zeros entries of the weight matrices once, for good: every input meets the
same zeros. Activation pruning zeros values *between* layers while the model runs (here with
:func:`prunelab.activations.activation_threshold`: values smaller than a threshold become 0),
so each input gets its own zeros, and ReLU already makes many of them for free. This module
measures both on the MLP sample (:func:`prunelab.activations.activation_sparsity_effect`) and
draws them side by side.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
>>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
>>> seen = weight_vs_activation(net, (x, y), weight_sparsity=0.5, threshold=0.0,
...                             layer="2", images=4)
>>> seen.weight_mask.shape, seen.flowing.shape, seen.weight_sparsity
(torch.Size([3, 8]), torch.Size([4, 8]), 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from .. import activations, figures
from ..core.apply import apply, bake
from ..core.pruner import prune
from ..runtime.batches import iter_batches

__all__ = ["SAMPLE_MODEL", "Contrast", "contrast_figure", "weight_vs_activation"]

SAMPLE_MODEL = "sample:digits-mlp"
LAYER = "fc2"  # the MLP's middle layer: 300 values flow into it from fc1's ReLU
IMAGES = 24  # rows of the activation panel: enough to see that each input differs


@dataclass(frozen=True)
class Contrast:
    """Zeros in one layer's weights beside zeros in what enters it, and what both cost.

    Attributes:
        layer: The layer shown.
        weight_mask: Its weight mask (True = kept), the same for every input.
        flowing: ``(images, features)``: True where the value entering the layer is not 0.
        weight_sparsity: Fraction of zeros over all pruned weights (global magnitude).
        activation_sparsity: Fraction of zeros in what enters every layer after the first,
            over the whole data, after the threshold.
        natural_sparsity: The same before the threshold: the zeros ReLU makes by itself.
        accuracy: With both the weight zeros and the threshold.
        dense_accuracy: Of the model as it is.
    """

    layer: str
    weight_mask: torch.Tensor = field(repr=False)
    flowing: torch.Tensor = field(repr=False)
    weight_sparsity: float
    activation_sparsity: float
    natural_sparsity: float
    accuracy: float
    dense_accuracy: float


def _flows(model: nn.Module) -> list[str]:
    """What enters each Linear or Conv layer after the first: the values between layers."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [f"{name}{activations.INPUT_SUFFIX}" for name in names[1:]]


def weight_vs_activation(
    model: nn.Module,
    data: object,
    *,
    weight_sparsity: float,
    threshold: float,
    layer: str = LAYER,
    images: int = IMAGES,
) -> Contrast:
    """Prune the weights (global magnitude) and threshold what flows between layers.

    Args:
        model: The dense model; not modified.
        data: Labelled data: the sparsities and accuracies are measured over all of it, the
            activation panel shows its first ``images`` inputs.
        weight_sparsity: Fraction of the weights zeroed.
        threshold: Values entering a layer with a magnitude below it become 0.
        layer: The layer whose weights and inputs are shown.
        images: How many inputs the activation panel shows.
    """
    masks = prune(model, "global-magnitude", sparsity=weight_sparsity)
    flows = _flows(model)
    effect = activations.activation_sparsity_effect(model, data, flows, threshold, masks=masks)
    inputs = next(iter(iter_batches(data, batch_size=images))).inputs
    seen: list[torch.Tensor] = []
    pruned = bake(apply(model, masks))
    with torch.no_grad(), activations.activation_threshold(pruned, flows, threshold) as run:
        # registered after the threshold's own hook, so it sees the thresholded values
        hook = run.model.get_submodule(layer).register_forward_pre_hook(
            lambda module, args: seen.append(args[0].detach().flatten(1))
        )
        try:
            run.model(inputs)
        finally:
            hook.remove()
    return Contrast(
        layer=layer,
        weight_mask=masks[f"{layer}.weight"],
        flowing=seen[0] != 0,
        weight_sparsity=masks.sparsity(),
        activation_sparsity=effect["sparsity"],
        natural_sparsity=effect["natural_sparsity"],
        accuracy=effect.get("accuracy", float("nan")),
        dense_accuracy=effect.get("dense_accuracy", float("nan")),
    )


def contrast_figure(contrast: Contrast) -> go.Figure:
    """Two panels: the layer's weight mask (left) and what enters it for a few inputs (right);
    black is a zero in both (:func:`prunelab.figures.mask_pattern` and
    :func:`prunelab.figures.activation_mask`, side by side)."""
    name = contrast.layer
    weights = figures.mask_pattern(contrast.weight_mask).data[0]
    flowing = figures.activation_mask(contrast.flowing).data[0]
    zero_w = 1 - contrast.weight_mask.float().mean().item()
    zero_a = 1 - contrast.flowing.float().mean().item()
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=(
            f"Zeros in {name}'s weights: {zero_w:.0%}<br><sup>the same for every input</sup>",
            f"Zeros in what enters {name}: {zero_a:.0%}<br><sup>different for each input</sup>",
        ),
    )
    weights.update(showscale=False)
    flowing.update(
        colorbar={"tickvals": [0, 1], "ticktext": ["zero", "not zero"]},
        hovertemplate="input %{y}<br>feature %{x}<br>not zero %{z}<extra></extra>",
    )
    fig.add_trace(weights, row=1, col=1)
    fig.add_trace(flowing, row=1, col=2)
    fig.update_xaxes(title_text=f"input feature of {name}", row=1, col=1)
    fig.update_yaxes(title_text="output feature", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text=f"feature entering {name}", row=1, col=2)
    fig.update_yaxes(title_text="test input", autorange="reversed", row=1, col=2)
    fig.update_layout(title={"text": "Weight pruning vs activation pruning"})
    return fig
