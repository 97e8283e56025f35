"""The engine's layout holds: folders import downward, no private names cross packages, no
module grows past the size a reader can hold, and no function hides a submodule.

The layout is DESIGN.md's: runtime <- core <- features <- cli, ui. These tests read the source
(they import nothing heavy), so a change that breaks the shape fails here with the file and line.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prunelab"
MAX_LINES = 620  # "about 600": a module past this is doing more than one job

# Lower layers never import higher ones. Packages on one layer import each other only where
# listed in SIDEWAYS (no cycle), so that a new dependency is a decision, not an accident.
LAYER = {
    "errors": 1,  # the exceptions every layer raises; they format with runtime.files
    "_version": 0,
    "_lazy": 0,
    "_compat": 0,
    "runtime": 1,
    "core": 2,
    "activations": 3,
    "analysis": 3,
    "shrinking": 3,
    "io": 3,
    "sweeps": 3,
    "training": 3,
    "figures": 3,
    "teach": 3,  # the Learn lessons' computations, for the app and the concept notebooks
    "cli": 4,
    "ui": 4,
    "jupyter": 4,
    "__init__": 5,  # the top level offers names from every layer (lazily)
}
SHARED = {"_lazy", "_compat", "_version", "__version__"}  # root plumbing every layer may use
SIDEWAYS = {
    "errors": {"runtime"},  # messages are bounded with runtime.files
    "runtime": {"errors"},  # and runtime raises them
    "analysis": {"shrinking"},  # speed compares the shrunk model
    "io": {"analysis", "shrinking"},  # export writes shrunk and sparse files
    "sweeps": {"analysis", "io"},  # curves are evaluations; a solved recipe is an io.Recipe
    "training": {"activations", "analysis"},
    "figures": {"analysis", "activations", "sweeps", "training"},
    # a lesson shows what the other features compute; no feature imports teach
    "teach": {"activations", "analysis", "figures", "io", "shrinking", "sweeps", "training"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _top(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported prunelab-relative module, names) for every import of prunelab code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        package = path.relative_to(PACKAGE).parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("prunelab"):
                target = node.module.removeprefix("prunelab").lstrip(".")
            else:
                continue
            found.append((node.lineno, target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prunelab."):
                    found.append((node.lineno, alias.name.removeprefix("prunelab."), []))
    return found


def test_no_module_is_over_about_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"


def test_folders_import_downward_only():
    wrong = []
    for path in _modules():
        here = _top(path)
        for line, target, _ in _imports(path):
            there = target.split(".")[0] if target else ""
            if not there or there == here:
                continue
            if LAYER[there] < LAYER[here] or there in SIDEWAYS.get(here, ()):
                continue
            wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_package_imports_another_packages_private_names():
    wrong = []
    for path in _modules():
        here = _top(path)
        for line, target, names in _imports(path):
            there = target.split(".")[0] if target else ""
            if there == here or there in SHARED:
                continue
            private = [n for n in names if n.startswith("_") and n not in SHARED]
            hidden_module = any(part.startswith("_") for part in target.split(".")[1:])
            if private or hidden_module:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} {target} {private}")
    assert not wrong, "\n".join(wrong)


def _namespaces() -> list[str]:
    return ["prunelab"] + [
        f"prunelab.{p.parent.relative_to(PACKAGE).as_posix().replace('/', '.')}"
        for p in PACKAGE.rglob("__init__.py")
        if p.parent != PACKAGE and "__pycache__" not in p.parts
    ]


@pytest.mark.parametrize("name", _namespaces())
def test_no_public_name_shadows_a_submodule(name):
    package = importlib.import_module(name)
    folder = Path(package.__file__).parent
    submodules = {p.stem for p in folder.glob("*.py")} | {
        p.parent.name for p in folder.glob("*/__init__.py")
    }
    for public in getattr(package, "__all__", []):
        if public in submodules:
            assert getattr(package, public).__name__ == f"{name}.{public}", (
                f"{name}.{public} is a function or class that hides the submodule of that name"
            )


def test_import_prunelab_and_the_command_line_need_no_torch():
    code = (
        "import sys, prunelab, prunelab.cli; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_old_flat_import_paths_are_the_same_modules():
    from prunelab import _compat

    for old, new in _compat.MOVED.items():
        moved = importlib.import_module(f"prunelab.{new}")
        assert importlib.import_module(f"prunelab.{old}") is moved
        assert moved.__spec__.name == f"prunelab.{new}"  # the alias did not rename it
    from prunelab.masks import Masks  # as README and users' scripts wrote it

    assert Masks is importlib.import_module("prunelab").Masks


def test_top_level_functions_stay_functions_after_old_module_imports():
    import prunelab

    for name in ("apply", "evaluate", "export", "shrink", "targets"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"prunelab.{name}")
        assert callable(getattr(prunelab, name)) and not isinstance(
            getattr(prunelab, name), type(prunelab)
        )


def test_readme_examples_use_each_name_from_its_home():
    # the earlier top-level names keep working for old scripts; README teaches the homes
    import re

    import prunelab

    readme = (PACKAGE.parent / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", readme, flags=re.S))
    old = sorted(set(re.findall(r"\bprunelab\.(\w+)", code)) & set(prunelab._EARLIER))
    assert not old, f"README uses earlier top-level names: {old}"
