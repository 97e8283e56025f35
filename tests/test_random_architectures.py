"""Any model: every registered strategy on random small architectures, end to end.

Hypothesis builds MLPs, CNNs and LSTM/GRU models of random depth and width (BatchNorm or not,
residual adds, grouped, depthwise and transposed convolutions, weights tied between two
modules) and runs
every registered strategy on each at a random sparsity, threshold, granularity, target subset
and per-layer overrides through Pruner, masked_forward, apply, bake, recipes (YAML and JSON
round trips) and, for channel masks, shrink. Invariants:

* nothing fails except with one of the clear errors in ``CLEAR_ERRORS`` (each names what was
  wrong and what to do);
* the achieved sparsity follows the counting rule of ``prunelab.select``: ``round(s * n)``
  groups per ranking (a layer, or all layers for a global strategy), the closest element count
  for global rankings over groups of different sizes, exactly the groups scored at or below a
  threshold, exactly N of every M for N:M; and the lowest scores go first;
* masked output == applied output == baked output, and shrunk output == masked output (with
  the masks extended to coupled tensors, as shrink documents);
* a recipe written from the masks and read back gives the same masks;
* the model is untouched.

Runs are reproducible (``derandomize=True``, no example database). Set
``PRUNELAB_HYPOTHESIS_EXAMPLES`` to try more architectures locally.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import nn

import prunelab
from prunelab.core.granularity import NM, Channel, Granularity, InputChannel
from prunelab.core.strategies import ScoredStrategy, strategy_options
from tests.conftest import assert_unchanged, masked_applied_baked, snapshot

ARCHITECTURES_PER_RUN = 25
EXAMPLES = int(os.environ.get("PRUNELAB_HYPOTHESIS_EXAMPLES", ARCHITECTURES_PER_RUN))

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Errors a user may meet on a valid model, each saying what was wrong and what to do. Any
# other exception, or one of these types with another message, fails the test.
CLEAR_ERRORS: list[tuple[type[Exception], str]] = [
    # N:M groups M consecutive inputs; a layer with another input count cannot use it
    (ValueError, r"sparsity groups \d+ consecutive input weights, but .*\(not divisible by"),
    # activation statistics of recurrent weights other than the first input are internal
    (ValueError, r"is internal to a (LSTM|GRU|RNN) module; exclude it or use a weight-only"),
    # activation-norm-channel scores whole channels only
    (ValueError, r"activation-norm-channel scores whole channels: use granularity"),
    # channel pruning keeps the model's outputs: a subset of only output layers is refused
    (ValueError, r"nothing to prune with .*Left out .*prune_outputs=True"),
    # shrink works on Linear and convolution layers; channel masks of an LSTM cannot shrink
    (ValueError, r"shrink removes channels of Linear and convolution layers only"),
    # Torch-Pruning's own grouping fails on some recurrent graphs (a GRU with one hidden unit)
    (ValueError, r"shrink cannot work out which channels move together in this model"),
    # a strategy that can prune none of the model's layers (activation-norm-channel: LSTMs only)
    (ValueError, r"strategy '.*' can prune none of the \d+ layer\(s\): "),
    # Wanda's per-row comparison needs rows: unstructured or N:M
    (ValueError, r"comparison='row' ranks weights within each output row of a layer"),
    # SparseGPT reconstructs linear layers only
    (ValueError, r"SparseGPT reconstructs linear layers \(Linear, GPT-2's Conv1D\)"),
    # a layer cannot lose every output channel
    (ValueError, r"the channel masks prune all \d+ output channels of .*lower the sparsity"),
    # Torch-Pruning cannot slice a tensor that several modules share
    (ValueError, r"shrink cannot remove channels of .* \(tied weights\); leave these layers"),
    # the channels of a grouped (not depthwise) convolution are tied to its groups
    (ValueError, r"shrink cannot remove (input|output) channels of the grouped convolution"),
    # a random model whose outputs ignore the input (dead ReLUs) gives the check nothing to see
    (ValueError, r"shrink cannot check the shrunk model .* do not depend on the input"),
]

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
STATS: Counter = Counter()


def _clear(exc: Exception) -> str | None:
    for kind, pattern in CLEAR_ERRORS:
        if isinstance(exc, kind) and re.search(pattern, str(exc)):
            return pattern
    return None


class Refused(Exception):
    """A step stopped with one of the clear errors; the rest of that run is skipped."""


def attempt(step: str, call):
    try:
        return call()
    except Exception as exc:
        pattern = _clear(exc)
        if pattern is None:
            raise AssertionError(f"{step} failed without a clear error: {exc!r}") from exc
        STATS[f"refused: {step}: {pattern[:50]}"] += 1
        raise Refused from exc


# -- random architectures -------------------------------------------------------------------

WIDTHS = st.sampled_from([1, 2, 3, 4, 5, 8])


@dataclass(frozen=True)
class Block:
    width: int
    kernel: int = 1
    groups: str = "none"  # none | grouped | depthwise | transposed (a ConvTranspose2d)
    batchnorm: bool = False
    residual: bool = False


@dataclass(frozen=True)
class Spec:
    kind: str  # mlp | cnn | lstm
    inputs: int
    blocks: tuple[Block, ...]
    classes: int
    tied: bool
    seed: int
    lstm_layers: int = 1
    bidirectional: bool = False
    gru: bool = False  # a GRU in place of the LSTM
    size: int = 4  # image side for CNNs, sequence length for LSTMs


@st.composite
def architectures(draw) -> Spec:
    kind = draw(st.sampled_from(["mlp", "cnn", "lstm"]))
    blocks = []
    width = inputs = draw(WIDTHS)
    for _ in range(draw(st.integers(1, 3 if kind == "lstm" else 4))):
        groups = "none"
        if kind == "cnn":
            groups = draw(st.sampled_from(["none", "none", "grouped", "depthwise", "transposed"]))
        out = width if groups == "depthwise" else draw(WIDTHS)
        if groups == "grouped":
            common = math.gcd(width, out)
            groups = "grouped" if common > 1 else "none"
        blocks.append(
            Block(
                width=out,
                kernel=draw(st.sampled_from([1, 3])) if kind == "cnn" else 1,
                groups=groups,
                batchnorm=kind != "lstm" and draw(st.booleans()),
                residual=out == width and draw(st.booleans()),
            )
        )
        width = out
    return Spec(
        kind=kind,
        inputs=inputs,
        blocks=tuple(blocks),
        classes=draw(st.integers(2, 5)),
        tied=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        lstm_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        gru=draw(st.booleans()),
        size=draw(st.integers(3, 5)),
    )


class Stage(nn.Module):
    """``relu(norm(layer(x)))``, plus ``x`` for a residual block."""

    def __init__(self, layer: nn.Module, norm: nn.Module, residual: bool) -> None:
        super().__init__()
        self.layer, self.norm, self.residual = layer, norm, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(self.layer(x)))
        return x + y if self.residual else y


class FeedForward(nn.Module):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        layers, width = [], spec.inputs
        for block in spec.blocks:
            if spec.kind == "cnn":
                groups = {"grouped": math.gcd(width, block.width), "depthwise": width}
                kind = nn.ConvTranspose2d if block.groups == "transposed" else nn.Conv2d
                layer = kind(
                    width,
                    block.width,
                    block.kernel,
                    padding=block.kernel // 2,
                    groups=groups.get(block.groups, 1),
                )
                norm = nn.BatchNorm2d(block.width) if block.batchnorm else nn.Identity()
            else:
                layer = nn.Linear(width, block.width)
                norm = nn.BatchNorm1d(block.width) if block.batchnorm else nn.Identity()
            layers.append(Stage(layer, norm, block.residual))
            width = block.width
        if spec.tied:  # two square layers sharing one weight
            for _ in range(2):
                square = nn.Conv2d(width, width, 3, padding=1) if spec.kind == "cnn" else None
                layers.append(Stage(square or nn.Linear(width, width), nn.Identity(), False))
            layers[-1].layer.weight = layers[-2].layer.weight
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2) if spec.kind == "cnn" else nn.Identity()
        self.head = nn.Linear(width * (4 if spec.kind == "cnn" else 1), spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


class Recurrent(nn.Module):
    """Tokens -> embedding -> LSTM (or GRU) -> MLP -> logits over the vocabulary; the decoder
    may share the embedding's weight (the classic tie)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        vocab, dim = spec.classes, spec.inputs
        self.embed = nn.Embedding(vocab, dim)
        hidden = spec.blocks[0].width
        self.lstm = (nn.GRU if spec.gru else nn.LSTM)(
            dim,
            hidden,
            num_layers=spec.lstm_layers,
            batch_first=True,
            bidirectional=spec.bidirectional,
        )
        width = hidden * (2 if spec.bidirectional else 1)
        layers = []
        for block in spec.blocks[1:]:
            residual = block.residual and block.width == width  # a bidirectional LSTM doubles
            layers.append(Stage(nn.Linear(width, block.width), nn.Identity(), residual))
            width = block.width
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(width, dim)
        self.decoder = nn.Linear(dim, vocab)
        if spec.tied:
            self.decoder.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.decoder(torch.tanh(self.proj(self.body(out[:, -1]))))


