"""File writing that never leaves a half-written file behind."""

from __future__ import annotations

import os
import reprlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "bounded_repr", "check_writable", "one_line"]


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a Path, refused unless a file can be written there: checked before work
    whose result would go there is started, and by :func:`atomic_write`.

    Raises:
        FileNotFoundError: If its directory does not exist.
        ValueError: If it is a directory or another file that is not a regular one (a rename
            over ``/dev/full`` would replace the device).
        OSError: If the name is too long for the file system.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"cannot write {path}: it is {kind}; give the name of a file")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path``
    is left as it was.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates owner-only files; give the result the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            # a failed write (a full disk) names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (CLI errors are one line), cut to ``limit`` chars.

    >>> one_line(ValueError("a\\n   b"))
    'a b'
    """
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, however big or deep ``value`` is.

    Messages about user input quote it with this: a file name, a key or an option value can be
    arbitrarily long or nested (a shared nested tuple renders to gigabytes with ``repr``), and
    the rendering itself must stay cheap. Containers are shown three levels and four items
    deep, long strings keep their start and end.

    >>> bounded_repr("a" * 1000, limit=20)
    "'aaaaaaa...aaaaaaaa'"
    >>> t = ()
    >>> for _ in range(100):
    ...     t = (t, t)
    >>> len(bounded_repr(t)) <= 80
    True
    """
    shown = reprlib.Repr()
    shown.maxlevel = 3
    shown.maxdict = shown.maxlist = shown.maxtuple = shown.maxset = 4
    shown.maxfrozenset = shown.maxdeque = shown.maxarray = 4
    shown.maxstring = shown.maxother = max(limit, 10)
    shown.maxlong = 40
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
