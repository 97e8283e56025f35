"""Sweeps on a Ray cluster: the same table and checkpoint rows as in this process, a worker
killed mid-run, and runs resumed across executors.

One local cluster of two workers (one CPU and one torch thread each) serves the module: the
test starts it and stops it. Ray's start-up takes seconds, hence ``slow``.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from pandas.testing import assert_frame_equal
from torch import nn

from prunelab.sweeps import RunOptions, SensitivityConfig, sensitivity, sweep
from prunelab.sweeps.executors import RayExecutor, import_ray

pytestmark = pytest.mark.slow

SWEEP = {"strategies": ["global-magnitude", "random", "layer-magnitude"], "sparsities": [0.2, 0.5]}
SENS = {
    "sparsities": [0.3, 0.6, 0.9],
    "config": SensitivityConfig(metric="loss", early_stop=0.5),
}


@pytest.fixture(scope="module")
def cluster():
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    executor = RayExecutor(workers=2)
    try:
        yield executor
    finally:
        executor.close()
        ray.shutdown()


@pytest.fixture(scope="module")
def net_data():
    torch.manual_seed(0)
    # a residual-free stack of six layers: six units of work, prefix cuts between them
    net = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(10, 10), nn.Tanh())])
    net.append(nn.Linear(10, 4))
    x, y = torch.randn(60, 10), torch.randint(0, 4, (60,))
    return net.eval(), (x, y)


def rows_of(path) -> dict:
    """A checkpoint's rows by index, and its finished attrs (the file's order is free)."""
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    rows = {r["row"]: r["values"] for r in records if "row" in r}
    return {"rows": rows, "attrs": [r["attrs"] for r in records if r.get("finished")]}


def stop_after(rows: int):
    seen = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if len(seen) == rows:
            raise KeyboardInterrupt

    return progress


def test_ray_gives_the_in_process_table_and_checkpoint(cluster, net_data, tmp_path):
    net, data = net_data
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    expected = sensitivity(net, data, **SENS, run=RunOptions(checkpoint=here))
    messages = []
    table = sensitivity(
        net,
        data,
        **SENS,
        run=RunOptions(
            checkpoint=there, executor=cluster, progress=lambda f, m: messages.append((f, m))
        ),
    )
    assert_frame_equal(table, expected, check_exact=True)
    assert table.attrs == expected.attrs
    assert rows_of(there) == rows_of(here)
    # the same progress, row by row, ending at 1
    assert len(messages) == len(table) and messages[-1][0] == 1.0
    assert {m for _, m in messages} == {
        f"{r.layer} at {r.sparsity:.0%}" for r in table.itertuples()
    }

    expected = sweep(net, data, **SWEEP)
    assert_frame_equal(sweep(net, data, **SWEEP, run=RunOptions(executor=cluster)), expected)


def test_a_killed_worker_loses_only_its_rows(cluster, net_data):
    net, data = net_data
    sparsities = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    expected = sweep(net, data, strategies=SWEEP["strategies"], sparsities=sparsities)
    sweep(net, data, strategies=["random"], sparsities=[0.5], run=RunOptions(executor=cluster))
    before = cluster.worker_pids()  # the actors are up: kill one while it holds a row

    def kill_once(fraction: float, message: str) -> None:
        if not killed:
            killed.append(before[0])
            os.kill(before[0], signal.SIGKILL)

    killed: list[int] = []
    table = sweep(
        net,
        data,
        strategies=SWEEP["strategies"],
        sparsities=sparsities,
        run=RunOptions(executor=cluster, progress=kill_once),
    )
    assert killed
    assert_frame_equal(table, expected, check_exact=True)
    assert cluster.worker_pids()[0] != before[0]  # Ray restarted the actor


@pytest.mark.parametrize("first", ["in-process", "ray"])
def test_a_run_resumes_on_the_other_executor(cluster, net_data, tmp_path, first):
    net, data = net_data
    expected_path = tmp_path / "whole.jsonl"
    expected = sensitivity(net, data, **SENS, run=RunOptions(checkpoint=expected_path))
    path = tmp_path / "run.jsonl"
    executors = {"in-process": None, "ray": cluster}
    second = executors["ray" if first == "in-process" else "in-process"]
    with pytest.raises(KeyboardInterrupt):
        sensitivity(
            net,
            data,
            **SENS,
            run=RunOptions(checkpoint=path, executor=executors[first], progress=stop_after(5)),
        )
    assert len(rows_of(path)["rows"]) == 5  # a layer cut in the middle: its early stop resumes
    table = sensitivity(
        net, data, **SENS, run=RunOptions(checkpoint=path, resume=True, executor=second)
    )
    assert_frame_equal(table, expected, check_exact=True)
    assert rows_of(path) == rows_of(expected_path)
