"""Activations: what flows between layers, measured, thresholded and sparsified.

Streaming per-channel statistics (``activation_stats``), thresholding at inference
(``activation_threshold``, ``ThresholdActivation``) and the activation sparsifier
(``ActivationSparsifier``: aggregate -> reduce -> mask, per feature).
"""

from .._lazy import lazy_names

_NAMES = {
    name: ".stats"
    for name in (
        "ActivationSparsifier",
        "ActivationStats",
        "ChannelStats",
        "LayerStats",
        "ThresholdActivation",
        "ThresholdedModel",
        "activation_layers",
        "activation_sparsity_effect",
        "activation_stats",
        "activation_threshold",
        "sparsity_mask",
        "threshold_mask",
    )
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
