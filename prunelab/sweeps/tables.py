"""Sweep and sensitivity tables on disk: CSV, with the table's ``attrs`` on a first line."""

from __future__ import annotations

import io
import json
import os

import pandas as pd

from ..runtime.files import atomic_write, one_line, read_bounded

__all__ = ["load_table", "save_table"]

_TABLE_TAG = "# prunelab table: "
MAX_TABLE_BYTES = 64 * 2**20  # a sensitivity table of 100 layers x 99 levels is ~1 MB


def save_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a sweep/sensitivity table as CSV, its ``attrs`` on a first comment line; atomic.

    >>> import tempfile, pathlib
    >>> table = pd.DataFrame({"layer": ["a"], "drop": [0.1]})
    >>> table.attrs["metric"] = "accuracy"
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> save_table(table, path)
    >>> load_table(path).attrs["metric"]
    'accuracy'
    """
    text = _TABLE_TAG + json.dumps(table.attrs, default=str) + "\n" + table.to_csv(index=False)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_table` (plain CSVs work too, without attrs).

    The attrs (the model and data specs it was measured on) come from the file: treat them as
    untrusted (``zoo.load(..., untrusted=True)``).
    """
    raw = read_bounded(path, "table", MAX_TABLE_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a CSV table (not UTF-8 text): {one_line(exc)}") from None
    first = text.split("\n", 1)[0]
    attrs = {}
    if first.startswith(_TABLE_TAG):
        try:
            attrs = json.loads(first[len(_TABLE_TAG) :])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: the first line's table attributes are not JSON") from exc
    try:
        table = pd.read_csv(io.StringIO(text), comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path} is not a CSV table: {one_line(exc)}") from exc
    table.attrs.update(attrs if isinstance(attrs, dict) else {})
    return table
