"""Training: fine-tune with masks kept, prune on a schedule, freeze layers.

``finetune`` recovers accuracy with zeros kept and ``prune_while_training`` follows a schedule
(:mod:`.loop`); the schedules are ``OneShot``, ``Iterative``, ``Gradual`` and ``DynamicSparse``
(:mod:`.schedules`); options are grouped in ``TrainConfig`` (:mod:`.config`); ``freeze`` and
``unfreeze`` keep layers fixed (:mod:`.freezing`); ``fake_quantize`` and
``evaluate_quantized`` show what k-bit weights cost (:mod:`.quantize`).
"""

from .._lazy import lazy_names

_NAMES = {
    "TrainConfig": ".config",
    "TrainProgress": ".config",
    "freeze": ".freezing",
    "unfreeze": ".freezing",
    "finetune": ".loop",
    "prune_while_training": ".loop",
    "steps_per_epoch": ".loop",
    "evaluate_quantized": ".quantize",
    "fake_quantize": ".quantize",
    "DynamicSparse": ".schedules",
    "Gradual": ".schedules",
    "Iterative": ".schedules",
    "OneShot": ".schedules",
    "Schedule": ".schedules",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
