"""Prefix caching: run a model from a cut point, reusing what comes before it.

When one layer is pruned, everything computed before it is unchanged. The model is traced
with ``torch.fx`` (down to torch's own layers where possible, else only its top level), cut
before the first use of the pruned layer, and split into a *prefix* graph, whose outputs are
every value still needed after the cut (residual inputs included), and a *suffix* graph
taking those values.
The prefix runs once per cut; each pruned variant runs only the suffix. Both share the
model's own submodules, so masked weights are swapped in with ``functional_call`` as
everywhere else.

Models that cannot be traced (Hugging Face transformers: their forward branches on
configuration and cache objects) are cut between blocks instead (:class:`BlockPlan`): the
hidden state entering each block of the repeated-block stack is recorded once, and a layer in
block ``i`` reruns only blocks ``i..`` and the head. Models with neither fall back to full
forward passes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..runtime.functional import functional_forward, structural_copy

__all__ = ["BlockPlan", "PrefixPlan"]


class _Tracer(fx.Tracer):
    """An fx.Tracer that traces only the calls of the thread that runs it.

    While it traces, torch.fx patches ``nn.Module.__call__`` and ``__getattr__`` for every
    thread: another thread running a model meanwhile (another session of the app, maybe on
    this very model) would be recorded into the trace, get proxies instead of tensors, or
    fail with "module is not installed as a submodule". Here its calls go through untouched.
    """

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        self._thread = threading.get_ident()
        return super().trace(root, concrete_args)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict
    ) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


class _TopLevelTracer(_Tracer):
    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self._children = {id(m) for m in root.children()}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._children or super().is_leaf_module(m, module_qualified_name)


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


class PrefixPlan:
    """Cut points of one model; build with :meth:`for_model` (None when untraceable).

    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> plan = PrefixPlan.for_model(net, torch.zeros(1, 4))
    >>> plan.cut_for("2.weight")
    3
    """

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self._model = model
        self._graph = graph
        self._nodes = list(graph.nodes)
        self._position = {node: i for i, node in enumerate(self._nodes)}
        self._prefixes: dict[int, fx.GraphModule] = {}
        self._suffixes: dict[int, fx.GraphModule] = {}
        self._full: fx.GraphModule | None = None

    @classmethod
    def for_model(cls, model: nn.Module, example: torch.Tensor) -> PrefixPlan | BlockPlan | None:
        """Trace ``model``; where it cannot be traced (or the trace disagrees with it), a
        :class:`BlockPlan` over its repeated-block stack; None without one either."""
        for tracer in (_Tracer(), _TopLevelTracer(model)):
            try:
                graph = tracer.trace(model)
                with torch.no_grad():
                    traced = fx.GraphModule(model, graph)(example)
                    direct = model(example)
            except Exception:  # a tracing failure just means: try coarser, or no caching
                continue
            if (
                isinstance(traced, torch.Tensor)
                and isinstance(direct, torch.Tensor)
                and traced.shape == direct.shape
                and torch.allclose(traced, direct, atol=1e-5)
            ):
                return cls(model, graph)
        return BlockPlan.for_model(model, example)

    def cut_for(self, fqn: str) -> int | None:
        """Index of the node before which the tensor ``fqn`` is first used (None: no cut)."""
        owner = fqn.rpartition(".")[0]
        for index, node in enumerate(self._nodes):
            target = str(node.target)
            uses = (node.op == "call_module" and _within(owner, target)) or (
                node.op == "get_attr" and _within(fqn, target)
            )
            if uses:
                return index or None
        return None

    def _live(self, cut: int) -> list[fx.Node]:
        return [
            node
            for node in self._nodes[:cut]
            if any(self._position[user] >= cut for user in node.users)
        ]

    def _prefix_module(self, cut: int) -> fx.GraphModule:
        """The graph up to ``cut``, returning the values live across it (built once)."""
        if cut not in self._prefixes:
            graph = fx.Graph()
            env: dict[fx.Node, fx.Node] = {}
            for node in self._nodes[:cut]:
                env[node] = graph.node_copy(node, lambda n: env[n])
            graph.output(tuple(env[n] for n in self._live(cut)))
            self._prefixes[cut] = fx.GraphModule(self._model, graph)
        return self._prefixes[cut]

    def _suffix_module(self, cut: int) -> fx.GraphModule:
        """The graph from ``cut`` on, taking the live values as inputs (built once)."""
        if cut not in self._suffixes:
            graph = fx.Graph()
            live = self._live(cut)
            env = {node: graph.placeholder(f"live_{i}") for i, node in enumerate(live)}
            for node in self._nodes[cut:]:
                env[node] = graph.node_copy(node, lambda n: env[n])
            self._suffixes[cut] = fx.GraphModule(self._model, graph)
        return self._suffixes[cut]

    def record(self, cuts: list[int], inputs: torch.Tensor) -> dict[int, tuple[torch.Tensor, ...]]:
        """The live values of several cuts from one dense pass over ``inputs``.

        Cheaper than one :meth:`prefix` per cut (each of which reruns the network from its
        start), but holds every cut's values at once. Only for a model in eval mode: the pass
        calls the model's own modules.
        """
        if self._model.training:
            raise ValueError("record() needs the model in eval mode")
        if self._full is None:
            self._full = fx.GraphModule(self._model, self._graph)
        wanted = {cut: self._live(cut) for cut in cuts}
        interpreter = fx.Interpreter(self._full)
        interpreter.env = {}
        interpreter.args_iter = iter([inputs])
        found: dict[int, tuple[torch.Tensor, ...]] = {}
        with torch.no_grad():
            for index, node in enumerate(self._nodes):
                if index in wanted:
                    found[index] = tuple(interpreter.env[n] for n in wanted[index])
                if node.op == "output":
                    break
                interpreter.env[node] = interpreter.run_node(node)
        return found

    def prefix(self, cut: int, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The values live across ``cut`` for one batch of inputs (dense weights)."""
        return functional_forward(self._prefix_module(cut), {}, inputs)

    def suffix(
        self, cut: int, live: tuple[torch.Tensor, ...], overrides: dict[str, torch.Tensor]
    ) -> object:
        """The model's output from the cached live values, with ``overrides`` swapped in."""
        return functional_forward(self._suffix_module(cut), overrides, *live)


