"""Reading ``torch.save`` and ``torch.export.save`` files that may be hostile.

* :func:`peek` -- a file's contents with every tensor on the ``meta`` device: shapes and
  dtypes, no storage read. Callers check keys, shapes and sizes on it, and only then
  :func:`load` the tensors, so an unexpected 2 GiB tensor is refused before it exists.
* :func:`pt2_weights` -- the weights of a ``torch.export`` archive, read without
  ``torch.export.load``. That function unpickles parts of the archive (weights stored as
  pickles, opaque constants through ``pickle.loads``), parses symbolic sizes as Python
  expressions and keeps guard code that runs at the first call; any of them runs code from the
  file. Here only two kinds of member are read: the weights' JSON config, and the raw bytes
  of weights it lists with plain integer sizes. Anything else in the archive is never opened.
"""

from __future__ import annotations

import json
import math
import re
import sys
import zipfile
from pathlib import Path

import torch

from ..errors import InputError
from . import memory
from .files import MAX_FILE_BYTES, bounded_repr, check_regular_file, one_line

__all__ = ["ArchiveError", "check_archive", "load", "peek", "pt2_weights", "read"]

MAX_CONFIG_BYTES = 16 * 2**20  # the JSON that lists an archive's weights (KB for real models)


class ArchiveError(InputError):
    """A ``torch.export`` archive whose weights cannot be read without running its code."""


def check_archive(path: Path, what: str, *, limit: str | int | None = None) -> None:
    """Refuse a file whose archive unpacks to more than the memory limit, before reading it.

    Raises:
        ValueError: With the declared unpacked size, the estimate and the limit.
    """
    memory.check_fits(memory.estimate_file(path, what=f"{what} {path.name}"), limit=limit)


def peek(path: Path, what: str, *, limit: str | int | None = None) -> object:
    """The contents of a ``torch.save`` file with its tensors on the ``meta`` device.

    Read with ``weights_only=True`` (plain tensors and containers only). The archive's
    unpacked size and the tensors' own sizes (an expanded view claims its full size) are
    checked against the memory limit first.

    Raises:
        pickle.UnpicklingError: The file holds more than plain tensors (e.g. a module).
        ValueError: The file is too large for memory (see :func:`check_archive`).
    """
    check_archive(path, what, limit=limit)
    _check_pickles(path, what)
    try:
        payload = torch.load(path, map_location="meta", weights_only=True)
    except NotImplementedError as exc:  # torch cannot build a sparse tensor on meta
        if _holds_sparse(path):
            raise ValueError(
                f"{what} {path.name} holds sparse tensors (dense weights expected); save "
                "tensor.to_dense() instead"
            ) from exc
        raise
    size = memory.payload_bytes(payload, what=f"{what} {path.name}")
    need = memory.MemoryEstimate(
        what=f"{what} {path.name}",
        elements=None,
        model_bytes=size,
        working_bytes=size * memory.WORKING_COPIES,
        basis=f"tensors of {memory.format_bytes(size)} x {memory.WORKING_COPIES} working copies",
    )
    memory.check_fits(need, limit=limit)
    return payload