def build(spec: Spec) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (eval mode, BatchNorm with non-trivial statistics) and labelled data."""
    torch.manual_seed(spec.seed)
    model = Recurrent(spec) if spec.kind == "lstm" else FeedForward(spec)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(spec.seed)
    n = 12
    if spec.kind == "lstm":
        x = torch.randint(0, spec.classes, (n, spec.size), generator=gen)
    elif spec.kind == "cnn":
        x = torch.randn(n, spec.inputs, spec.size, spec.size, generator=gen)
    else:
        x = torch.randn(n, spec.inputs, generator=gen)
    y = torch.randint(0, spec.classes, (n,), generator=gen)
    return model.eval(), x, y


# -- checks ---------------------------------------------------------------------------------


def _group_dim(granularity: Granularity, target) -> int | None:
    if isinstance(granularity, Channel):
        return target.out_dim
    if isinstance(granularity, InputChannel):
        return target.in_dim
    return None


def group_mask(mask: torch.Tensor, granularity: Granularity, target) -> torch.Tensor:
    """The per-group decision behind a full-shape mask; fails if a group is split."""
    dim = _group_dim(granularity, target)
    if dim is None:
        return mask.flatten()
    rows = mask.movedim(dim, 0).reshape(mask.shape[dim], -1)
    assert torch.equal(rows.all(1), rows.any(1)), f"{target.fqn}: a {granularity} is split"
    return rows[:, 0]


def check_counts(pruner, strategy, masks, request) -> None:
    granularity = strategy.granularity
    targets = pruner.targets
    assert list(masks) == [t.fqn for t in targets]
    for t in targets:
        assert masks[t.fqn].dtype == torch.bool and tuple(masks[t.fqn].shape) == t.shape
    for fqn in pruner.left_out.fqns:  # the model's output layers, kept whole
        assert isinstance(granularity, Channel) and bool(masks[fqn].all()), fqn
    targets = [t for t in targets if t.fqn not in pruner.left_out.fqns]
    if isinstance(granularity, NM):
        for t in targets:
            value = (request.get("per_layer") or {}).get(t.fqn, request.get("sparsity"))
            rows = masks[t.fqn].movedim(t.in_dim, -1).reshape(-1, granularity.m)
            expected = granularity.m if value == 0.0 else granularity.n
            assert (rows.sum(1) == expected).all(), t.fqn
        return
    groups = {t.fqn: group_mask(masks[t.fqn], granularity, t) for t in targets}
    scores = {fqn: s.flatten().double() for fqn, s in pruner.scores().items()}
    per_layer = request.get("per_layer") or {}
    by_fqn = {t.fqn: t for t in targets}
    for fqn, value in per_layer.items():
        pruned = int((~groups[fqn]).sum())
        assert pruned == round(value * groups[fqn].numel()), (fqn, value)
        _check_order(strategy, pruner, masks, [by_fqn[fqn]], groups, scores)
    rest = [t for t in targets if t.fqn not in per_layer]
    if not rest:
        return
    if "threshold" in request:
        for t in rest:  # exactly the groups scored at or below the threshold
            assert torch.equal(~groups[t.fqn], scores[t.fqn] <= request["threshold"]), t.fqn
        return
    s = request["sparsity"]
    units = [rest] if strategy.scope == "global" else [[t] for t in rest]
    for unit in units:
        sizes = {granularity.group_size(t) for t in unit}
        pruned = [int((~groups[t.fqn]).sum()) for t in unit]
        if len(sizes) == 1:
            assert sum(pruned) == round(s * sum(groups[t.fqn].numel() for t in unit)), unit
        else:  # groups of different sizes: the element count closest to s * total
            elements = sum(p * granularity.group_size(t) for p, t in zip(pruned, unit, strict=True))
            total = sum(t.numel for t in unit)
            assert abs(elements - s * total) <= max(sizes) / 2 + 1e-9, (elements, s, total)
        _check_order(strategy, pruner, masks, unit, groups, scores)


def _check_order(strategy, pruner, masks, unit, groups, scores) -> None:
    """The lowest scores went first: across ``unit``, or within each output row (Wanda)."""
    if getattr(strategy, "comparison", "layer") != "row":
        _lowest_first([t.fqn for t in unit], groups, scores)
        return
    for t in unit:
        rows = masks[t.fqn].movedim(t.out_dim, 0).reshape(t.shape[t.out_dim], -1)
        lost = (~rows).sum(1)
        assert lost.max() - lost.min() <= 1, t.fqn
        score_rows = pruner.scores()[t.fqn].movedim(t.out_dim, 0).reshape(rows.shape)
        for row, row_scores in zip(rows, score_rows, strict=True):
            _lowest_first(["row"], {"row": row}, {"row": row_scores})


def _lowest_first(fqns, groups, scores) -> None:
    if not scores:
        return
    pruned = torch.cat([scores[f][~groups[f]] for f in fqns])
    kept = torch.cat([scores[f][groups[f]] for f in fqns])
    if pruned.numel() and kept.numel():
        assert pruned.max() <= kept.min(), fqns


def check_same_masks(a: prunelab.Masks, b: prunelab.Masks) -> None:
    """Same kept weights; a tensor missing on one side must be fully kept on the other."""
    for left, right in ((dict(a), dict(b)), (a.coupled, b.coupled)):
        for fqn in left.keys() | right.keys():
            if fqn in left and fqn in right:
                assert torch.equal(left[fqn], right[fqn]), fqn
            else:
                assert bool((left[fqn] if fqn in left else right[fqn]).all()), fqn


def check_outputs(model, masks, x) -> None:
    masked, applied, baked = masked_applied_baked(model, masks, x)
    torch.testing.assert_close(applied, masked, **TOLERANCE)
    torch.testing.assert_close(baked, masked, **TOLERANCE)


def check_recipe(model, strategy, masks, calibration, tmp_path) -> None:
    recipe = prunelab.Recipe.from_masks(masks, strategy)
    for name in ("recipe.yaml", "recipe.json"):
        recipe.save(tmp_path / name)
        again = prunelab.Recipe.load(tmp_path / name)
        assert again.layers == recipe.layers
        check_same_masks(
            masks, attempt("recipe masks", lambda r=again: r.masks(model, calibration))
        )
    json.loads((tmp_path / "recipe.json").read_text())  # plain JSON, readable anywhere


def check_shrink(model, masks, x) -> None:
    small = attempt("shrink", lambda: prunelab.shrink(model, masks, example_input=x))
    extended = prunelab.extend_channel_masks(model, masks, example_input=x)
    for fqn, mask in masks.items():  # extending only adds zeros
        assert not bool((extended[fqn] & ~mask).any()), fqn
    with torch.no_grad():
        expected = prunelab.masked_forward(model, extended, x)
        torch.testing.assert_close(small(x), expected, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in model.parameters())
    STATS["shrunk"] += 1


# -- one strategy on one model ---------------------------------------------------------------

SPARSITY = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1))


def _strategy(name: str, data) -> prunelab.Strategy:
    default = prunelab.get_strategy(name)
    if not isinstance(default, ScoredStrategy) or isinstance(default.granularity, NM):
        return default
    other = data.draw(st.sampled_from([None, None, "channel", "input-channel", "2:4"]))
    # the granularities the strategy offers (wanda compares within rows: no channels)
    offered = {
        str(c) for o in strategy_options(name) if o.name == "granularity" for c in o.offered()
    }
    options: dict = {}
    if other is not None and other in offered and other != str(default.granularity):
        options["granularity"] = other
    granularity = str(options.get("granularity", default.granularity))
    if granularity == "channel" and data.draw(st.booleans()):
        options["prune_outputs"] = True  # the output layers pruned too, on request
    return prunelab.get_strategy(name, **options) if options else default


def _targets(model, strategy, data) -> list[str] | None:
    """All targets (most often), a random subset, or for N:M the layers it can divide."""
    found = prunelab.targets(model)
    granularity = strategy.granularity
    if isinstance(granularity, NM) and data.draw(st.booleans()):
        fitting = [t.fqn for t in found if t.shape[t.in_dim] % granularity.m == 0]
        return fitting or None
    if data.draw(st.integers(0, 3)) == 0:
        fqns = [t.fqn for t in found]
        return data.draw(st.lists(st.sampled_from(fqns), min_size=1, unique=True))
    return None


def _request(pruner, strategy, data) -> dict:
    request: dict = {}
    fqns = [t.fqn for t in pruner.targets if t.fqn not in pruner.left_out.fqns]
    if strategy.fixed_sparsity is not None:
        if data.draw(st.booleans()):
            chosen = data.draw(st.lists(st.sampled_from(fqns), unique=True))
            request["per_layer"] = {
                f: data.draw(st.sampled_from([0.0, strategy.fixed_sparsity])) for f in chosen
            }
        return request
    if data.draw(st.integers(0, 3)) == 0:
        chosen = data.draw(st.lists(st.sampled_from(fqns), min_size=1, unique=True))
        request["per_layer"] = {f: data.draw(SPARSITY) for f in chosen}
    if strategy.by_threshold and data.draw(st.booleans()):
        scores = [s.flatten() for s in pruner.scores().values() if s.numel()]
        layer = data.draw(st.sampled_from(scores))
        value = float(layer[data.draw(st.integers(0, layer.numel() - 1))])
        # exactly a score, or just beside one: "at or below" must hold at the boundary
        nudge = data.draw(st.sampled_from([0.0, -np.inf, np.inf]))
        request["threshold"] = float(np.nextafter(value, nudge)) if nudge else value
    else:
        request["sparsity"] = data.draw(SPARSITY)
    return request


def exercise(model, x, calibration, name, data, tmp_path) -> None:
    strategy = _strategy(name, data)
    targets = _targets(model, strategy, data)
    cal = calibration if strategy.needs else None
    pruner = attempt(
        "Pruner", lambda: prunelab.Pruner(model, strategy, targets=targets, calibration=cal)
    )
    request = _request(pruner, strategy, data)
    note(f"{strategy!r}, targets={targets}, request={request}")
    masks = attempt("masks", lambda: pruner.masks(**request))
    check_counts(pruner, strategy, masks, request)
    check_outputs(model, masks, x)
    check_recipe(model, strategy, masks, calibration, tmp_path)
    if isinstance(strategy.granularity, Channel):
        check_shrink(model, masks, x)
    STATS["strategy runs"] += 1


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    """Print how many architectures were tried (the README quotes it) and what was refused."""
    STATS.clear()
    yield
    if not STATS["architectures"]:
        return  # the random test was deselected
    lines = [
        f"random architectures: {STATS['architectures']} tried, "
        f"{STATS['strategy runs']} strategy runs completed, {STATS['shrunk']} shrunk",
        *(f"  {n:4d} x {k}" for k, n in sorted(STATS.items()) if k.startswith("refused")),
    ]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))
    assert STATS["architectures"] >= EXAMPLES, "Hypothesis tried fewer architectures than asked"


@pytest.mark.filterwarnings("ignore:Maximum recursive depth reached:UserWarning")  # torch-pruning
@SETTINGS
@given(spec=architectures(), data=st.data())
def test_every_strategy_on_a_random_architecture(spec, data, tmp_path_factory):
    STATS["architectures"] += 1
    model, x, y = build(spec)
    before = snapshot(model)
    calibration = prunelab.Calibration(model, (x, y), batches=2, batch_size=6)
    tmp_path = tmp_path_factory.mktemp("recipes")
    for name in prunelab.list_strategies():
        try:
            exercise(model, x[:4], calibration, name, data, tmp_path)
        except Refused:
            continue
    assert_unchanged(model, before)


# -- cases the random test found, pinned -----------------------------------------------------


def _boundary_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize(
    "strategy",
    [
        prunelab.get_strategy("layer-magnitude"),
        # weighted ranking over both layers: the output layer included
        prunelab.get_strategy("global-magnitude", granularity="channel", prune_outputs=True),
    ],
    ids=["layerwise", "global-channels"],
)
def test_a_threshold_just_below_a_score_does_not_prune_it(strategy):
    # float32 scores against a float64 threshold: numpy compares them in float32, where a
    # threshold one float64 step below a score looked equal to it and pruned it
    pruner = prunelab.Pruner(_boundary_model(), strategy)
    for target in pruner.targets:
        scores = pruner.scores()[target.fqn].flatten()
        value = float(scores[0])
        below = float(np.nextafter(value, -np.inf))
        assert np.float32(below) == np.float32(value)  # the case: same float32
        kept = group_mask(pruner.masks(threshold=below)[target.fqn], strategy.granularity, target)
        at = group_mask(pruner.masks(threshold=value)[target.fqn], strategy.granularity, target)
        scores = scores.double()
        assert torch.equal(~kept, scores <= below) and torch.equal(~at, scores <= value)
        assert bool(kept[0]) and not bool(at[0])


class _Residual(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.layer(x))


@pytest.mark.parametrize("first", ["depthwise", "residual", "batchnorm"])
def test_shrink_keeps_the_channels_of_the_model_input(first):
    # Torch-Pruning does not track the input: a depthwise conv, a residual add or a norm on
    # the input itself lost channels the input still has, and the shrunk model crashed
    torch.manual_seed(0)
    head = {
        "depthwise": nn.Conv2d(3, 3, 3, padding=1, groups=3),
        "residual": _Residual(nn.Conv2d(3, 3, 1)),
        "batchnorm": nn.BatchNorm2d(3),
    }[first]
    model = nn.Sequential(
        head, nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 2)
    ).eval()
    x = torch.randn(2, 3, 4, 4)
    masks = prunelab.Pruner(model, "weight-norm-channel").masks(sparsity=0.5)
    small = prunelab.shrink(model, masks, example_input=x)
    assert small[1].in_channels == 3 and small[1].out_channels == 3
    extended = prunelab.extend_channel_masks(model, masks, example_input=x)
    with torch.no_grad():
        torch.testing.assert_close(small(x), prunelab.masked_forward(model, extended, x))
    table = prunelab.coupled_groups(model, x)
    assert not table.loc[table["layers"].str.contains(r"\b1 \(in\)"), "removable"].any()


def test_shrink_refuses_tied_weights_clearly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    model[4].weight = model[2].weight
    masks = prunelab.Pruner(model, "weight-norm-channel").masks(sparsity=0.5)
    with pytest.raises(ValueError) as info:
        prunelab.shrink(model, masks, example_input=torch.randn(2, 4))
    assert str(info.value) == (
        "shrink cannot remove channels of 2.weight: the tensor is shared by 2.weight, 4.weight "
        "(tied weights); leave these layers and the layers feeding them unpruned, or use the "
        "masked model (prunelab.apply) instead"
    )


def test_a_recipe_pruning_some_layers_reapplies_where_the_others_cannot_be_scored(tmp_path):
    # the first layer has 6 inputs, which 2:4 does not divide: a recipe for the others was
    # written, but re-applying it scored every layer and failed on that one
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    pruner = prunelab.Pruner(model, "n:m", targets=["2.weight"])
    masks = pruner.masks()
    prunelab.Recipe.from_masks(masks, pruner.strategy).save(tmp_path / "r.json")
    again = prunelab.Recipe.load(tmp_path / "r.json").masks(model)
    assert list(again) == ["0.weight", "2.weight", "4.weight"]
    assert torch.equal(again["2.weight"], masks["2.weight"])
    assert again["0.weight"].all() and again["4.weight"].all()  # not listed: dense, not 2:4


def test_gradients_of_a_weight_tied_to_a_non_prunable_module():
    # the decoder shares the embedding's weight; named_parameters() calls it embed.weight,
    # so looking the target up there failed with KeyError('decoder.weight')
    spec = Spec(kind="lstm", inputs=4, blocks=(Block(width=3),), classes=5, tied=True, seed=0)
    model, x, y = build(spec)
    calibration = prunelab.Calibration(model, (x, y))
    # a decoder tied to the embedding table is not a target (pruning it would prune the
    # embeddings too): it gets no mask, and the other layers' gradients are asked for
    with pytest.raises(ValueError, match="not a prunable tensor"):
        calibration.gradient("decoder.weight")
    masks = prunelab.Pruner(model, "global-magnitude-gradient", calibration=calibration).masks(
        sparsity=0.5
    )
    assert "decoder.weight" not in masks
    assert masks.sparsity() == 0.5


def test_shrink_keeps_a_grouped_convolution_balanced():
    # Torch-Pruning once dropped 3 of the 4 filters of a groups=2 conv and kept groups=2, and
    # the shrunk model crashed ("expected weight to be at least 2 at dimension 0"). A position
    # goes only where every group loses it; one kept in any group stays (as a zero filter in
    # the others), so the groups stay equal and the shrunk model is the masked one.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 4, 1, groups=2), nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 4, 4)
    for kept in ([True, False, True, False], [True, False, False, False]):
        keep = torch.tensor(kept).reshape(4, 1, 1, 1).clone()
        masks = prunelab.Masks({"1.weight": keep})
        small = prunelab.shrink(model, masks, example_input=x[:1])
        assert (small[1].out_channels, small[1].groups) == (2, 2)
        extended = prunelab.extend_channel_masks(model, masks, example_input=x[:1])
        with torch.no_grad():
            torch.testing.assert_close(small(x), prunelab.masked_forward(model, extended, x))
