"""The ``prunelab`` command line: ``prunelab models | layers | prune | sweep | ...``.

:mod:`.args` holds argument types and shared options, :mod:`.commands` the commands.
"""

from .commands import main

__all__ = ["main"]
