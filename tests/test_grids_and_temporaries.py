"""Issue 22: grids are bounded and free of repeats, temporaries of killed writers go away,
and messages show untrusted values in bounded space and time."""

from __future__ import annotations

import os
import time

import pytest
import torch

import prunelab
from prunelab.cli.commands import main
from prunelab.runtime.files import (
    STALE_SECONDS,
    atomic_write,
    bounded_repr,
    remove_stale_temporaries,
)
from prunelab.sweeps import RunOptions
from prunelab.sweeps.config import MAX_LEVELS, check_levels
from tests.conftest import make_mlp

ARCH = "sample:digits-mlp"


def test_a_repeated_level_is_refused_before_any_work_or_checkpoint(tmp_path, mlp_data):
    checkpoint = tmp_path / "run.jsonl"
    for run in (
        lambda: prunelab.sweep(
            make_mlp(),
            mlp_data,
            strategies=["random"],
            sparsities=[0.5, 0.5],
            run=RunOptions(checkpoint=checkpoint),
        ),
        lambda: prunelab.sensitivity(
            make_mlp(), mlp_data, sparsities=[0.2, 0.5, 0.5], run=RunOptions(checkpoint=checkpoint)
        ),
    ):
        with pytest.raises(ValueError, match=r"give 0\.5 twice"):
            run()
        assert not checkpoint.exists()
    with pytest.raises(ValueError, match="give random twice"):
        prunelab.sweep(make_mlp(), mlp_data, strategies=["random", "random"], sparsities=[0.5])


def test_grids_are_bounded(capsys):
    with pytest.raises(ValueError, match=f"more than {MAX_LEVELS:,} levels"):
        check_levels(i / 10**6 for i in range(10**6))  # stops at the bound, never builds all
    start = time.perf_counter()
    status = main(["sensitivity", ARCH, "--sparsities", "0:1:1e-9"])
    err = capsys.readouterr().err
    assert status == 2 and "1,000,000,001 levels" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 30
    status = main(["sweep", ARCH, "--sparsities", "0.5,0.5", "--strategies", "random"])
    err = capsys.readouterr().err
    assert status == 2 and "give 0.5 twice" in err


def _temp_of(target, pid: int, age: float, suffix: str = "abcd_123") -> os.PathLike:
    path = target.parent / f".{target.name}.{pid}.{suffix}.tmp"
    path.write_bytes(b"half")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_the_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    target = tmp_path / "model.pt"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer exists: a writer killed with kill -9
    killed = _temp_of(target, dead, age=5)
    old = _temp_of(target, os.getppid(), age=STALE_SECONDS + 60, suffix="old_1234")
    running = _temp_of(target, os.getppid(), age=5)  # a writer still at work
    legacy = tmp_path / f".{target.name}.zz_9abcd.tmp"  # named before pids were in names
    legacy.write_bytes(b"half")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    other = tmp_path / f".{target.name}.notours.tmp"
    other.write_bytes(b"someone else's")
    unrelated = tmp_path / f".other.pt.{dead}.abcd_123.tmp"
    unrelated.write_bytes(b"another target")
    with atomic_write(target) as handle:
        torch.save({"w": torch.ones(2)}, handle)
    assert not killed.exists() and not old.exists() and not legacy.exists()
    assert running.exists() and other.exists() and unrelated.exists()
    assert remove_stale_temporaries(target) == []


def test_an_export_killed_midway_leaves_nothing_after_the_next_one(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "m.pt2"
    script = (
        "import os, signal, torch\n"
        "from prunelab.runtime.files import atomic_write\n"
        f"with atomic_write({str(target)!r}) as handle:\n"
        "    handle.write(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left and not target.exists()
    net = make_mlp().eval()
    masks = prunelab.prune(net, "layer-magnitude", sparsity=0.5)
    prunelab.export(net, masks, target, format="pt2", example_input=torch.randn(2, 12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]


def test_bounded_repr_is_bounded_in_size_and_time():
    key: tuple = ("w",)
    for _ in range(200):
        key = (key, key)  # repr() would never finish
    start = time.perf_counter()
    text = bounded_repr({"k": key, "b": "x" * 10**7}, limit=80)
    assert len(text) == 80 and text.endswith("...")
    assert time.perf_counter() - start < 0.1
    assert bounded_repr(("a",)) == "('a',)"
    assert bounded_repr(torch.zeros(2, 3)) == "<Tensor 2x3 torch.float32>"
    assert bounded_repr(10**1000) == "<int of 3322 bits>"
