"""Activations: what flows between layers, measured, thresholded and sparsified.

Streaming per-channel statistics (``activation_stats``, :mod:`.stats`, built from
:mod:`.channels`, :mod:`.sampling` and :mod:`.results`), thresholding at inference
(``activation_threshold``, ``ThresholdActivation``, :mod:`.thresholding`) and the activation
sparsifier (``ActivationSparsifier``: aggregate -> reduce -> mask, per feature,
:mod:`.sparsifier`). Layers are named as :mod:`.layers` says: a module's output, or
``"<name>:input"`` for what enters it.
"""

from .._lazy import lazy_names

_NAMES = {
    "INPUT_SUFFIX": ".layers",
    "activation_layers": ".layers",
    "SAMPLE": ".sampling",
    "BINS": ".channels",
    "ChannelStats": ".channels",
    "ActivationStats": ".results",
    "LayerStats": ".results",
    "activation_stats": ".stats",
    "ThresholdActivation": ".thresholding",
    "ThresholdedModel": ".thresholding",
    "activation_sparsity_effect": ".thresholding",
    "activation_threshold": ".thresholding",
    "AGGREGATE_FNS": ".sparsifier",
    "MASK_FNS": ".sparsifier",
    "REDUCE_FNS": ".sparsifier",
    "ActivationSparsifier": ".sparsifier",
    "sparsity_mask": ".sparsifier",
    "threshold_mask": ".sparsifier",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
