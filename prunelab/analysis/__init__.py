"""Analysis: what a pruned model is worth and what it costs.

Metrics against labels and against the dense model (``evaluate``, in :mod:`.evaluation`),
parameter and FLOP counts (``model_stats``, ``flops_by_layer``, in :mod:`.flops`), measured
speed (``latency``, ``compare_latency``, ``speed_report``, in :mod:`.speed`), real storage of
sparse weights (``compression``, ``storage_table``, ``save_sparse``) and per-layer weight
statistics (``weight_stats``), and a language model's next-token predictions dense beside
pruned (``next_tokens``, ``compare_next_tokens``, in :mod:`.generation`).
"""

from .._lazy import lazy_names

_NAMES = {
    "METRICS": "..runtime.metrics",
    "evaluate": ".evaluation",
    "flops_by_layer": ".flops",
    "model_stats": ".flops",
    "with_masks": ".flops",
    "MaskSummary": ".flops",
    "mask_summary": ".flops",
    "Comparison": ".speed",
    "compare_latency": ".speed",
    "latency": ".speed",
    "speed_report": ".speed",
    "compression": ".storage",
    "load_sparse": ".storage",
    "save_sparse": ".storage",
    "storage_table": ".storage",
    "to_sparse": ".storage",
    "weight_stats": ".layer_stats",
    "next_tokens": ".generation",
    "compare_next_tokens": ".generation",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
