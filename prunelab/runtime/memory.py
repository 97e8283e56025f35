"""How much memory a model needs in prunelab, and how much there is.

A model that does not fit is refused before it is built, with the estimate and the limit in
the message, rather than failing halfway (or taking the machine down) once the weights are
allocated. :func:`prunelab.io.zoo.load` checks every model this way; the architecture is built on
the ``meta`` device first, which allocates no weights, to count its parameters and buffers.

The limit is, in order: the ``memory_limit`` argument, the ``PRUNELAB_MEMORY_LIMIT``
environment variable (``"16GiB"``, ``"500MB"``, a number of bytes, or ``"off"``), or the memory
available now (``MemAvailable`` in ``/proc/meminfo``, lowered to the container's cgroup limit
where there is one, and to what is left under the process's address-space limit, ``ulimit -v``;
free physical pages from ``sysconf`` elsewhere; no check where neither can be read).

>>> from torch import nn
>>> need = estimate(nn.Linear(1000, 1000), what="a layer")
>>> need.elements, format_bytes(need.working_bytes)
(1001000, '19.1 MiB')
>>> check_fits(need, limit="10MB")
Traceback (most recent call last):
...
ValueError: a layer needs about 19.1 MiB (1.0M parameters and buffers x 4 bytes x 5 ...) but the
limit is 9.5 MiB (memory_limit='10MB'). Use a smaller model or raise the limit.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "LIMIT_ENV",
    "MAX_OBJECTS",
    "WORKING_COPIES",
    "MemoryEstimate",
    "archive_bytes",
    "available_memory",
    "check_fits",
    "estimate",
    "estimate_count",
    "estimate_file",
    "format_bytes",
    "format_count",
    "memory_limit",
    "model_bytes",
    "parse_bytes",
    "payload_bytes",
]

LIMIT_ENV = "PRUNELAB_MEMORY_LIMIT"

# What prunelab holds at once for one model, in copies of its parameters and buffers:
# 1. the model itself;
# 2. the importance scores of a prepared Pruner (one per prunable weight);
# 3. their sorted copy, kept so that a slider move is a lookup and not a new sort;
# 4. the masked weights (w * mask) that functional_call swaps in while a pruned version runs;
# 5. headroom: bool masks (a quarter copy per mask set), an evaluation batch's activations,
#    the summed gradients of gradient-based strategies, and the allocator's slack.
# Measured peak growth for load + Pruner + masks + one masked forward: 4.0x the model for
# torchvision's vit_b_16 and vit_l_16. Scores are float32 or wider, so every copy is counted at
# 4 bytes per element or the tensor's own element size, whichever is larger. Loading a
# state_dict holds two copies for a moment (the file's tensors and the model), within these.
WORKING_COPIES = 5
_MIN_SCORE_BYTES = 4

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "t": 2**40,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_OFF = ("off", "none", "no", "unlimited")


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model needs: its own bytes, and the working set while it is pruned.

    Attributes:
        what: The model's spec or name, for messages.
        elements: Parameters and buffers (elements), or None when estimated from a file.
        model_bytes: Bytes of the parameters and buffers at their own dtypes.
        working_bytes: Bytes prunelab needs at its busiest (see :data:`WORKING_COPIES`).
        basis: How ``working_bytes`` was worked out, for messages.
    """

    what: str
    elements: int | None
    model_bytes: int
    working_bytes: int
    basis: str


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    # parameters() and buffers() yield a tensor shared by two modules (tied weights) once;
    # identity, not data_ptr, since every meta tensor has data_ptr 0
    return [*model.parameters(), *model.buffers()]


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (works on the ``meta`` device too).

    >>> model_bytes(nn.Linear(10, 10))  # 110 float32 numbers
    440
    """
    return sum(t.numel() * t.element_size() for t in _tensors(model))


def estimate(model: nn.Module, *, what: str) -> MemoryEstimate:
    """The memory prunelab needs for ``model`` (best built on the ``meta`` device).

    >>> with torch.device("meta"):
    ...     big = nn.Linear(10_000, 10_000)
    >>> format_bytes(estimate(big, what="big").working_bytes)
    '1.9 GiB'
    """
    tensors = _tensors(model)
    elements = sum(t.numel() for t in tensors)
    per_copy = sum(t.numel() * max(t.element_size(), _MIN_SCORE_BYTES) for t in tensors)
    return _working_set(what, elements, model_bytes(model), per_copy)


def estimate_count(elements: int, *, what: str) -> MemoryEstimate:
    """The memory for a float32 model of ``elements`` parameters and buffers.

    >>> estimate_count(1_000_000, what="m").working_bytes
    20000000
    """
    per_copy = elements * _MIN_SCORE_BYTES
    return _working_set(what, elements, per_copy, per_copy)


def _working_set(what: str, elements: int, size: int, per_copy: int) -> MemoryEstimate:
    width = round(per_copy / elements) if elements else _MIN_SCORE_BYTES
    return MemoryEstimate(
        what=what,
        elements=elements,
        model_bytes=size,
        working_bytes=per_copy * WORKING_COPIES,
        basis=f"{format_count(elements)} parameters and buffers x {width} bytes x "
        f"{WORKING_COPIES} working copies",
    )


def archive_bytes(path: Path) -> int:
    """The bytes a file unpacks to: for a zip archive (what ``torch.save`` and
    ``torch.export.save`` write) the sum of its members' uncompressed sizes as the archive
    declares them; for anything else its size. Nothing is decompressed to find out.

    A few megabytes of compressed zeros can declare gigabytes; that is what counts.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return size
    return max(size, declared)