def _holds_sparse(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(
            b"_rebuild_sparse" in archive.read(n) for n in archive.namelist() if n.endswith(".pkl")
        )


MAX_EXPANDED = 1_000_000  # objects one value of a pickle stands for, shared parts counted
MAX_DEPTH = 100  # nesting of containers in a pickle (a state_dict is 3 deep)
_GROWS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD", "ADDITEMS"}


def _check_pickles(path: Path, what: str) -> None:
    """Refuse a ``torch.save`` archive whose pickle builds a value that stands for more than
    :data:`MAX_EXPANDED` objects once shared parts are counted each time they are used.

    A pickle can reuse a value it built (its memo): ``t = (t, t)`` a hundred times is a few
    KB, and hashing it as a dict key, or rendering it, visits 2**100 tuples. The opcodes are
    read (never run) and each value's expanded size is followed on a simulated stack.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".pkl")]
            pickles = [archive.read(n) for n in names]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(
            f"cannot read {what} {path}: not a file written by torch.save, or a truncated or "
            "corrupted one (torch.save writes a zip archive; the format before torch 1.6 is "
            "not read)"
        ) from exc
    for data in pickles:
        try:
            _walk_pickle(data)
        except _Expanded:
            raise ValueError(
                f"{what} {path.name} holds a value nested more than {MAX_DEPTH} deep or "
                f"standing for more than {MAX_EXPANDED:,} objects once its shared parts are "
                "counted (a few bytes of nested references can take hours to compare or "
                "print); a model or data file holds plain tensors and names"
            ) from None
        except Exception:  # not a valid pickle: torch.load says what is wrong with it
            continue


class _Expanded(Exception):
    pass


def _walk_pickle(data: bytes) -> None:
    import pickletools

    stack: list[list[int]] = []  # a value is [size, depth], shared by its references
    marks: list[int] = []
    memo: dict[int, list[int]] = {}
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if stack:
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, [1, 1]))
        else:
            popped: list[list[int]] = []  # top of the stack first
            for item in reversed(opcode.stack_before):
                if item is pickletools.stackslice:
                    start = marks.pop() if marks else 0
                    popped.extend(reversed(stack[start:]))
                    del stack[start:]
                elif item is not pickletools.markobject and stack:
                    popped.append(stack.pop())
            if name in _GROWS and popped:
                container = popped.pop()  # the list, dict or object below the new items
                container[0] += sum(p[0] for p in popped)
                container[1] = max([container[1], *(p[1] + 1 for p in popped)])
                size, depth, pushed = container[0], container[1], [container]
            else:
                size = 1 + sum(p[0] for p in popped)
                depth = 1 + max((p[1] for p in popped), default=0)
                pushed = [[size, depth] for _ in opcode.stack_after]
            if size > MAX_EXPANDED or depth > MAX_DEPTH:
                raise _Expanded
            stack.extend(pushed)


def load(path: Path) -> object:
    """The file's contents on the CPU (``weights_only=True``); call after :func:`peek`."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read(path: str | Path, what: str) -> object:
    """A regular ``torch.save`` file of at most :data:`.files.MAX_FILE_BYTES`, checked
    with :func:`peek` and then loaded (``weights_only=True``): for files whose contents are
    checked after loading (masks, sparse checkpoints)."""
    path = check_regular_file(path, what, MAX_FILE_BYTES)
    peek(path, what)
    return load(path)


# -- torch.export archives -----------------------------------------------------------------

_WEIGHT_NAME = re.compile(r"weight_[0-9]{1,9}")
_STRIDED = 7  # torch._export.serde's Layout for torch.strided


def _dtypes() -> dict[int, torch.dtype]:
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    return {int(k): v for k, v in _SERIALIZE_TO_TORCH_DTYPE.items()}


def _plain_int(value: object, where: str) -> int:
    # a size is {"as_int": n}; {"as_expr": ...} is symbolic, which torch parses as Python
    if (
        isinstance(value, dict)
        and set(value) == {"as_int"}
        and isinstance(value["as_int"], int)
        and not isinstance(value["as_int"], bool)
        and 0 <= value["as_int"] < 2**62
    ):
        return value["as_int"]
    raise ArchiveError(f"{where} is not a plain non-negative integer: {bounded_repr(value)}")


def _root(names: list[str]) -> str:
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        raise ArchiveError("its members are not under one folder, as torch.export.save writes")
    return roots.pop()


def _describe(fqn: object, entry: object, dtypes: dict[int, torch.dtype]) -> tuple:
    """(fqn, member, dtype, sizes, strides, offset) of one entry of the weights config."""
    where = f"weight {bounded_repr(fqn)}"
    if not isinstance(fqn, str) or not isinstance(entry, dict):
        raise ArchiveError(f"{where} has no tensor description")
    meta = entry.get("tensor_meta")
    if not isinstance(meta, dict):
        raise ArchiveError(f"{where} has no tensor description")
    if entry.get("use_pickle") is not False:
        raise ArchiveError(f"{where} is stored as a pickle (a tensor subclass), which runs code")
    name = entry.get("path_name")
    if not isinstance(name, str) or not _WEIGHT_NAME.fullmatch(name):
        raise ArchiveError(f"{where} names no weight member: {bounded_repr(name)}")
    code = meta.get("dtype")
    dtype = dtypes.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    if dtype is None or meta.get("layout") != _STRIDED:
        raise ArchiveError(f"{where} has an unknown dtype or a non-strided layout")
    if not isinstance(meta.get("sizes"), list) or not isinstance(meta.get("strides"), list):
        raise ArchiveError(f"{where} has no sizes or strides")
    if len(meta["sizes"]) != len(meta["strides"]) or len(meta["sizes"]) > 64:
        raise ArchiveError(f"{where} has sizes and strides that do not pair up")
    sizes = [_plain_int(v, f"a size of {where}") for v in meta["sizes"]]
    strides = [_plain_int(v, f"a stride of {where}") for v in meta["strides"]]
    offset = _plain_int(meta.get("storage_offset"), f"the storage offset of {where}")
    return fqn, name, dtype, sizes, strides, offset


def pt2_weights(path: Path, *, limit: str | int | None = None) -> dict[str, torch.Tensor]:
    """The weights (parameters and buffers) of a ``torch.export.save`` archive, by fqn.

    Only ``<root>/data/weights/model_weights_config.json`` and the raw weight members it
    names are read. Refused, without reading them: weights stored as pickles, symbolic sizes,
    layouts other than strided, members that are compressed or missing, a byte order other
    than this machine's.

    Raises:
        ArchiveError: Saying which weight cannot be read safely and why.
        ValueError: An archive that unpacks to more than the memory limit.
    """
    check_archive(path, "model file", limit=limit)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path} is not a torch.export archive: {one_line(exc)}") from exc
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        root = _root(list(infos))

        def read(name: str, max_bytes: int) -> bytes:
            info = infos.get(f"{root}/{name}")
            if info is None:
                raise ArchiveError(f"it has no {name}")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ArchiveError(f"{name} is compressed; torch.export.save stores members")
            if info.file_size > max_bytes:
                raise ArchiveError(f"{name} declares {info.file_size:,} bytes")
            data = archive.read(info)
            if len(data) != info.file_size:
                raise ArchiveError(f"{name} is not the size the archive declares")
            return data

        order = read("byteorder", 16).decode("ascii", "replace").strip()
        if order != sys.byteorder:
            raise ArchiveError(f"its byte order is {bounded_repr(order)}, not {sys.byteorder}")
        try:
            config = json.loads(read("data/weights/model_weights_config.json", MAX_CONFIG_BYTES))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ArchiveError(f"its weights config is not JSON: {one_line(exc)}") from None
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            raise ArchiveError("its weights config holds no 'config' mapping")
        described = [_describe(fqn, entry, _dtypes()) for fqn, entry in entries.items()]
        size = sum(math.prod(sizes) * dtype.itemsize for _, _, dtype, sizes, _, _ in described)
        memory.check_fits(
            memory.MemoryEstimate(
                what=f"model file {path.name}",
                elements=None,
                model_bytes=size,
                working_bytes=size * memory.WORKING_COPIES,
                basis=f"weights of {memory.format_bytes(size)} x {memory.WORKING_COPIES} "
                "working copies",
            ),
            limit=limit,
        )
        storages: dict[str, bytearray] = {}
        weights = {}
        for fqn, name, dtype, sizes, strides, offset in described:
            if name not in storages:
                storages[name] = bytearray(read(f"data/weights/{name}", 2**62))
            raw = storages[name]
            where = f"weight {bounded_repr(fqn)}"
            if len(raw) % dtype.itemsize:
                raise ArchiveError(f"{where}: {len(raw)} bytes are no whole {dtype} values")
            count = len(raw) // dtype.itemsize
            extent = offset + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True)) + 1
            if 0 in sizes:
                extent = 0
            if extent > count:
                raise ArchiveError(
                    f"{where} reaches past its {count:,} stored values (sizes "
                    f"{bounded_repr(sizes)}, strides {bounded_repr(strides)})"
                )
            values = torch.frombuffer(raw, dtype=dtype) if count else torch.empty(0, dtype=dtype)
            weights[fqn] = torch.as_strided(values, sizes, strides, offset).clone()
    return weights
