"""Reading files that may be hostile, and writing files that are never left half-written.

Every reader of a user's file goes through :func:`check_regular_file` (a regular file of a
bounded size: not a directory, a FIFO that never ends or ``/dev/zero``); every message that
shows a value from a file goes through :func:`bounded_repr` (a shared nested tuple of a few
bytes renders as gigabytes with ``repr``).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "MAX_FILE_BYTES",
    "STALE_SECONDS",
    "atomic_write",
    "bounded_repr",
    "check_regular_file",
    "check_writable",
    "one_line",
    "read_bounded",
    "remove_stale_temporaries",
]

# the largest model, data, masks or sparse file read; the same as the app's upload limit
# (server.maxUploadSize = 200 in .streamlit/config.toml, in MiB)
MAX_FILE_BYTES = 200 * 1024 * 1024
# a temporary file left by a writer that is gone (kill -9, power cut) is removed by the next
# write to the same target: at once when its writer's pid is dead here, else after this age
STALE_SECONDS = 24 * 3600
_LEGACY_STALE_SECONDS = 3600  # temporaries named before the pid was part of the name


def check_regular_file(
    path: str | os.PathLike, what: str, max_bytes: int, *, note: str = ""
) -> Path:
    """``path`` as a Path, if it is a regular file of at most ``max_bytes``; checked before any
    byte of it is read.

    Raises:
        FileNotFoundError: If nothing is there.
        ValueError: For a directory, a FIFO, a device (``/dev/zero``) or a socket, or a file
            over ``max_bytes`` (naming its size and the limit).
    """
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {bounded_repr(str(path))} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {bounded_repr(str(path))}: {one_line(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ValueError(
            f"{what} {bounded_repr(str(path))} is {kind} (a FIFO, device or socket is never "
            "read); give a regular file"
        )
    if info.st_size > max_bytes:
        raise ValueError(
            f"{what} {bounded_repr(str(path))} is {info.st_size / 2**20:,.1f} MiB "
            f"({info.st_size:,} bytes); files up to {max_bytes / 2**20:,.0f} MiB "
            f"({max_bytes:,} bytes) are accepted" + (f"; {note}" if note else "")
        )
    return path


def read_bounded(path: str | os.PathLike, what: str, max_bytes: int, *, note: str = "") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`check_regular_file`);
    never reads more than ``max_bytes + 1`` even if the file grows meanwhile."""
    path = check_regular_file(path, what, max_bytes, note=note)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{what} {bounded_repr(str(path))} grew over {max_bytes:,} bytes")
    return data


def bounded_repr(value: object, limit: int = 80) -> str:
    """A ``repr`` of ``value`` cut to ``limit`` characters, in time and memory bounded by
    ``limit`` too: containers are walked only as far as the characters allow, so a shared
    nested tuple (``t = (t, t)`` a hundred times over) costs no more than a short string.
    Objects other than plain data show as their type name.

    >>> bounded_repr("x" * 1000, limit=12)
    "'xxxxxxxx..."
    >>> t = ()
    >>> for _ in range(100):
    ...     t = (t, t)
    >>> len(bounded_repr(t))
    80
    """
    parts: list[str] = []
    budget = [limit + 1]  # one past the limit says the text was cut
    _render(value, parts, budget, depth=0)
    text = "".join(parts)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _emit(parts: list[str], budget: list[int], text: str) -> bool:
    text = text[: budget[0]]
    parts.append(text)
    budget[0] -= len(text)
    return budget[0] > 0


def _render(value: object, parts: list[str], budget: list[int], depth: int) -> bool:
    if budget[0] <= 0:
        return False
    if value is None or isinstance(value, (bool, int, float, complex)):
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
            return _emit(parts, budget, f"<int of {value.bit_length()} bits>")
        return _emit(parts, budget, repr(value))
    if isinstance(value, (str, bytes)):
        return _emit(parts, budget, repr(value[: budget[0]]))
    if depth > 20:
        return _emit(parts, budget, "...")
    if isinstance(value, Mapping):
        items = ((k, v) for k, v in value.items())
        return _render_items(items, "{", "}", parts, budget, depth, mapping=True)
    if isinstance(value, (tuple, list, set, frozenset)):
        opening, closing = {tuple: "()", list: "[]"}.get(type(value), "{}")
        if isinstance(value, tuple) and len(value) == 1:
            closing = ",)"
        return _render_items(iter(value), opening, closing, parts, budget, depth, mapping=False)
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        try:
            dims = "x".join(str(int(d)) for d in tuple(shape)[:8]) or "scalar"
        except (TypeError, ValueError):
            dims = "?"
        return _emit(parts, budget, f"<{type(value).__name__} {dims} {value.dtype}>")
    return _emit(parts, budget, f"<{type(value).__name__}>")


def _render_items(items, opening, closing, parts, budget, depth, *, mapping) -> bool:
    if not _emit(parts, budget, opening):
        return False
    for index, item in enumerate(items):
        if index and not _emit(parts, budget, ", "):
            return False
        if mapping:
            key, value = item
            if not _render(key, parts, budget, depth + 1) or not _emit(parts, budget, ": "):
                return False
            item = value
        if not _render(item, parts, budget, depth + 1):
            return False
    return _emit(parts, budget, closing)


# -- writing -------------------------------------------------------------------------------


def _temp_pattern(name: str) -> re.Pattern:
    # ours: .<name>.<pid>.<mkstemp's 8 characters>.tmp; before the pid was in the name, the
    # same without it (removed by age only)
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or an odd number: assume alive, wait for the age
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of earlier writes to ``path`` whose writer died (``kill -9``).

    Only files named as :func:`atomic_write` names them are touched: those of a process that
    no longer exists, and any older than :data:`STALE_SECONDS` (an hour for the older naming
    without a pid). Returns the paths removed.
    """
    path = Path(path)
    pattern = _temp_pattern(path.name)
    removed = []
    now = time.time()
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match is None:
            continue
        try:
            info = candidate.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        age = now - info.st_mtime
        pid = match.group(1)
        if pid is None:
            stale = age > _LEGACY_STALE_SECONDS
        else:
            stale = age > STALE_SECONDS or (int(pid) != os.getpid() and not _pid_alive(int(pid)))
        if stale:
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


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
    is left as it was. A process killed outright (``kill -9``) cannot remove it: the next
    write to ``path`` does (see :func:`remove_stale_temporaries`).
    """
    path = check_writable(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
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
    text = str(exc)
    text = " ".join(text[: limit * 4].split())  # a huge message is cut before it is split
    return text if len(text) <= limit else text[: limit - 3] + "..."