def estimate_file(path: Path, *, what: str) -> MemoryEstimate:
    """The memory for the model in a ``torch.save``/``torch.export`` file, from the bytes it
    unpacks to (:func:`archive_bytes`).

    Both write tensor bytes uncompressed, and a file loaded with ``weights_only`` can only
    materialise the storages it holds, so the archive's unpacked size bounds the model's size
    (a tensor that claims more than its storage holds is caught when the file is inspected,
    see :func:`payload_bytes`).
    """
    size = Path(path).stat().st_size
    unpacked = archive_bytes(path)
    held = f"a {format_bytes(size)} file"
    if unpacked != size:
        held += f" that unpacks to {format_bytes(unpacked)}"
    return MemoryEstimate(
        what=what,
        elements=None,
        model_bytes=unpacked,
        working_bytes=unpacked * WORKING_COPIES,
        basis=f"{held} x {WORKING_COPIES} working copies",
    )


MAX_OBJECTS = 1_000_000  # containers and tensors in one file; a model has thousands


def payload_bytes(payload: object, *, what: str) -> int:
    """Bytes of the tensors in ``payload`` (nested dicts, lists and tuples) as their shapes
    say: ``numel x element size``, each tensor counted once however often it is referenced.

    Works on tensors loaded to the ``meta`` device (shapes without storage), so a file can be
    measured before any of its tensors exist. A tensor that is an expanded view of a small
    storage counts at its full size: that is what using it costs.

    Raises:
        ValueError: For a payload of more than :data:`MAX_OBJECTS` containers and tensors.
    """
    seen: set[int] = set()
    stack = [payload]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if len(seen) > MAX_OBJECTS:
            raise ValueError(
                f"{what} holds more than {MAX_OBJECTS:,} objects; a model or data file holds "
                "a few thousand tensors"
            )
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return total


def format_count(n: int) -> str:
    """A count in k, M, G (``11.7M``), short enough for a metric.

    >>> format_count(11_689_512), format_count(950)
    ('11.7M', '950')
    """
    for scale, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}" if n < 100 * scale else f"{n / scale:.0f}{suffix}"
    return str(n)


