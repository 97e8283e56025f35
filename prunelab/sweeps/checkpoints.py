"""Checkpoints of long runs: the finished rows of a sweep or sensitivity run, kept as it goes.

A checkpoint is a JSON-lines file. The first line is a header naming the kind of run, its row
count and a *fingerprint* of its settings (hashes of the model's tensors and of the data, the
strategies, levels, seed, metric, ...); each further line is one finished row; a last line
marks the run finished and holds the table's ``attrs``. Rows are appended and flushed one at
a time, so a killed process loses at most the row it was computing; a line cut short by the
kill is dropped on resume and that row is computed again. ``fsync`` runs at most every few
seconds (and at the end): a kill never needs it, only a power cut does.

A finished checkpoint is kept: resuming it returns the table at once, without evaluating.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run.jsonl"
>>> keys = [{"i": 0}, {"i": 1}]
>>> with RowLog.open(path, kind="demo", keys=keys, fingerprint={"seed": 0}) as log:
...     log.add(0, {"i": 0, "value": 0.5})
>>> checkpoint_status(path)
CheckpointStatus(kind='demo', done=1, total=2, finished=False)
>>> with RowLog.open(path, kind="demo", keys=keys, fingerprint={"seed": 0}, resume=True) as log:
...     sorted(log.done)
[0]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..errors import InputError
from ..runtime.files import atomic_write, bounded_repr, read_bounded

if TYPE_CHECKING:
    from torch import nn

    from ..core.calibration import Calibration
    from ..core.strategies import Strategy
    from ..runtime.batches import Batch

__all__ = [
    "CheckpointError",
    "CheckpointStatus",
    "RowLog",
    "checkpoint_status",
    "data_digest",
    "tensor_digest",
]

_FORMAT = "prunelab.rows/1"
MAX_BYTES = 256 * 2**20  # a row is ~200 bytes: a million rows; beyond is not a checkpoint
_SYNC_SECONDS = 2.0  # a kill loses nothing flushed; fsync guards only against power cuts


class CheckpointError(InputError):
    """A checkpoint that cannot be used: damaged, from other settings, or in the way."""


@dataclass(frozen=True)
class CheckpointStatus:
    """How far the run in a checkpoint file got."""

    kind: str
    done: int
    total: int
    finished: bool


def tensor_digest(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """A short hash of named tensors: names, dtypes, shapes and every byte of their values.

    >>> a = tensor_digest([("w", torch.ones(2))])
    >>> a == tensor_digest([("w", torch.ones(2))]), a == tensor_digest([("w", torch.zeros(2))])
    (True, False)
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in tensors:
        digest.update(f"{name}|".encode())
        if tensor is None:
            continue
        tensor = tensor.detach()
        digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        raw = tensor.cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def data_digest(batches: Iterable[Batch]) -> tuple[str, int]:
    """(hash of every input and label, number of samples).

    >>> from prunelab.runtime.batches import iter_batches
    >>> data_digest(iter_batches(torch.zeros(5, 2), batch_size=2))[1]
    5
    """
    samples = 0

    def named():
        nonlocal samples
        for i, batch in enumerate(batches):
            samples += batch.inputs.shape[0]
            yield f"inputs {i}", batch.inputs
            yield f"labels {i}", batch.labels

    return tensor_digest(named()), samples


