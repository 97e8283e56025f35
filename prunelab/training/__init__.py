"""Training: fine-tune with masks kept, prune on a schedule, freeze layers.

``finetune`` recovers accuracy with zeros kept; ``prune_while_training`` follows a schedule
(``OneShot``, ``Iterative``, ``Gradual``, ``DynamicSparse``); options are grouped in
``TrainConfig``; ``fake_quantize`` and ``evaluate_quantized`` show what k-bit weights cost.
"""

from .._lazy import lazy_names

_NAMES = {
    name: ".loop"
    for name in (
        "DynamicSparse",
        "Gradual",
        "Iterative",
        "OneShot",
        "Schedule",
        "TrainConfig",
        "TrainProgress",
        "evaluate_quantized",
        "fake_quantize",
        "finetune",
        "freeze",
        "prune_while_training",
        "steps_per_epoch",
        "unfreeze",
    )
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
