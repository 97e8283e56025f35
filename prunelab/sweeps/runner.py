"""Evaluation of many masked variants of one model on fixed batches, with prefix caching.

Sensitivity evaluates one pruned layer at a time. The dense outputs are computed once; where
the model can be traced (:mod:`.prefix`), the values that cross the cut before a pruned layer
are computed once per cut and only the rest of the network reruns for each variant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.apply import masked_weights
from ..core.targets import Target
from ..runtime.batches import Batch, iter_batches
from ..runtime.functional import functional_forward
from ..runtime.metrics import METRICS, MetricTotals, accumulate, batch_logits, logits_of, summarize
from .executors import Work
from .prefix import PrefixPlan

__all__: list[str] = []  # the package's own plumbing (sensitivity and its estimate)

_RECORD_BYTES = 256 * 2**20  # cached activations of all cuts at once, at most
_BATCH = 256  # large batches: fewer kernel launches per evaluated point


def _subset_batches(data: object, subset: int | None, batch_size: int, device) -> list[Batch]:
    batches, seen = [], 0
    for batch in iter_batches(data, batch_size=batch_size, device=device):
        if subset is not None and seen + batch.inputs.shape[0] > subset:
            keep = subset - seen
            labels = None if batch.labels is None else batch.labels[:keep]
            batch = Batch(batch.inputs[:keep], labels)
        if batch.inputs.shape[0]:
            batches.append(batch)
        seen += batch.inputs.shape[0]
        if subset is not None and seen >= subset:
            break
    if not batches:
        raise ValueError("sensitivity needs evaluation data; the data (or subset) is empty")
    return batches


def _by_cut(chosen: list[Target], runner: _Runner) -> list[Target]:
    # layers sharing a cut run together, so each cut's cached inputs are computed once
    return sorted(chosen, key=lambda t: runner.cut_for(t.fqn) or 0)


class _Runner:
    """Evaluates masked variants on fixed batches, with prefix caching where possible."""

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        device: torch.device,
        *,
        dense: torch.Tensor | None = None,
    ) -> None:
        self._model = model
        self._batches = batches
        self._device = device
        # tracing runs the model itself; in training mode that would update its BatchNorm
        # statistics, so a model in training mode is evaluated without prefix caching
        self._plan = None if model.training else PrefixPlan.for_model(model, batches[0].inputs)
        self._cut: int | None = None
        self._live: list[tuple[torch.Tensor, ...]] = []
        self._recorded: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        if dense is None:
            with torch.inference_mode():
                dense = torch.cat([batch_logits(model, {}, b.inputs) for b in batches])
        self._dense = dense

    # a worker of a cluster run receives the model, batches and dense outputs (computed once,
    # by the caller), and traces the model itself; caches are not sent
    def __getstate__(self) -> dict:
        return {
            "model": self._model,
            "batches": [b.to("cpu") for b in self._batches],
            "device": self._device,
            "dense": self._dense.cpu(),
        }

    def __setstate__(self, state: dict) -> None:
        device = state["device"]
        batches = [b.to(device) for b in state["batches"]]
        self.__init__(state["model"], batches, device, dense=state["dense"].to(device))

    def cut_for(self, fqn: str) -> int | None:
        return self._plan.cut_for(fqn) if self._plan is not None else None

    def plan_cuts(self, cuts: list[int]) -> None:
        """Record the live values of all ``cuts`` in one dense pass when they fit in memory.

        Otherwise each cut reruns the network up to itself, once, when it is reached.
        """
        if self._plan is None or not cuts:
            return
        first = self._plan.record(cuts, self._batches[0].inputs)
        size = sum(t.numel() * t.element_size() for v in first.values() for t in v)
        if size * len(self._batches) > _RECORD_BYTES:
            return
        per_batch = [first] + [self._plan.record(cuts, b.inputs) for b in self._batches[1:]]
        self._recorded = {cut: [values[cut] for values in per_batch] for cut in cuts}

    def _live_values(self, cut: int) -> list[tuple[torch.Tensor, ...]]:
        if cut in self._recorded:
            return self._recorded.pop(cut)  # each cut is visited once: free it after
        return [self._plan.prefix(cut, b.inputs) for b in self._batches]

    def _score(self, logits: list[torch.Tensor], dense: torch.Tensor | None) -> dict:
        totals = MetricTotals()
        for batch, out in zip(self._batches, logits, strict=True):
            accumulate(totals, out, batch.labels, dense, METRICS)
        return summarize(totals, METRICS, dense=dense is None)

    def dense_metrics(self) -> dict[str, float]:
        chunks = torch.split(self._dense, [b.inputs.shape[0] for b in self._batches])
        return self._score(list(chunks), None)

    def masked_metrics(self, fqn: str, masks) -> dict[str, float]:
        # only the tensors this point actually prunes are swapped in
        overrides = masked_weights(self._model, masks)
        cut = self.cut_for(fqn)
        with torch.inference_mode():
            if cut is None:
                outs = [
                    logits_of(functional_forward(self._model, overrides, b.inputs))
                    for b in self._batches
                ]
            else:
                if cut != self._cut:  # a new cut: cache its live values once
                    self._live = self._live_values(cut)
                    self._cut = cut
                outs = [logits_of(self._plan.suffix(cut, live, overrides)) for live in self._live]
        return self._score(outs, self._dense)


class _UnitRows:
    """What a sensitivity layer reads and writes of a run's log, for one unit of work: the
    layer's rows already finished (a resumed run's early stop depends on them); new rows go
    to ``emit``, whichever process evaluates them."""

    def __init__(self, done: dict[int, dict], emit: Callable[[int, dict], None]) -> None:
        self.done = dict(done)
        self._emit = emit

    def add(self, index: int, row: dict) -> None:
        self.done[index] = row
        self._emit(index, row)


def layer_work(job: Any, runner: _Runner, units: list[tuple], cuts: list[int]) -> Work:
    """A sensitivity run's layers as a :class:`~prunelab.sweeps.executors.Work`.

    ``job`` is the run's ``_Sensitivity`` (its ``_layer`` evaluates one layer's levels);
    each unit is ``(target, first row index, the layer's finished rows)``; ``cuts`` are
    recorded in one dense pass by each worker when they fit, as in a run in this process.
    """
    return Work(shared=(job, runner, cuts), start=_layer_worker, units=units)


def _layer_worker(shared: tuple) -> Callable[[tuple, Callable[[int, dict], None]], None]:
    job, runner, cuts = shared
    runner.plan_cuts(cuts)

    def evaluate_layer(unit: tuple, emit: Callable[[int, dict], None]) -> None:
        target, first, done = unit
        job._layer(target, first, runner, _UnitRows(done, emit), None)

    return evaluate_layer
