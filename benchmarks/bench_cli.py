"""How fast the command line starts: ``prunelab --help`` against ``python -c "import torch"``.

Run: ``uv run python benchmarks/bench_cli.py [--repeats 9]``

Each command runs as a fresh subprocess of this environment's Python (the console script
``prunelab`` beside it, else ``python -m prunelab.cli``), in interleaved rounds so that load
from other processes falls on all of them alike; each result is a median over the rounds.
Goal: ``prunelab --help`` takes at most 0.25x the time of ``import torch`` (it imports no
torch at all). ``prunelab strategies`` is printed beside it: it needs the strategy registry,
which lives with the strategies in modules that import torch, so it costs about one torch
import. ``python -c pass`` is the floor any Python command pays. Exit status 1 when the goal
is not met.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL = 0.25  # prunelab --help / import torch, at most


def _prunelab() -> list[str]:
    """The console script installed beside this Python, as a user's shell finds it."""
    script = Path(sys.executable).with_name("prunelab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "prunelab.cli"]


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="rounds (default 9)")
    repeats = parser.parse_args().repeats
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "prunelab --help": [*_prunelab(), "--help"],
        "prunelab strategies": [*_prunelab(), "strategies"],
    }
    for command in commands.values():  # warm the file cache; a first start reads from disk
        _seconds(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(_seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_time = medians['python -c "import torch"']
    for name, median in medians.items():
        print(
            f"{name:<28} median {median * 1e3:8.1f} ms "
            f"(min {min(times[name]) * 1e3:8.1f}, max {max(times[name]) * 1e3:8.1f}; "
            f"{median / torch_time:5.2f}x import torch)"
        )
    ratio = medians["prunelab --help"] / torch_time
    met = ratio <= GOAL
    print(
        f"prunelab --help takes {ratio:.3f}x the time of import torch "
        f"({repeats} rounds): goal <= {GOAL}x {'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
