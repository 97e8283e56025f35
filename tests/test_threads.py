"""One model shared by threads (the app's sessions share each cached model): nobody sees
anybody else's masks, hooks or swapped tensors."""

from __future__ import annotations

import importlib
import random
import threading
import time

import pytest
import torch
from torch import nn

from prunelab import Calibration, Pruner
from prunelab.analysis import evaluate, flops_by_layer
from prunelab.io import data, zoo
from prunelab.runtime.functional import structural_copy
from prunelab.sweeps.prefix import PrefixPlan


def _together(*jobs) -> list[object]:
    """Run the jobs in threads at the same time; their results, or the first exception."""
    results: list[object] = [None] * len(jobs)

    def run(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except Exception as exc:  # re-raised below, in the test's thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def test_concurrent_evaluations_of_different_masks_each_get_their_own_result():
    model = zoo.load("sample:digits-cnn").model
    test = data.load("sample:digits", split="test")
    pruner = Pruner(model, "global-magnitude")
    light, heavy = pruner.masks(sparsity=0.1), pruner.masks(sparsity=0.95)
    alone = {
        "light": evaluate(model, test, masks=light)["accuracy"],
        "heavy": evaluate(model, test, masks=heavy)["accuracy"],
    }
    assert alone["light"] > 0.9 > 0.5 > alone["heavy"]

    def repeat(masks):
        return [evaluate(model, test, masks=masks)["accuracy"] for _ in range(10)]

    def read_parameters():
        # what the pages do between evaluations: list the weights, all real Parameters
        seen = []
        for _ in range(300):
            seen += [type(p) for _, p in model.named_parameters()]
        return set(seen)

    light_runs, heavy_runs, kinds = _together(
        lambda: repeat(light), lambda: repeat(heavy), read_parameters
    )
    assert light_runs == [alone["light"]] * 10
    assert heavy_runs == [alone["heavy"]] * 10
    assert kinds == {nn.Parameter}


def test_activation_statistics_are_not_fed_by_other_threads_forwards():
    bundle = zoo.load("sample:digits-mlp")
    test = data.load("sample:digits", split="test")
    expected = Calibration(bundle.model, test, batches=4).input_norms()
    busy = threading.Event()

    def forwards():
        busy.set()
        for _ in range(200):
            with torch.no_grad():
                bundle.model(bundle.example_input(batch_size=64))

    def calibrate():
        busy.wait()
        return Calibration(bundle.model, test, batches=4).input_norms()

    _, norms = _together(forwards, calibrate)
    assert set(norms) == set(expected)
    for fqn in expected:
        torch.testing.assert_close(norms[fqn], expected[fqn])
    assert not any(m._forward_hooks for m in bundle.model.modules())


def test_flop_counting_leaves_no_hook_on_the_model():
    bundle = zoo.load("sample:sentiment-lstm")  # an LSTM: its time steps are counted by hooks
    flops_by_layer(bundle.model, example_input=bundle.example_input())
    assert not any(m._forward_hooks for m in bundle.model.modules())


def test_a_structural_copy_shares_tensors_but_not_containers():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    shared = nn.Linear(3, 3)
    net.append(shared).append(shared)  # one module registered twice
    copy = structural_copy(net)
    assert copy[0] is not net[0] and copy[0].weight is net[0].weight
    assert copy[1].running_mean is net[1].running_mean
    assert copy[2] is copy[3]  # still one module
    copy[0].register_forward_hook(lambda *args: None)
    copy[0]._parameters["weight"] = torch.zeros(3, 3)
    assert not net[0]._forward_hooks and isinstance(net[0].weight, nn.Parameter)


def test_a_torch_fx_trace_meanwhile_neither_breaks_nor_records_other_threads_calls():
    # fx patches nn.Module.__call__ and __getattr__ for every thread while it traces (the
    # prefix plans of sensitivity runs); only the tracing thread's calls may be traced
    bundle = zoo.load("sample:digits-resnet")
    other = zoo.load("sample:digits-cnn").model
    test = data.load("sample:digits", split="test")
    masks = Pruner(other, "global-magnitude").masks(sparsity=0.5)
    alone = evaluate(other, test, masks=masks, batch_size=16)["accuracy"]
    example = bundle.example_input(batch_size=2)
    with torch.no_grad():
        expected = bundle.model(example)

    def trace():
        return [PrefixPlan.for_model(bundle.model, example) for _ in range(30)]

    def repeat():  # small batches: many module calls, some of them during a trace
        return [evaluate(other, test, masks=masks, batch_size=16)["accuracy"] for _ in range(10)]

    def plain():  # the very model being traced, called directly
        with torch.no_grad():
            return [bundle.model(example) for _ in range(300)]

    plans, runs, outputs = _together(trace, repeat, plain)
    assert runs == [alone] * 10
    assert all(torch.equal(out, expected) for out in outputs)
    assert all(plan is not None for plan in plans)
    assert {len(plan._nodes) for plan in plans} == {len(plans[0]._nodes)}


def test_dense_output_cache_is_shared_safely_and_stays_bounded(monkeypatch):
    # Several sessions evaluate different models, data and masks at once, through one
    # dense-output cache that is smaller than what they use: entries are looked up, stored
    # and evicted by different threads all the time. Every result must be the one a single
    # thread gets, and the cache must never grow past its bound.
    ev = importlib.import_module("prunelab.analysis.evaluation")
    monkeypatch.setattr(ev, "_CACHE_SIZE", 2)
    ev.clear_cache()
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).eval())
    generator = torch.Generator().manual_seed(0)
    datasets = [
        (torch.randn(40, 6, generator=generator), torch.randint(0, 4, (40,), generator=generator))
        for _ in range(2)
    ]
    jobs = []  # 6 (model, data) pairs: twice what the cache holds
    for model in models:
        pruner = Pruner(model, "global-magnitude")
        for pair in datasets:
            for masks in (None, pruner.masks(sparsity=0.5), pruner.masks(sparsity=0.9)):
                jobs.append((model, pair, masks))

    def run(job):
        model, pair, masks = job
        return evaluate(model, pair, masks=masks, batch_size=16)

    expected = [run(job) for job in jobs]
    ev.clear_cache()
    sizes: list[int] = []
    done = threading.Event()

    def session(seed: int):
        order = random.Random(seed).sample(range(len(jobs)), len(jobs))
        return [(i, run(jobs[i])) for _ in range(5) for i in order]

    def watch():
        while not done.is_set():
            with ev._lock:
                sizes.append(len(ev._cache))
            time.sleep(0.0001)

    fingerprint = ev._model_fingerprint

    def slow_fingerprint(model):
        # a big model's fingerprint takes a while: other threads run meanwhile, so a lookup
        # and a store or an eviction by another thread interleave on most runs
        time.sleep(0.0005)
        return fingerprint(model)

    monkeypatch.setattr(ev, "_model_fingerprint", slow_fingerprint)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sessions = _together(*(lambda seed=seed: session(seed) for seed in range(8)))
    finally:
        done.set()
        watcher.join()
    for results in sessions:
        for index, result in results:
            want = expected[index]
            assert set(result) == set(want)
            for name in ("accuracy", "agreement", "samples"):
                assert result[name] == want[name], (index, name)
            for name in ("loss", "kl"):
                assert result[name] == pytest.approx(want[name], rel=1e-5, abs=1e-7)
    assert sizes and max(sizes) <= 2
    assert 0 < len(ev._cache) <= 2