def _plain(value: object) -> object:
    """JSON cannot hold numpy or torch scalars; rows may carry them."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"a checkpoint row cannot hold {type(value).__name__}")


def _dumps(record: Mapping) -> str:
    return json.dumps(record, default=_plain, separators=(",", ":")) + "\n"


def _differences(saved: Mapping, current: Mapping) -> str:
    parts = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, str) and isinstance(new, str) and len(old) == len(new) == 32:
            parts.append(f"{key} (different contents)")
        else:
            parts.append(f"{key} (checkpoint: {_short(old)}; now: {_short(new)})")
    return "; ".join(parts)


def _short(value: object, limit: int = 80) -> str:
    text = bounded_repr(value, limit=limit)
    if text.endswith("..."):  # cut: the value is large (or deep), show the bounded form
        return text
    return json.dumps(value, default=str)  # small: as it reads in the file


class _Contents:
    """What a checkpoint file holds, read and checked line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = read_bounded(path, "checkpoint", MAX_BYTES)
        except ValueError as exc:  # a directory, FIFO or device, or too large
            raise CheckpointError(str(exc)) from None
        lines = raw.split(b"\n")
        # the last piece is what follows the last newline: empty, or a line cut short by a kill
        self.good_size = len(raw) - len(lines[-1])
        complete = lines[:-1]
        if not complete:
            raise CheckpointError(f"{path} is not a prunelab checkpoint (it has no header line)")
        header = self._record(complete[0], 1, what="header")
        if header.get("format") != _FORMAT or not isinstance(header.get("fingerprint"), dict):
            raise CheckpointError(f"{path} is not a prunelab checkpoint (unknown header)")
        self.kind = str(header.get("kind"))
        self.total = header.get("total")
        self.fingerprint: dict = header["fingerprint"]
        if not isinstance(self.total, int) or self.total < 0:
            raise CheckpointError(f"{path}: the header's row count is not a number")
        self.rows: dict[int, dict] = {}
        self.attrs: dict | None = None
        for number, line in enumerate(complete[1:], start=2):
            record = self._record(line, number, what="row")
            if record.get("finished") is True and isinstance(record.get("attrs"), dict):
                self.attrs = record["attrs"]
                continue
            index, values = record.get("row"), record.get("values")
            if not isinstance(index, int) or not 0 <= index < self.total:
                raise CheckpointError(f"{path}: line {number} names no row of this run")
            if not isinstance(values, dict):
                raise CheckpointError(f"{path}: line {number} holds no row values")
            self.rows[index] = values

    def _record(self, line: bytes, number: int, *, what: str) -> dict:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            record = None
        if not isinstance(record, dict):
            if number == 1:
                raise CheckpointError(f"{self.path} is not a prunelab checkpoint (no header)")
            raise CheckpointError(
                f"{self.path}: line {number} is damaged (not a {what} record); "
                "delete the file to start over"
            )
        return record

    def status(self) -> CheckpointStatus:
        return CheckpointStatus(self.kind, len(self.rows), self.total, self.attrs is not None)


