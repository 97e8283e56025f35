"""Figures: data in, ``plotly.graph_objects.Figure`` out.

Pure builders with no Streamlit and no file I/O; every figure renders in Jupyter as it is and
goes to ``st.plotly_chart`` unchanged. Tensors and numpy arrays are both accepted. Heatmaps of
large layers are pooled (block means) so a figure never holds more than ``max_cells`` cells,
and the title says how.

>>> import torch
>>> fig = mask_pattern(torch.tensor([[True, False], [False, False]]))
>>> "sparsity 75.0%" in fig.layout.title.text
True
"""

from __future__ import annotations

from .activations import activation_histogram, activation_mask, channel_apoz, channel_ranges
from .blocks import block_heatmap
from .curves import sensitivity_heatmap, sparsity_curves
from .export import size_bars, speed_bars
from .heads import head_importance_map
from .planning import allocation_comparison, plan_steps
from .training import compare_bars, schedule_plot, training_curves
from .weights import (
    channel_magnitudes,
    layer_sparsity,
    mask_overlap,
    mask_pattern,
    weight_heatmap,
    weight_histogram,
)

__all__ = [
    "activation_histogram",
    "activation_mask",
    "allocation_comparison",
    "block_heatmap",
    "channel_apoz",
    "channel_magnitudes",
    "channel_ranges",
    "compare_bars",
    "head_importance_map",
    "layer_sparsity",
    "mask_overlap",
    "mask_pattern",
    "plan_steps",
    "schedule_plot",
    "sensitivity_heatmap",
    "size_bars",
    "sparsity_curves",
    "speed_bars",
    "training_curves",
    "weight_heatmap",
    "weight_histogram",
]
