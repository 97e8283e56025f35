"""Import paths from before the engine had folders keep working.

``from prunelab.masks import Masks`` was how the README and users' scripts imported things when
the package was flat. Each such module path is served by the module that now holds its code: the
same module object, not a copy, so ``isinstance`` checks and monkeypatching see one thing.
Modules whose old name is now a top-level *function* (``apply``, ``evaluate``, ``export``,
``shrink``, ``targets``) are not aliased: importing them would replace the function on the
package with a module, which is the shadowing the layout removed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

MOVED = {
    "batches": "runtime.batches",
    "calibration": "core.calibration",
    "checkpoint": "sweeps.checkpoints",
    "criteria": "core.criteria",
    "data": "io.data",
    "functional": "runtime.functional",
    "granularity": "core.granularity",
    "masks": "core.masks",
    "memory": "runtime.memory",
    "pruner": "core.pruner",
    "recipes": "io.recipes",
    "select": "core.select",
    "speed": "analysis.speed",
    "storage": "analysis.storage",
    "strategies": "core.strategies",
    "zoo": "io.zoo",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{__package__}.{MOVED[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its real name; the import system has just stamped the alias's
        # spec on it, so give it back its own.
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
