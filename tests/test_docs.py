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


def _fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number of the first code line, code) of every fenced block."""
    return [
        (match["lang"], text.count("\n", 0, match.start("code")) + 1, match["code"])
        for match in re.finditer(r"^```(?P<lang>\S*)\n(?P<code>.*?)^```", text, re.M | re.S)
    ]


def _is_python(code: str) -> bool:
    return bool(re.search(r"^(import \w|from [\w.]+ import |>>> )", code, flags=re.M))


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples save files
    blocks = _fenced_blocks((ROOT / "README.md").read_text())
    python = [(line, code) for lang, line, code in blocks if lang == "python"]
    assert len(python) >= 3
    # an example fenced without ``python`` would silently escape this test
    untagged = [line for lang, line, code in blocks if lang != "python" and _is_python(code)]
    assert not untagged, f"README.md blocks at lines {untagged} look like Python: tag them"
    saved = dict(_REGISTRY)
    namespace: dict = {}
    try:
        # one namespace, in order: later examples use the models and data of earlier ones;
        # the padding makes a traceback name the README's own line numbers
        for line, code in python:
            exec(compile("\n" * (line - 1) + code, "README.md", "exec"), namespace)
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
    # names are served lazily: a wrong entry in a package's table fails only when read
    for name in [*prunelab.__all__, *prunelab._EARLIER]:
        assert hasattr(prunelab, name), name
    for namespace in ("activations", "analysis", "io", "shrinking", "sweeps", "training"):
        package = getattr(prunelab, namespace)
        for name in package.__all__:
            assert hasattr(package, name), f"prunelab.{namespace}.{name}"
    assert prunelab.__version__ == importlib.import_module("prunelab._version").__version__