# -- blocks: prefix caching for models fx cannot trace (Hugging Face transformers) -------------


class _Stop(Exception):
    """Raised by a recording hook once every wanted block has run: the rest is not needed."""


class _Replay(nn.Module):
    """Stands in for the blocks before a cut: returns the recorded hidden state entering it.

    The blocks it replaces never run; whatever the model passes them (masks, positions, a
    cache) is ignored. Its output has the blocks' own form: a tensor, or a tuple led by one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arity: int | None = None  # None: the blocks return a tensor, else a tuple's length
        self.value: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.arity is None:
            return self.value
        return (self.value,) + (None,) * (self.arity - 1)


class BlockPlan:
    """Prefix caching across the blocks of a repeated-block stack (a transformer's layers).

    For a layer in block ``i``, the hidden state entering block ``i`` is recorded once from a
    dense pass (a forward hook on block ``i - 1`` of a :func:`structural_copy`, stopping
    there); each pruned variant then runs a copy of the model whose blocks before ``i`` are
    replaced by one :class:`_Replay` returning that state, so only blocks ``i..`` and the
    head run (the embeddings before the stack, a lookup, run again). The model itself is
    never touched. A cut's live values are ``(inputs, hidden state)``; the interface is
    :class:`PrefixPlan`'s, so the sensitivity runner uses either. :meth:`for_model` checks the
    result against the model's own output and gives None where they differ.
    """

    def __init__(self, model: nn.Module, stack: str, blocks: int) -> None:
        self._model = model
        self._stack = stack
        self._blocks = blocks
        self._arity: int | None = None  # the blocks' output form, learnt when recording
        self._views: dict[int, tuple[nn.Module, _Replay]] = {}

    @classmethod
    def for_model(cls, model: nn.Module, example: torch.Tensor) -> BlockPlan | None:
        """A plan for ``model``'s block stack; None without one or if it disagrees."""
        from ..runtime.metrics import logits_of
        from .blocks import block_stack

        found = block_stack(model)
        if found is None:
            return None
        name, stack = found
        sample = example[:2]
        plan = cls(model, name, len(stack))
        try:
            with torch.no_grad():
                cut = len(stack) - 1
                replayed = logits_of(plan.suffix(cut, plan.prefix(cut, sample), {}))
                direct = logits_of(model(sample))
        except Exception:  # any failure: no caching, full forward passes
            return None
        if replayed.shape == direct.shape and torch.allclose(replayed, direct, atol=1e-5):
            return plan
        return None

    def cut_for(self, fqn: str) -> int | None:
        """The block of ``fqn`` (None outside the stack, or in block 0: nothing to skip)."""
        head, _, rest = fqn.partition(self._stack + ".") if self._stack else ("", "", fqn)
        index = rest.split(".")[0]
        if head or not index.isdigit():
            return None
        return int(index) or None

    def _blocks_of(self, view: nn.Module) -> nn.ModuleList:
        return view.get_submodule(self._stack) if self._stack else view

    def record(self, cuts: list[int], inputs: torch.Tensor) -> dict[int, tuple[torch.Tensor, ...]]:
        """The hidden states entering the blocks ``cuts``, from one dense pass over ``inputs``."""
        if self._model.training:
            raise ValueError("record() needs the model in eval mode")
        view = structural_copy(self._model)
        blocks = self._blocks_of(view)
        found: dict[int, tuple[torch.Tensor, ...]] = {}
        last = max(cuts)

        def hook(cut: int):
            def keep(module: nn.Module, args: tuple, output: Any) -> None:
                if isinstance(output, torch.Tensor):
                    hidden, self._arity = output, None
                else:
                    hidden, self._arity = output[0], len(output)
                found[cut] = (inputs, hidden)
                if cut == last:
                    raise _Stop

            return keep

        for cut in cuts:
            blocks[cut - 1].register_forward_hook(hook(cut))
        with torch.no_grad(), contextlib.suppress(_Stop):
            view(inputs)
        return found

    def prefix(self, cut: int, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(inputs, hidden state entering block cut)`` for one batch (dense weights)."""
        return self.record([cut], inputs)[cut]

    def suffix(
        self, cut: int, live: tuple[torch.Tensor, ...], overrides: dict[str, torch.Tensor]
    ) -> object:
        """The model's output from block ``cut`` on, with ``overrides`` swapped in."""
        if cut not in self._views:
            view = structural_copy(self._model)
            replay = _Replay()
            blocks = self._blocks_of(view)
            for key in list(blocks._modules)[:cut]:
                blocks._modules[key] = replay
            self._views[cut] = (view, replay)
        view, replay = self._views[cut]
        inputs, replay.value = live
        replay.arity = self._arity
        try:
            return functional_forward(view, overrides, inputs, private=True)
        finally:
            replay.value = None
