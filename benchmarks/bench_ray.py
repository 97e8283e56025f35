"""Sensitivity on a local two-worker Ray cluster against the same run in this process.

Run: ``uv run python benchmarks/bench_ray.py [--limit 8] [--levels 3]``

Models: sample:digits-resnet on the digits test set (accuracy), and torchvision's ResNet-18
(random weights, offline) on ``--limit`` digits resized to 3x224x224 (agreement with the dense
model). Each is run in this process with one torch thread and with two, then on a local Ray
cluster of two workers (one CPU and one intra-op thread each), twice: the first run starts the
workers' processes, the second finds them up. All tables must be equal. Where the cluster's
time goes is printed: starting the cluster, putting the model, data and dense outputs into the
object store, starting the actors, and evaluating. Only ratios measured in this run are
claimed; on a shared machine the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.sweeps import RunOptions, SensitivityConfig, sensitivity
from prunelab.sweeps.executors import RayExecutor, import_ray


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def case(name, model, data, metric, levels, cluster):
    config = SensitivityConfig(metric=metric)

    def run(executor=None):
        return sensitivity(
            model, data, sparsities=levels, config=config, run=RunOptions(executor=executor)
        )

    torch.set_num_threads(1)
    expected, one = timed(run)
    torch.set_num_threads(2)
    _, two = timed(run)
    torch.set_num_threads(1)
    cold, cold_s = timed(lambda: run(cluster))
    cold_parts = dict(cluster.timings)
    warm, warm_s = timed(lambda: run(cluster))
    warm_parts = dict(cluster.timings)
    for table in (cold, warm):
        assert_frame_equal(table, expected, check_exact=True)
    rows = len(expected)
    print(
        f"| {name} | {rows} | {one:.1f} s | {two:.1f} s | {cold_s:.1f} s "
        f"(actors {cold_parts['actors']:.1f}, put {cold_parts['put']:.2f}, "
        f"evaluate {cold_parts['evaluate']:.1f}) | {warm_s:.1f} s (put {warm_parts['put']:.2f}, "
        f"evaluate {warm_parts['evaluate']:.1f}) | {two / warm_s:.2f}x | {one / warm_s:.2f}x |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="224x224 images for ResNet-18")
    parser.add_argument("--levels", type=int, default=3, help="sparsity levels per layer")
    args = parser.parse_args()
    levels = [round((i + 1) / (args.levels + 1), 3) for i in range(args.levels)]
    ray = import_ray()
    _, start = timed(
        lambda: ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; levels {levels}")
    print(f"starting the local Ray cluster (2 CPUs): {start:.1f} s, once per session")
    print(
        "| model | rows | in-process, 1 thread | in-process, 2 threads | Ray, 2 workers, "
        "first run | Ray, next run | 2 threads / Ray next | 1 thread / Ray next |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cluster = RayExecutor(workers=2, threads=1)
    digits = zoo.load("sample:digits-resnet")
    case(
        "sample:digits-resnet",
        digits.model,
        data_lib.load(digits.default_data),
        "accuracy",
        levels,
        cluster,
    )
    cluster.close()  # a new model: the first run of the next case starts the actors again
    resnet = zoo.load("torchvision:resnet18")
    images = data_lib.load(f"sample:digits?input=3x224x224&labels=0&limit={args.limit}")
    case("torchvision:resnet18", resnet.model, images, "agreement", levels, cluster)
    cluster.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
