"""The command line starts at once: help and version import none of the heavy libraries.

What is imported is checked, not how long it takes (``benchmarks/bench_cli.py`` times it):
each case runs in a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "pandas", "torchvision", "sklearn", "streamlit", "plotly", "yaml")

PROBE = """
import contextlib, io, json, sys
from prunelab.cli.commands import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    status = main(json.loads(sys.argv[1]))
print(json.dumps({"imported": sorted(set(json.loads(sys.argv[2])) & set(sys.modules)),
                  "printed": out.getvalue()}))
"""


def _imported(argv: list[str], heavy=HEAVY) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(list(heavy))],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["prune", "--help"], ["sweep", "--help"]]
)
def test_help_and_version_import_no_heavy_library(argv):
    result = _imported(argv)
    assert result["printed"], "nothing was printed"
    assert result["imported"] == [], result["imported"]


def test_the_strategy_listing_imports_only_what_the_registry_needs():
    # the registry lives beside the strategies, which use torch; nothing else heavy comes along
    result = _imported(["strategies"], heavy=("torchvision", "sklearn", "streamlit", "plotly"))
    assert "layer-magnitude" in result["printed"]
    assert result["imported"] == [], result["imported"]
