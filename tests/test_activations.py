"""Streaming activation statistics: exact against stored activations, bounded memory, no hooks
left behind, weight masks applied without touching the model, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from prunelab.activations import (
    SAMPLE,
    ChannelStats,
    LayerStats,
    activation_layers,
    activation_stats,
    activation_threshold,
    channels,
    sampling,
)
from prunelab.activations import stats as stats_module
from prunelab.runtime.functional import structural_copy
from prunelab.runtime.hooks import forward_hooks
from tests.conftest import assert_unchanged, make_cnn, make_lstm, snapshot

CNN_LAYERS = ["0", "2", "3", "4", "5", "7"]  # conv, relu, conv, relu, pool, linear


def _batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _stored(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Every activation of the named points, kept whole: the direct computation."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks, pre = {}, {}
    for name in names:
        module, _, _ = name.partition(":")

        def keep(tensor, name=name):
            seen.setdefault(name, []).append(tensor.detach().clone())

        if name.endswith(":input"):
            pre[module] = lambda m, args, keep=keep: keep(args[0])
        else:
            hooks[module] = lambda m, args, out, keep=keep: keep(out)
    with torch.no_grad(), forward_hooks(model, hooks, pre_hooks=pre):
        model(x)
    return {name: torch.cat(parts) for name, parts in seen.items()}


def _per_channel(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """(channels, values) from an activation whose channels lie on ``axis``."""
    return tensor.movedim(axis, 0).reshape(tensor.shape[axis], -1).double()


def _histogram(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    bins = len(edges) - 1
    index = torch.bucketize(values.float().contiguous(), edges, right=True).clamp(1, bins) - 1
    return torch.stack([torch.bincount(row, minlength=bins) for row in index])


def test_stats_match_a_direct_computation_on_stored_activations(cnn_data):
    model = make_cnn().eval()
    x = cnn_data[0]
    names = [*CNN_LAYERS, "3:input"]
    stats = activation_stats(model, _batches(x, 8), layers=names, bins=16, sample=None)
    stored = _stored(model, x, names)
    assert list(stats) == names and stats.samples == 32
    for name in names:
        layer = stats[name]
        channels = _per_channel(stored[name], layer.channel_axis)
        assert layer.channels == channels.shape[0]
        assert layer.count == layer.sampled == channels.shape[1]
        assert torch.allclose(layer.mean.double(), channels.mean(1), atol=1e-5), name
        assert torch.allclose(layer.std.double(), channels.std(1, correction=0), atol=1e-5), name
        assert torch.equal(layer.min, channels.min(1).values.float()), name
        assert torch.equal(layer.max, channels.max(1).values.float()), name
        zeros = (channels == 0).double().mean(1).float()
        assert torch.allclose(layer.zero_fraction, zeros), name
        assert torch.equal(layer.histogram, _histogram(channels, layer.edges)), name
    assert stats["0"].channel_axis == 1 and stats["7"].channel_axis == 1  # (N, 4): last is 1
    assert stats["2"].sparsity > 0.2  # a ReLU zeroes a good share
    assert stats["0"].sparsity == 0.0


def test_default_layers_are_prunable_activation_and_pooling_outputs(cnn_data):
    model = make_cnn().eval()
    assert activation_layers(model) == CNN_LAYERS
    assert activation_layers(model, inputs=True)[:3] == ["0:input", "0", "2"]
    stats = activation_stats(model, cnn_data[0])
    assert list(stats) == CNN_LAYERS
    table = stats.table()
    assert list(table["layer"]) == CNN_LAYERS
    assert list(table["channels"]) == [8, 8, 12, 12, 12, 4]


def test_large_activations_are_sampled_evenly_and_every_value_on_request():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 128, 128, generator=gen).relu()  # 65536 values per channel
    x[:, 2] = 0.0
    x[1, 2, 5, 7] = 3.0  # channel 2 is zero almost everywhere, but not dead
    x[:, 1] = 0.0  # channel 1 is dead
    channels = _per_channel(x, 1)
    default = activation_stats(nn.Sequential(nn.ReLU()), x)["0"]
    assert default.count == 65536 and default.sampled == SAMPLE  # 4 inputs x 32 positions
    layer = activation_stats(nn.Sequential(nn.ReLU()), x, sample=4096)["0"]
    assert layer.count == 65536 and layer.sampled == 4096
    assert layer.dead[1] and not layer.dead[0]  # channel 2's one value is rarely sampled
    assert float(layer.max[0]) <= float(channels[0].max())
    assert abs(float(layer.mean[0]) - float(channels[0].mean())) < 0.03
    assert abs(float(layer.zero_fraction[0]) - 0.5) < 0.03
    assert int(layer.histogram[0].sum()) == layer.sampled
    exact = activation_stats(nn.Sequential(nn.ReLU()), x, sample=None)["0"]
    assert exact.sampled == 65536
    assert exact.dead.tolist() == [False, True, False] and exact.dead_channels == [1]
    assert torch.equal(exact.max, channels.max(1).values.float())
    assert torch.allclose(exact.mean.double(), channels.mean(1), atol=1e-6)
    assert torch.allclose(exact.zero_fraction.double(), (channels == 0).double().mean(1))


def test_each_input_is_sampled_at_other_positions():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(64, 1, 1, 1)  # each value is its position
    layer = activation_stats(nn.Sequential(nn.Identity()), x, layers="0", sample=64)["0"]
    assert layer.sampled == 64  # one position from each of the 64 inputs
    assert int((layer.histogram[0] > 0).sum()) >= 32  # not one position for all inputs


def test_nan_after_the_first_batch_is_counted_below_the_range():
    acc = ChannelStats(bins=4)
    acc.update(torch.tensor([[0.0], [1.0]]), axis=-1)
    acc.update(torch.tensor([[float("nan")], [0.5]]), axis=-1)
    layer = acc.result("x")
    assert int(layer.histogram.sum()) == 4 and int(layer.clamped[0]) == 1
    with pytest.raises(ValueError, match="non-finite"):
        ChannelStats().update(torch.tensor([[float("inf")]]), axis=-1)


def test_memory_is_channels_times_bins_not_activations(cnn_data):
    model = make_cnn().eval()
    x = cnn_data[0]
    few = activation_stats(model, _batches(x, 16))
    many = activation_stats(model, _batches(torch.cat([x] * 10), 16))
    assert many.samples == 10 * few.samples
    assert many.nbytes() == few.nbytes()
    numel = [
        sum(t.numel() for t in (s.mean, s.std, s.min, s.max, s.zero_fraction, s.histogram))
        for s in (few["0"], many["0"])
    ]
    assert numel[0] == numel[1] == 8 * 5 + 8 * 64  # 8 channels: 5 numbers and 64 bins each


def test_hooks_are_removed_after_success_and_after_an_exception(cnn_data):
    model = make_cnn().eval()
    before = snapshot(model)
    activation_stats(model, cnn_data[0])
    assert_unchanged(model, before)

    def failing():
        yield cnn_data[0][:8]
        raise RuntimeError("data source broke")

    with pytest.raises(RuntimeError, match="data source broke"):
        activation_stats(model, failing())
    assert_unchanged(model, before)

    with pytest.raises(KeyError), forward_hooks(model, {"0": print}, pre_hooks={"3": print}):
        assert len(model[0]._forward_hooks) == 1 and len(model[3]._forward_pre_hooks) == 1
        raise KeyError("inside the block")
    assert_unchanged(model, before)


class _Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("layer broke")


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_when_the_forward_pass_raises(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), _Broken())
    x = torch.randn(2, 3)
    seen = []

    def keep(*args: object) -> None:
        seen.append(len(args))

    with (
        pytest.raises(RuntimeError, match="layer broke"),
        forward_hooks(model, {"0": keep, "1": keep}, pre_hooks={"2": keep}),
    ):
        model(x)
    assert seen == [3, 3, 2] and _hooks(model) == 0  # the hooks ran, then were removed

    copies = []  # activation_stats hooks a structural copy: that copy is left clean too

    def copy(module: nn.Module) -> nn.Module:
        copies.append(structural_copy(module))
        return copies[-1]

    monkeypatch.setattr(stats_module, "structural_copy", copy)
    with pytest.raises(RuntimeError, match="layer broke"):
        activation_stats(model, x, layers=["0", "1", "2:input"])
    assert len(copies) == 1 and _hooks(copies[0]) == 0 and _hooks(model) == 0
    with (
        pytest.raises(RuntimeError, match="layer broke"),
        activation_threshold(model, ["0", "2:input"], 0.1) as run,
    ):
        run.model(x)
    assert _hooks(run.model) == 0 and _hooks(model) == 0


def test_weight_masks_shift_the_statistics_without_touching_the_model(cnn_data):
    model = make_cnn().eval()
    x = cnn_data[0]
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.8)
    before = snapshot(model)
    dense = activation_stats(model, x, layers=["3"])
    pruned = activation_stats(model, x, layers=["3"], masks=masks)
    assert_unchanged(model, before)
    assert pruned.masked and not dense.masked
    reference = activation_stats(prunelab.apply(model, masks), x, layers=["3"])
    assert torch.allclose(pruned["3"].mean, reference["3"].mean, atol=1e-6)
    assert torch.equal(pruned["3"].histogram, reference["3"].histogram)
    assert not torch.allclose(pruned["3"].mean, dense["3"].mean)


def test_dead_channels_are_flagged():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.0, -100.0, 0.0, -100.0]))
    layer = activation_stats(model, torch.randn(50, 3), layers="1")["1"]
    assert layer.dead_channels == [1, 3]
    assert layer.zero_fraction[[1, 3]].tolist() == [1.0, 1.0]
    table = activation_stats(model, torch.randn(20, 3)).table().set_index("layer")
    assert table.loc["1", "dead_channels"] == 2 and table.loc["0", "dead_channels"] == 0


def test_lstm_outputs_are_described_by_their_first_tensor():
    model = make_lstm().eval()
    tokens = torch.randint(0, 20, (6, 5), generator=torch.Generator().manual_seed(0))
    stats = activation_stats(model, tokens, layers=["lstm", "lstm:input", "head"])
    assert stats["lstm"].channels == 12 and stats["lstm"].sample_shape == (5, 12)
    assert stats["lstm:input"].channels == 8 and stats["head"].channels == 2
    assert activation_layers(model) == ["lstm", "head"]


def test_explicit_bin_edges_count_values_outside_them():
    acc = ChannelStats(bins=[0.0, 1.0, 3.0])  # unequal bins
    acc.update(torch.tensor([[-1.0], [0.5], [2.0], [2.5], [7.0]]), axis=-1)
    layer = acc.result("x")
    assert layer.histogram.tolist() == [[2, 3]]
    assert layer.clamped.tolist() == [2]
    assert layer.edges.tolist() == [0.0, 1.0, 3.0]


def test_quantiles_from_the_histogram_are_within_a_bin_of_the_exact_ones():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 3, generator=gen)
    x[:, 0] = x[:, 0].relu()
    layer = activation_stats(nn.Sequential(nn.Identity()), x, layers="0", bins=50)["0"]
    levels = [0.1, 0.25, 0.5, 0.75, 0.9]
    approx = layer.quantiles(levels)
    exact = torch.quantile(x.T, torch.tensor(levels), dim=1).T
    width = float(layer.edges[1] - layer.edges[0])
    assert (approx - exact).abs().max() <= width
    assert approx[0, :2].tolist() == [0.0, 0.0]  # ReLU zeros sit at exactly 0
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        layer.quantiles([1.5])


def test_bad_input_gives_clear_errors(cnn_data):
    model = make_cnn().eval()
    x = cnn_data[0]
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['conv9'\].*accepted.*0:input"):
        activation_stats(model, x, layers=["conv9"])
    with pytest.raises(ValueError, match="unknown layer"):
        activation_stats(model, x, layers=["0:output"])
    with pytest.raises(TypeError, match="module names"):
        activation_stats(model, x, layers=[0])
    with pytest.raises(ValueError, match="strictly increasing"):
        activation_stats(model, x, bins=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least 1"):
        activation_stats(model, x, bins=0)
    with pytest.raises(ValueError, match="sample must be at least 1"):
        activation_stats(model, x, sample=0)
    with pytest.raises(ValueError, match="empty"):
        activation_stats(model, [])
    with pytest.raises(TypeError, match=r"prunelab\.Masks"):
        activation_stats(model, x, masks={"0.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool)})
    unused = _HalfUsed()
    with pytest.raises(ValueError, match="no activations reached 'unused'"):
        activation_stats(unused, torch.zeros(3, 2), layers=["used", "unused"])
    assert list(activation_stats(unused, torch.zeros(3, 2))) == ["used"]


class _HalfUsed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


@pytest.mark.parametrize("stripe", ["column", "row"])
def test_sampling_favours_no_part_of_a_map(stripe):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4)) + 0.5
    if stripe == "column":
        x[..., ::8] = 0.0  # every 8th column: a regular stride could hit all or none
    else:
        x[:, :, ::8] = 0.0
    layer = activation_stats(nn.Sequential(nn.Identity()), x, layers="0", sample=4096)["0"]
    assert layer.sampled < layer.count
    assert torch.allclose(layer.zero_fraction, torch.full((3,), 1 / 8), atol=0.02)
    assert torch.allclose(layer.mean, x.mean((0, 2, 3)), rtol=0.03)


def test_weight_masks_reach_recurrent_layers_without_touching_the_model():
    model = make_lstm().eval()
    tokens = torch.randint(0, 20, (8, 5), generator=torch.Generator().manual_seed(0))
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.7)
    before = snapshot(model)
    masked = activation_stats(model, tokens, layers=["lstm", "head"], masks=masks)
    assert_unchanged(model, before)
    reference = activation_stats(prunelab.apply(model, masks), tokens, layers=["lstm", "head"])
    for name in ("lstm", "head"):
        assert torch.allclose(masked[name].mean, reference[name].mean, atol=1e-6)


def _exact(layer, values: torch.Tensor) -> None:
    """``layer`` describes every one of ``values`` (channels, n) exactly."""
    assert layer.count == layer.sampled == values.shape[1]
    values = values.double()
    assert torch.equal(layer.min, values.min(1).values.float())
    assert torch.equal(layer.max, values.max(1).values.float())
    assert torch.allclose(layer.mean.double(), values.mean(1), atol=1e-5)
    assert torch.allclose(layer.std.double(), values.std(1, correction=0), atol=1e-5)
    assert torch.allclose(layer.zero_fraction.double(), (values == 0).double().mean(1))
    assert torch.equal(layer.histogram, _histogram(values, layer.edges))


def test_samples_reduced_as_the_buffer_fills_give_the_same_statistics(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 6, 5, 5, generator=gen).relu()
    reductions = []
    reduce = channels._reduce

    def counted(accumulators: list[ChannelStats], values) -> None:
        reductions.append(values.shape[1])
        reduce(accumulators, values)

    monkeypatch.setattr(channels, "_reduce", counted)

    def stats(**options: object) -> LayerStats:
        acc = ChannelStats(bins=12, **options)
        for batch in _batches(x, 1):  # 25 values per channel and batch: none left out
            acc.update(batch, axis=1)
        return acc.result("x")

    at_once = stats(sample=6 * 64)
    monkeypatch.setattr(channels, "_STAGED", 6 * 60)  # the buffer holds 2 batches
    in_steps = stats(sample=6 * 64)
    each = stats(sample=None)  # no buffer: every batch on its own
    assert reductions == [750] + [50] * 15 + [25] * 30
    for layer in (at_once, in_steps, each):
        _exact(layer, _per_channel(x, 1))
        for name in ("min", "max", "zero_fraction", "histogram", "edges", "clamped"):
            assert torch.equal(getattr(layer, name), getattr(at_once, name)), name


def test_maps_that_change_size_between_batches_are_described_exactly():
    gen = torch.Generator().manual_seed(6)
    maps = [torch.randn(3, 4, size, size, generator=gen) for size in (5, 7, 3)]
    acc = ChannelStats(bins=8, sample=None)
    for batch in maps:
        acc.update(batch, axis=1)
    _exact(acc.result("x"), torch.cat([_per_channel(m, 1) for m in maps], dim=1))


def test_updates_after_a_result_continue_the_same_statistics():
    gen = torch.Generator().manual_seed(7)
    first, second = torch.randn(40, 5, generator=gen), torch.randn(30, 5, generator=gen)
    acc = ChannelStats(bins=[-3.0, -1.0, 0.0, 1.0, 3.0])
    acc.update(first, axis=-1)
    _exact(acc.result("x"), _per_channel(first, 1))
    acc.update(second, axis=-1)
    _exact(acc.result("x"), _per_channel(torch.cat([first, second]), 1))


def test_layers_finished_together_match_each_finished_alone():
    gen = torch.Generator().manual_seed(8)
    shapes = {"a": ((16, 3, 4, 4), 1, 10), "b": ((16, 7), -1, 10), "c": ((16, 2, 3), 1, 5)}
    accumulators = {}
    for name, (shape, axis, bins) in shapes.items():
        accumulators[name] = ChannelStats(bins=bins)
        for _ in range(3):
            accumulators[name].update(torch.randn(shape, generator=gen), axis=axis)
    items = [(acc, name, "T", shapes[name][1]) for name, acc in accumulators.items()]
    together = channels._results(items)  # "c" has other bins: finished on its own
    for stats, (acc, name, _, axis) in zip(together, items, strict=True):
        alone = acc.result(name, module_type="T", axis=axis)
        assert stats.layer == name and stats.channel_axis == axis
        for field in ("mean", "std", "min", "max", "zero_fraction", "histogram", "clamped"):
            assert torch.equal(getattr(stats, field), getattr(alone, field)), (name, field)


def test_outputs_changed_in_place_later_are_described_as_the_layer_gave_them():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True)).eval()  # ReLU writes
    x = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(9))  # into the conv output
    stats = activation_stats(model, _batches(x, 2), sample=None)
    stored = _stored(model, x, ["0", "1"])
    _exact(stats["0"], _per_channel(stored["0"], 1))  # negatives kept: recorded before the ReLU
    _exact(stats["1"], _per_channel(stored["1"], 1))
    assert float(stats["0"].min.min()) < 0


def test_tensors_numpy_cannot_read_give_the_same_statistics():
    """CPU float tensors are sampled through numpy (strided ones too); others (needing grad,
    bfloat16, off the CPU) through torch: both read the same positions."""
    gen = torch.Generator().manual_seed(10)
    batches = [torch.randn(48, 5, 6, 6, generator=gen).relu() for _ in range(3)]
    batches.append(torch.randn(7, 5, 6, 6, generator=gen))  # a short last batch

    def stats(tensors: list[torch.Tensor]) -> LayerStats:
        acc = ChannelStats(bins=20, sample=100)
        for tensor in tensors:
            acc.update(tensor, axis=1)
        return acc.result("x")

    through_numpy = stats(batches)
    assert through_numpy.sampled == 3 * 96 + 7 * 14  # 48 inputs x 2 positions, 7 x 14
    needing_grad = stats([b.clone().requires_grad_() for b in batches])
    rounded = [b.bfloat16() for b in batches]  # no numpy dtype
    pairs = [(needing_grad, through_numpy), (stats(rounded), stats([b.float() for b in rounded]))]
    strided = [b.transpose(2, 3) for b in batches]  # numpy reads a strided view
    pairs.append((stats(strided), stats([b.contiguous() for b in strided])))
    for torch_read, numpy_read in pairs:
        for name in ("mean", "std", "min", "max", "zero_fraction", "histogram", "clamped"):
            assert torch.equal(getattr(torch_read, name), getattr(numpy_read, name)), name


def test_sample_indices_too_large_to_cache_pick_the_same_values(monkeypatch):
    x = torch.rand(24, 4, 10, 10, generator=torch.Generator().manual_seed(11))
    batches = _batches(x, 10)  # 10, 10 and 4 inputs: three plans, other phases

    def stats() -> LayerStats:
        return activation_stats(nn.Sequential(nn.Identity()), batches, layers="0", sample=30)["0"]

    cached = stats()
    monkeypatch.setattr(sampling, "_INDEX_CACHED", 0)  # every index built anew
    built = stats()
    assert cached.sampled == built.sampled == 30 + 30 + 28
    for name in ("mean", "std", "min", "max", "zero_fraction", "histogram"):
        assert torch.equal(getattr(built, name), getattr(cached, name)), name