def format_bytes(n: float) -> str:
    """A byte count in binary units.

    >>> format_bytes(3 * 2**30), format_bytes(1536), format_bytes(12)
    ('3.0 GiB', '1.5 KiB', '12 bytes')
    """
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def parse_bytes(text: str | int) -> int | None:
    """A memory size: bytes as a number, or with a unit; None for ``"off"`` (no check).

    ``kB/MB/GB/TB`` are powers of 1000; ``K/M/G/T`` and ``KiB/MiB/GiB/TiB`` powers of 1024.

    >>> parse_bytes("10MB"), parse_bytes("1.5 GiB"), parse_bytes(4096), parse_bytes("off")
    (10000000, 1610612736, 4096, None)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        cleaned = str(text).strip().lower()
        if cleaned in _OFF:
            return None
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", cleaned)
        if match is None or match.group(2) not in _UNITS:
            raise ValueError(
                f"memory limit {text!r} is not a size: give bytes or a number with a unit "
                "(e.g. 500MB, 16GiB, 2G), or 'off' for no check"
            )
        value, unit = float(match.group(1)), match.group(2)
    if value <= 0:
        raise ValueError(f"memory limit {text!r} must be positive (or 'off' for no check)")
    return int(value * _UNITS[unit])


def _meminfo_available() -> int | None:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> int | None:
    # cgroup v2: a container's own limit, which /proc/meminfo (the host's) does not show
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if not limit.isdigit():  # "max": no limit
        return None
    return max(int(limit) - used, 0)


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _address_space_left() -> int | None:
    # a process started under `ulimit -v` (RLIMIT_AS) fails at that limit, whatever is free
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text()
        used = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:")
        )
    except (OSError, StopIteration, ValueError):
        return None
    return max(soft - used * 1024, 0)


def available_memory() -> tuple[int | None, str]:
    """Bytes of memory available now, and where that number comes from (None: unknown)."""
    address = _address_space_left()
    found = _available_memory()
    if address is not None and (found[0] is None or address < found[0]):
        return address, "left under this process's address-space limit (ulimit -v)"
    return found


def _available_memory() -> tuple[int | None, str]:
    meminfo, cgroup = _meminfo_available(), _cgroup_available()
    if cgroup is not None and (meminfo is None or cgroup < meminfo):
        return cgroup, "available under the container's memory limit, /sys/fs/cgroup"
    if meminfo is not None:
        return meminfo, "MemAvailable in /proc/meminfo"
    free = _sysconf_available()
    if free is not None:
        return free, "free physical memory"
    return None, "unknown"


def memory_limit(limit: str | int | None = None) -> tuple[int | None, str]:
    """The limit to check against, and where it comes from (None: no check).

    ``limit`` (a size, see :func:`parse_bytes`) wins over ``$PRUNELAB_MEMORY_LIMIT``, which
    wins over the memory available now.
    """
    if limit is not None:
        return parse_bytes(limit), f"memory_limit={limit!r}"
    if os.environ.get(LIMIT_ENV, "").strip():
        text = os.environ[LIMIT_ENV].strip()
        return parse_bytes(text), f"{LIMIT_ENV}={text}"
    return available_memory()


def check_fits(need: MemoryEstimate, *, limit: str | int | None = None) -> None:
    """Raise if ``need`` does not fit under the limit (see :func:`memory_limit`).

    Raises:
        ValueError: Naming the model, the estimate and how it was made, and the limit.
    """
    allowed, source = memory_limit(limit)
    if allowed is None or need.working_bytes <= allowed:
        return
    head = f"{need.what} needs about {format_bytes(need.working_bytes)} ({need.basis})"
    if source.startswith(("memory_limit=", LIMIT_ENV)):
        raise ValueError(
            f"{head} but the limit is {format_bytes(allowed)} ({source}). Use a smaller model "
            "or raise the limit."
        )
    raise ValueError(
        f"{head} but only {format_bytes(allowed)} is available ({source}). Use a smaller "
        f"model, free some memory, or set {LIMIT_ENV} (e.g. {LIMIT_ENV}=64GiB) to try anyway."
    )