def checkpoint_status(path: str | os.PathLike) -> CheckpointStatus | None:
    """The kind, progress and state of the checkpoint at ``path``; None if there is none.

    Raises:
        CheckpointError: For a file that is not a readable checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None
    return _Contents(path).status()


class RowLog:
    """The finished rows of one run: in memory, and in a checkpoint file when given a path.

    Use :meth:`open` as a context manager; the file is closed (and synced) however the run
    ends, including KeyboardInterrupt.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        kind: str,
        keys: Sequence[Mapping],
        fingerprint: Mapping,
    ) -> None:
        self.path = path
        self.kind = kind
        self.keys = [dict(k) for k in keys]
        self.fingerprint = dict(fingerprint)
        self.done: dict[int, dict] = {}
        self.attrs: dict | None = None
        self._handle: IO[str] | None = None
        self._synced = time.monotonic()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None,
        *,
        kind: str,
        keys: Sequence[Mapping],
        fingerprint: Mapping,
        resume: bool = False,
    ) -> RowLog:
        """Start a log of ``len(keys)`` rows, or resume the one at ``path``.

        Args:
            path: The checkpoint file, or None to keep rows in memory only.
            kind: What runs (``"sweep"``, ``"sensitivity"``); a checkpoint of another kind
                is refused.
            keys: Per row, the values that identify it (e.g. layer and sparsity); rows read
                back must carry them, so a checkpoint never fills the wrong cells.
            fingerprint: The run's settings (JSON values); resuming compares them.
            resume: Continue from the rows already at ``path``. Without it an existing file
                is refused rather than overwritten. With it and no file, the run starts.

        Raises:
            CheckpointError: The file exists and ``resume`` is False; or it is damaged, of
                another kind, or from other settings (the message says which).
        """
        log = cls(
            None if path is None else Path(path), kind=kind, keys=keys, fingerprint=fingerprint
        )
        if log.path is None:
            return log
        if log.path.exists():
            log._load(resume)
        # found now, not after the first row's work
        elif not log.path.parent.is_dir():
            raise FileNotFoundError(f"checkpoint folder {log.path.parent} does not exist")
        if not os.access(log.path if log.path.exists() else log.path.parent, os.W_OK):
            raise CheckpointError(f"cannot write the checkpoint {log.path}: no permission")
        return log

    def _load(self, resume: bool) -> None:
        contents = _Contents(self.path)
        state = contents.status()
        if not resume:
            what = "a finished" if state.finished else f"{state.done} of {state.total} rows of a"
            raise CheckpointError(
                f"checkpoint {self.path} already holds {what} {state.kind} run; resume it, or "
                "delete the file to start over"
            )
        if contents.kind != self.kind:
            raise CheckpointError(
                f"checkpoint {self.path} is from a {contents.kind} run, not a {self.kind} run"
            )
        fingerprint = json.loads(json.dumps(self.fingerprint))  # as it reads back from JSON
        if contents.total != len(self.keys) or contents.fingerprint != fingerprint:
            differs = _differences(contents.fingerprint, fingerprint) or (
                f"rows (checkpoint: {contents.total}; now: {len(self.keys)})"
            )
            raise CheckpointError(
                f"checkpoint {self.path} was written with other settings; what differs: "
                f"{differs}; resume with the same settings, or delete the file (or pick "
                "another) to start over"
            )
        for index, values in contents.rows.items():
            expected = self.keys[index]
            if any(values.get(k) != v for k, v in expected.items()):
                raise CheckpointError(
                    f"checkpoint {self.path}: row {index} should be {expected}; the file is "
                    "damaged: delete it to start over"
                )
        self.done = dict(sorted(contents.rows.items()))
        self.attrs = contents.attrs
        if contents.good_size < self.path.stat().st_size:
            os.truncate(self.path, contents.good_size)  # drop a line a kill cut short

    @property
    def total(self) -> int:
        return len(self.keys)

    @property
    def finished(self) -> bool:
        """Whether the run was completed (then :meth:`table` is the whole result)."""
        return self.attrs is not None and len(self.done) == self.total

    def add(self, index: int, row: Mapping) -> None:
        """Record a finished row (written to the file at once)."""
        self.done[index] = dict(row)
        self._write({"row": index, "values": self.done[index]})

    def receiver(
        self, progress: Callable[[float, str], None] | None, describe: Callable[[dict], str]
    ) -> Callable[[int, dict], None]:
        """``emit(index, row)`` for an executor: records the row, then reports progress with
        ``describe(row)``; rows may come in any order (a cluster run's do)."""

        def emit(index: int, row: dict) -> None:
            self.add(index, row)
            if progress is not None:
                progress(len(self.done) / self.total, describe(row))

        return emit

    def finish(self, attrs: Mapping) -> None:
        """Mark the run complete; ``attrs`` are the table's attributes."""
        self.attrs = json.loads(_dumps(dict(attrs)))
        self._write({"finished": True, "attrs": self.attrs})
        self._sync()

    def table(self) -> pd.DataFrame:
        """The rows in their order (all of them once the run is finished)."""
        table = pd.DataFrame([self.done[i] for i in sorted(self.done)])
        table.attrs.update(self.attrs or {})
        return table

    def _write(self, record: Mapping) -> None:
        if self.path is None:
            return
        if self._handle is None:
            if not self.path.exists():
                header = {
                    "format": _FORMAT,
                    "kind": self.kind,
                    "total": self.total,
                    "fingerprint": self.fingerprint,
                }
                # the header appears whole or not at all; rows are appended after it
                with atomic_write(self.path, "w") as handle:
                    handle.write(_dumps(header))
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self._handle.write(_dumps(record))
        self._handle.flush()
        if time.monotonic() - self._synced > _SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._sync()
            finally:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what a checkpointed run depends on -----------------------------------------------------


def _fingerprint(model: nn.Module, device: torch.device, batches: Iterable[Batch]) -> dict:
    """What every checkpointed run depends on: code, weights, kind of device and data."""
    # results are only reproducible with the same code, weights and kind of device
    digest, samples = data_digest(batches)
    return {
        "prunelab": __version__,
        "model": tensor_digest(model.state_dict().items()),
        "device": device.type,
        "data": digest,
        "samples": samples,
    }


def _strategy_id(strategy: Strategy) -> str:
    # a frozen dataclass's repr names every option; a strategy's repr may hold an address
    shown = repr(strategy) if is_dataclass(strategy) else type(strategy).__qualname__
    return f"{strategy.name}: {shown}"


def _calibration_id(
    chosen: Sequence[Strategy], calibration: Calibration | None, built: bool
) -> str | None:
    if calibration is None or not any(s.needs for s in chosen):
        return None
    if built:
        return "the evaluation data"
    return data_digest(calibration.batches())[0]


def _report_resumed(log: RowLog, progress: Callable[[float, str], None] | None) -> None:
    if log.done and progress is not None:
        progress(len(log.done) / log.total, f"resumed: {len(log.done)} of {log.total} done")
