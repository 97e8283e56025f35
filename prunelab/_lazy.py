"""Names a package offers without importing the modules behind them until first use.

``import prunelab`` (and the command line's ``--help``) must not pay for torch. A package lists
its public names and the module each lives in; the module is imported when a name is first read,
and the name is then cached on the package so later reads are plain attribute lookups.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_names(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``names`` lazily.

    Args:
        package: the package's ``__name__``.
        names: public name -> module it lives in, relative to ``package`` (``".core.masks"``);
            a module path ending in ``:`` serves the module itself (``".io.zoo:"``).

    In a package's ``__init__.py``::

        __getattr__, __dir__ = lazy_names(__name__, {"Masks": ".core.masks", "zoo": ".io.zoo:"})
    """

    def __getattr__(name: str) -> object:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_path, _, _ = where.partition(":")
        module = importlib.import_module(module_path, package)
        value = module if where.endswith(":") else getattr(module, name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*names, *globals_of(package)})

    return __getattr__, __dir__


def globals_of(package: str) -> list[str]:
    return list(vars(importlib.import_module(package)))
