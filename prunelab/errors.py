"""Errors a user can cause, told apart from bugs in one place.

Every front end turns a user's mistake into one plain message: the command line prints it as
one line and exits with status 2, the app shows it with ``st.error``. A bug is different: the
command line shows its traceback and the app shows the details in an expander, so that it can
be reported.

What counts as the user's (:func:`user_message`):

* prunelab's own :class:`PrunelabError` family, raised where the engine checks its input;
* ``ValueError`` and ``TypeError``, which the engine raises for bad arguments, specs and files
  at its boundary (the :class:`InputError` family are ``ValueError`` too);
* ``OSError``: a missing file, a directory where a file was expected, a name too long, a full
  disk, no permission;
* ``RecursionError``: input nested too deeply to read;
* running out of memory (``MemoryError``, torch's out-of-memory errors).

Anything else (``KeyError``, ``AttributeError``, an ``IndexError`` or ``RuntimeError`` from
deep inside) is a bug: where torch raises ``RuntimeError`` because of the user's data, the
engine catches it at the evaluation boundary and raises :class:`DataError` instead.

>>> user_message(DataError("labels must be class indices"))
'labels must be class indices'
>>> user_message(IsADirectoryError(21, "Is a directory", "/tmp"))
"Is a directory: '/tmp'"
>>> user_message(KeyError("fc1")) is None
True
"""

from __future__ import annotations

import sys

from .runtime.files import bounded_repr, one_line

__all__ = [
    "DataError",
    "DeviceError",
    "InputError",
    "PrunelabError",
    "ShrinkError",
    "is_out_of_memory",
    "user_message",
]


class PrunelabError(Exception):
    """Base of the errors prunelab raises for something the user can fix."""


class InputError(PrunelabError, ValueError):
    """Input prunelab cannot use; a ``ValueError``, so ``except ValueError`` still catches it."""


class DataError(InputError):
    """Data the model cannot be evaluated on: its shape or dtype, its labels, NaN inputs."""


class DeviceError(InputError):
    """A device that does not exist on this machine (``cuda`` without a GPU, ``tpu``)."""


class ShrinkError(InputError):
    """A model whose structure ``shrink`` cannot remove channels from."""


# torch says this (as a plain RuntimeError) when a CPU allocation fails
_CPU_ALLOCATION = "can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (Python, torch on a GPU, or a failed CPU allocation)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # no import: without torch loaded, torch raised nothing
    oom = getattr(torch, "OutOfMemoryError", ()) if torch is not None else ()
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and _CPU_ALLOCATION in str(exc)[:1000]
    )


def _os_message(exc: OSError) -> str:
    if exc.strerror is None:  # raised with a message of its own
        return one_line(exc)
    names = [bounded_repr(str(f), limit=100) for f in (exc.filename, exc.filename2) if f]
    return f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror


def user_message(exc: BaseException) -> str | None:
    """One plain line for an error the user caused, or None for a bug (show its traceback).

    User values quoted by torch or Python are cut short (file names, long messages), so the
    line stays short whatever the input was.
    """
    if is_out_of_memory(exc):
        detail = one_line(exc, limit=150) if str(exc) else "the work did not fit"
        return (
            f"out of memory ({detail}); use less data (--limit), a smaller model or a smaller batch"
        )
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read (Python's recursion limit was reached)"
    if isinstance(exc, OSError):
        return _os_message(exc)
    if isinstance(exc, (PrunelabError, ValueError, TypeError)):
        return one_line(exc)
    return None
