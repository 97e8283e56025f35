"""The ``prunelab`` command line: ``prunelab models | layers | prune | sweep | ...``.

:mod:`.commands` holds the parser, ``main`` and the commands on one model, :mod:`.runs` the
long runs (sweep, sensitivity, solve), :mod:`.args` argument types and shared options,
:mod:`.inputs` what commands read (model, data, calibration), :mod:`.progress` the bar.
"""

from .commands import main

__all__ = ["main"]
