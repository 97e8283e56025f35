"""The README's Python examples and every docstring example run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import prunelab
from prunelab.core.strategies import _REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples save files
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    saved = dict(_REGISTRY)
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def _engine_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(prunelab.__path__, prefix="prunelab."):
        if not info.name.startswith("prunelab.ui"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _engine_modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    saved = dict(_REGISTRY)
    try:
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)
    assert result.failed == 0


def test_public_api_is_declared():
    for name in prunelab.__all__:
        assert hasattr(prunelab, name), name
    assert prunelab.__version__ == importlib.import_module("prunelab._version").__version__
