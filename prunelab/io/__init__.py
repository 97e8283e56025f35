"""Models, data and recipes in and out.

:mod:`.zoo` loads models by spec (``sample:``, ``torchvision:``, ``file:``), :mod:`.data` loads
data by spec (token sequences for language models through :mod:`.text`), :mod:`.recipes`
saves and re-applies per-layer sparsities, :mod:`.exports` hands the pruned model over
(baked weights, ``torch.export``, sparse). Specs are parsed in :mod:`.specs`; the sample
models' architectures live in :mod:`.architectures`.
"""

from .._lazy import lazy_names

_NAMES = {
    "zoo": ".zoo:",
    "data": ".data:",
    "TokenData": ".text",
    "recipes": ".recipes:",
    "ModelBundle": ".zoo",
    "Recipe": ".recipes",
    "Provenance": ".recipes",
    "export": ".exports",
    "Exported": ".exports",
    "FORMATS": ".exports",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
