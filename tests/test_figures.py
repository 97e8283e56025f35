"""Figure builders: the right traces, titles and numbers, light figures, clear errors."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import prunelab
from prunelab import Masks, figures
from prunelab.figures import (
    channel_magnitudes,
    layer_sparsity,
    mask_overlap,
    mask_pattern,
    weight_heatmap,
    weight_histogram,
)
from tests.conftest import make_cnn, make_mlp


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text


# ----------------------------------------------------------------------------------------
# weight_heatmap


def test_heatmap_before_after_zeros_exactly_where_pruned():
    model = make_mlp()
    masks = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    weight = model[0].weight.detach()
    mask = masks["0.weight"]
    fig = weight_heatmap(weight, mask, title="first layer")

    assert isinstance(fig, go.Figure)
    before, after, pruned = _heatmaps(fig)
    assert (before.name, after.name, pruned.name) == ("before", "after", "pruned")
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "before" and titles[1].startswith("after")
    np.testing.assert_allclose(before.z, weight.numpy(), rtol=1e-6)
    np.testing.assert_allclose(after.z[mask.numpy()], weight.numpy()[mask.numpy()], rtol=1e-6)
    # pruned cells leave the weight scale and are drawn by the "pruned" trace alone
    assert (np.isnan(after.z) == ~mask.numpy()).all()
    assert (np.isfinite(pruned.z) == ~mask.numpy()).all()
    assert _title(fig).startswith("first layer")
    assert "sparsity 50.0%" in _title(fig)
    assert fig.layout.xaxis.title.text == "input feature"
    assert fig.layout.yaxis.title.text == "output feature"


def test_heatmap_shares_one_zero_centred_colour_bar():
    weight = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    fig = weight_heatmap(weight, weight.abs() > 1)
    assert {t.coloraxis for t in fig.data if t.name != "pruned"} == {"coloraxis"}
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmid, axis.cmax) == (-3.0, 0.0, 3.0)
    assert axis.colorscale[0][1] != axis.colorscale[-1][1]  # diverging, not flat


def test_heatmap_without_mask_is_one_panel():
    fig = weight_heatmap(np.arange(6.0).reshape(2, 3))
    (trace,) = fig.data
    assert trace.name == "weights"
    assert trace.z.shape == (2, 3)
    assert "Weights 2x3" in _title(fig)
    assert "pooled" not in _title(fig)


def test_heatmap_of_1d_weight_is_a_single_row():
    fig = weight_heatmap(torch.randn(7))
    assert fig.data[0].z.shape == (1, 7)
    assert fig.layout.xaxis.title.text == "element"


def test_conv_matrix_layout_flattens_kernels_input_channel_fastest():
    conv = make_cnn()[0].weight.detach()  # 8 x 3 x 3 x 3
    fig = weight_heatmap(conv)
    assert fig.data[0].z.shape == (8, 27)
    # column k * 3 + i is input channel i at kernel position k (kh, kw flattened)
    expected = conv.permute(0, 2, 3, 1).reshape(8, 27).numpy()
    np.testing.assert_allclose(fig.data[0].z, expected, rtol=1e-6)
    assert fig.layout.xaxis.title.text == "input (kh x kw x in, input channel fastest)"
    assert fig.layout.yaxis.title.text == "output channel"


def _is_colour_on(scale: str, colour: str) -> bool:
    """Whether ``colour`` (hex) is one of the colours a named plotly scale runs through."""
    import plotly.colors

    steps = plotly.colors.get_colorscale(scale)
    rgb = plotly.colors.hex_to_rgb(colour)
    samples = plotly.colors.sample_colorscale(steps, [i / 200 for i in range(201)])
    parsed = [plotly.colors.unlabel_rgb(c) for c in samples]
    return any(sum(abs(a - b) for a, b in zip(p, rgb, strict=True)) < 40 for p in parsed)


def test_pruned_weights_have_a_colour_no_kept_weight_can_have():
    # at 10% sparsity the pruned weights are the ones nearest zero: on the weight scale they
    # would be white like their kept neighbours, so they must be drawn apart
    weight = torch.linspace(-1, 1, 40).reshape(4, 10)
    mask = weight.abs() > 0.12
    fig = weight_heatmap(weight, mask)
    _, after, pruned = _heatmaps(fig)
    assert np.isnan(after.z[~mask.numpy()]).all() and np.isfinite(after.z[mask.numpy()]).all()
    colours = {c for _, c in pruned.colorscale}
    assert len(colours) == 1 and pruned.showscale is False
    (colour,) = colours
    assert fig.layout.coloraxis.colorscale[0][1] == "rgb(103,0,31)"  # RdBu: red to blue
    assert not _is_colour_on("RdBu", colour)
    assert pruned.xaxis == after.xaxis == "x2"  # drawn on the "after" panel
    # mask figures use the same colour for pruned cells
    scale = mask_pattern(mask).data[0].colorscale
    assert scale[0][1] == colour and scale[-1][1] != colour


def test_pooled_after_panel_marks_blocks_that_are_wholly_pruned():
    weight = torch.ones(4, 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[:2, :2] = False  # one 2x2 block wholly pruned
    mask[3, 3] = False  # one block partly pruned: drawn as its mean with the zero
    fig = weight_heatmap(weight, mask, max_cells=4)
    _, after, pruned = _heatmaps(fig)
    assert np.isnan(after.z[0, 0]) and pruned.z[0, 0] == 1
    assert after.z[1, 1] == pytest.approx(0.75) and np.isnan(pruned.z[1, 1])


def test_two_four_mask_on_a_conv_layer_is_a_comb():
    weight = torch.randn(6, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 6, 3))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    mask = prunelab.prune(model, "n:m")["0.weight"]
    for fig, trace in ((mask_pattern(mask), 0), (weight_heatmap(weight, mask), 2)):
        z = np.asarray(fig.data[trace].z, dtype=float)
        kept = z == 1 if trace == 0 else np.isnan(z)
        groups = kept.reshape(6, -1, 4)  # each 4 adjacent columns are one N:M group
        assert (groups.sum(axis=2) == 2).all()
    # the plain reshape (in x kh x kw) would spread a group over columns 9 apart
    plain = mask.reshape(6, -1).numpy().reshape(6, -1, 4)
    assert not (plain.sum(axis=2) == 2).all()


def test_conv_filters_layout_tiles_kernels_with_nan_gaps():
    weight = torch.randn(4, 3, 2, 5)
    mask = weight > 0
    fig = weight_heatmap(weight, mask, layout="filters")
    before, after, pruned = _heatmaps(fig)
    # documented: (O*kh + O-1) x (I*kw + I-1)
    assert before.z.shape == (4 * 2 + 3, 3 * 5 + 2)
    for o in range(4):
        for i in range(3):
            tile = before.z[o * 3 : o * 3 + 2, i * 6 : i * 6 + 5]
            np.testing.assert_allclose(tile, weight[o, i].numpy(), rtol=1e-6)
            kept_tile = after.z[o * 3 : o * 3 + 2, i * 6 : i * 6 + 5]
            assert np.isnan(kept_tile[~mask[o, i].numpy()]).all()
    assert np.isnan(before.z[2, :]).all() and np.isnan(before.z[:, 5]).all()
    assert np.isnan(pruned.z[2, :]).all()  # a gap is neither kept nor pruned
    assert np.isfinite(pruned.z).sum() == int((~mask).sum())
    assert np.isfinite(before.z).sum() == weight.numel()
    assert "output channel" in fig.layout.yaxis.title.text
    assert "input channel" in fig.layout.xaxis.title.text


def test_conv1d_filters_layout_has_no_row_gaps():
    fig = weight_heatmap(torch.randn(5, 2, 3), layout="filters")
    assert fig.data[0].z.shape == (5, 2 * 3 + 1)


def test_large_layer_is_pooled_under_the_cell_cap():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(2000, 1500, generator=gen)
    mask = weight.abs() > 0.5
    fig = weight_heatmap(weight, mask)
    for trace in _heatmaps(fig):
        assert trace.z.size <= 250_000
    assert _heatmaps(fig)[0].z.shape == (500, 500)
    assert "pooled 4x3: each cell is the mean of a 4x3 block" in _title(fig)
    np.testing.assert_allclose(_heatmaps(fig)[0].z[0, 0], weight[:4, :3].mean().item(), rtol=1e-5)

    pattern = mask_pattern(mask, max_cells=10_000)
    assert pattern.data[0].z.size <= 10_000
    assert "pooled" in _title(pattern) and "fraction kept" in _title(pattern)
    assert np.nanmin(pattern.data[0].z) >= 0 and np.nanmax(pattern.data[0].z) <= 1


@pytest.mark.parametrize("shape", [(1, 100_000), (333, 7), (101, 103)])
@pytest.mark.parametrize("cap", [1, 50, 999])
def test_pooling_respects_any_cap(shape, cap):
    fig = weight_heatmap(np.ones(shape), max_cells=cap)
    assert fig.data[0].z.size <= cap
    assert np.isfinite(fig.data[0].z).all()


# ----------------------------------------------------------------------------------------
# mask_pattern


def test_mask_pattern_two_colours_and_sparsity_in_title():
    mask = torch.tensor([[True, False, False], [True, True, False]])
    fig = mask_pattern(mask)
    (trace,) = fig.data
    assert trace.name == "mask"
    assert trace.z.tolist() == [[1, 0, 0], [1, 1, 0]]
    assert list(trace.colorbar.ticktext) == ["pruned", "kept"]
    assert len({colour for _, colour in trace.colorscale}) == 2
    assert "sparsity 50.0%" in _title(fig)
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_mask_pattern_accepts_numpy_zero_one():
    fig = mask_pattern(np.array([[1, 0], [0, 0]]))
    assert "sparsity 75.0%" in _title(fig)


# ----------------------------------------------------------------------------------------
# weight_histogram


def test_histogram_shades_the_pruned_band():
    weight = make_mlp()[0].weight.detach()
    t = 0.1
    fig = weight_histogram(weight, t, bins=40)
    (bars,) = fig.data
    assert isinstance(bars, go.Bar)
    assert int(np.sum(bars.y)) == weight.numel()
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [(r.x0, r.x1) for r in rects] == [(-t, t)]
    assert sorted(line.x0 for line in lines) == [-t, t]
    assert all(line.line.dash == "dash" for line in lines)
    share = (weight.abs() <= t).float().mean().item()
    assert f"{share:.1%}" in fig.layout.annotations[0].text
    assert fig.layout.xaxis.title.text == "weight value"
    assert fig.layout.yaxis.title.text == "count"


def test_histogram_of_non_negative_scores_has_one_cut():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.9])
    fig = weight_histogram(scores, 0.25, bins=4, log_y=True)
    (rect,) = [s for s in fig.layout.shapes if s.type == "rect"]
    assert (rect.x0, rect.x1) == (pytest.approx(0.1), 0.25)
    assert [s.x0 for s in fig.layout.shapes if s.type == "line"] == [0.25]
    assert "50.0%" in fig.layout.annotations[0].text
    assert fig.layout.yaxis.type == "log"
    forced = weight_histogram(scores, 0.25, symmetric=True)
    assert [(s.x0, s.x1) for s in forced.layout.shapes if s.type == "rect"] == [(-0.25, 0.25)]


def test_histogram_without_threshold_has_no_shapes():
    fig = weight_histogram(np.array([-1.0, 0.0, 1.0]), title="plain")
    assert not fig.layout.shapes
    assert _title(fig).startswith("plain")


# ----------------------------------------------------------------------------------------
# channel_magnitudes


def test_channel_split_from_1d_and_full_mask_agree():
    conv = make_cnn()[3].weight.detach()  # 12 x 8 x 3 x 3
    masks = prunelab.prune(make_cnn(), "weight-norm-channel", sparsity=0.5)
    full = masks["3.weight"]
    channel_mask = full.flatten(1).any(dim=1)
    scores = conv.abs().sum(dim=(1, 2, 3))

    from_1d = channel_magnitudes(scores, channel_mask)
    from_full = channel_magnitudes(scores, full)
    for fig in (from_1d, from_full):
        kept, pruned = fig.data
        assert (kept.name, pruned.name) == ("kept", "pruned")
        assert kept.x.tolist() == torch.nonzero(channel_mask).flatten().tolist()
        assert pruned.x.tolist() == torch.nonzero(~channel_mask).flatten().tolist()
        np.testing.assert_allclose(kept.y, scores[channel_mask].numpy(), rtol=1e-6)
        assert kept.marker.color != pruned.marker.color
        assert fig.layout.xaxis.title.text == "channel"
        assert fig.layout.yaxis.title.text == "score"
    assert "6 of 12 channels kept" in _title(from_1d)


def test_channel_mask_along_another_dim_and_sorting():
    scores = torch.tensor([5.0, 1.0, 3.0])
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)  # ConvTranspose-like: channels in dim 1
    mask[0, 0, 1] = mask[1, 2, 0] = True
    fig = channel_magnitudes(scores, mask, dim=1, sort=True)
    assert fig.data[0].x.tolist() == [0, 2]
    assert fig.data[1].x.tolist() == [1]
    assert list(fig.layout.xaxis.categoryarray) == [1, 2, 0]
    assert "sorted" in fig.layout.xaxis.title.text


def test_channel_magnitudes_without_mask_is_one_trace():
    fig = channel_magnitudes(np.array([1.0, 2.0]))
    assert [t.name for t in fig.data] == ["score"]


# ----------------------------------------------------------------------------------------
# layer_sparsity


def test_layer_sparsity_bars_match_per_layer():
    masks = prunelab.prune(make_mlp(), "global-magnitude", sparsity=0.6)
    fig = layer_sparsity(masks)
    (bars,) = fig.data
    table = masks.per_layer()
    assert bars.name == "layers"
    assert list(bars.y) == table["fqn"].tolist()
    np.testing.assert_allclose(bars.x, table["sparsity"] * 100)
    assert list(fig.layout.yaxis.categoryarray) == table["fqn"].tolist()
    (line,) = fig.layout.shapes
    assert line.x0 == pytest.approx(masks.sparsity() * 100)
    assert line.line.dash == "dash"
    assert "kept" in bars.hovertemplate
    assert bars.customdata[0][0] == table["kept"][0]
    assert fig.layout.xaxis.title.text.startswith("sparsity")
    assert fig.layout.yaxis.title.text == "layer"


def test_layer_sparsity_highlights_empty_layers():
    masks = Masks(
        {
            "a.weight": torch.tensor([[True, False]]),
            "b.weight": torch.zeros(2, 2, dtype=torch.bool),
            "c.weight": torch.ones(3, dtype=torch.bool),
        }
    )
    fig = layer_sparsity(masks)
    layers, empty = fig.data
    assert (layers.name, empty.name) == ("layers", "empty")
    assert list(empty.y) == ["b.weight"] and list(empty.x) == [100.0]
    assert list(layers.y) == ["a.weight", "c.weight"]
    assert layers.marker.color != empty.marker.color
    assert list(fig.layout.yaxis.categoryarray) == ["a.weight", "b.weight", "c.weight"]
    assert "1 empty layer" in _title(fig)


# ----------------------------------------------------------------------------------------
# mask_overlap


def test_mask_overlap_counts_and_iou_match_masks_overlap():
    model = make_cnn()
    a = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    b = prunelab.prune(model, "random", sparsity=0.5, seed=3)
    fqn = "3.weight"
    fig = mask_overlap(a, b, fqn, names=("magnitude", "random"))
    (trace,) = fig.data
    ma, mb = a[fqn].flatten(1).numpy(), b[fqn].flatten(1).numpy()
    assert trace.z.shape == ma.shape
    expected = [(ma & mb).sum(), (ma & ~mb).sum(), (~ma & mb).sum(), (~ma & ~mb).sum()]
    assert [int((trace.z == k).sum()) for k in range(4)] == expected
    assert list(trace.colorbar.ticktext) == [
        "kept by both",
        "only magnitude keeps",
        "only random keeps",
        "pruned by both",
    ]
    assert len({colour for _, colour in trace.colorscale}) == 4
    iou = a.overlap(b).set_index("fqn").loc[fqn, "iou"]
    match = re.search(r"IoU of kept sets ([0-9.]+)", _title(fig))
    assert match and match.group(1) == f"{iou:.3f}"
    assert fig.layout.xaxis.title.text == "input (kh x kw x in, input channel fastest)"


def test_mask_overlap_pooled_shows_dominant_category():
    a = torch.zeros(600, 600, dtype=torch.bool)
    a[:300] = True
    b = a.clone()
    b[:, :150] = True
    fig = mask_overlap(Masks({"w": a}), Masks({"w": b}), "w", max_cells=40_000)
    z = fig.data[0].z
    assert z.size <= 40_000
    assert "pooled 3x3" in _title(fig) and "most common category" in _title(fig)
    assert z[0, -1] == 0 and z[-1, 0] == 2 and z[-1, -1] == 3
    assert "IoU of kept sets 0.800" in _title(fig)


# ----------------------------------------------------------------------------------------
# Bad input


def test_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\).*weight has shape \(2, 3, 5\)"):
        weight_heatmap(torch.randn(2, 3, 5), torch.ones(2, 3, 4, dtype=torch.bool))


@pytest.mark.parametrize(
    "call",
    [
        lambda: weight_heatmap(torch.empty(0, 3)),
        lambda: mask_pattern(torch.empty(0, dtype=torch.bool)),
        lambda: weight_histogram(np.array([])),
        lambda: channel_magnitudes(torch.empty(0)),
    ],
)
def test_empty_tensors(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_channel_count_mismatch():
    with pytest.raises(ValueError, match=r"4 channels along dim 0.*3 scores"):
        channel_magnitudes(torch.ones(3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="1-D"):
        channel_magnitudes(torch.ones(3, 3))
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        channel_magnitudes(torch.ones(3), torch.ones(3, 4, dtype=torch.bool), dim=2)


def test_unknown_or_unusable_layout():
    with pytest.raises(ValueError, match=r"layout must be one of \('matrix', 'filters'\)"):
        weight_heatmap(torch.randn(2, 2), layout="grid")
    with pytest.raises(ValueError, match="layout='matrix'"):
        weight_heatmap(torch.randn(2, 2), layout="filters")


def test_other_bad_input():
    with pytest.raises(ValueError, match="only 0 and 1"):
        mask_pattern(np.array([0, 2]))
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        weight_histogram(torch.randn(5), -0.1)
    with pytest.raises(TypeError, match="threshold must be a number"):
        weight_histogram(torch.randn(5), "0.1")
    with pytest.raises(ValueError, match="at least one dimension"):
        weight_heatmap(torch.tensor(1.0))
    with pytest.raises(ValueError, match="max_cells must be at least 1"):
        weight_heatmap(torch.randn(2, 2), max_cells=0)
    with pytest.raises(TypeError, match="torch tensor or a numpy array"):
        weight_heatmap([[1.0, 2.0]])
    masks = Masks({"w": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks_a has no mask for 'v'; it has: \['w'\]"):
        mask_overlap(masks, Masks({"v": torch.ones(2, dtype=torch.bool)}), "v")
    with pytest.raises(ValueError, match="differ in shape"):
        mask_overlap(masks, Masks({"w": torch.ones(3, dtype=torch.bool)}), "w")
    with pytest.raises(ValueError, match="names must be two strings"):
        mask_overlap(masks, masks, "w", names="AB")
    with pytest.raises(ValueError, match="empty"):
        layer_sparsity(Masks({}))


def test_every_figure_serialises_for_the_browser():
    model = make_cnn()
    a = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    b = prunelab.prune(model, "random", sparsity=0.5)
    weight = model[0].weight.detach()
    figures = [
        weight_heatmap(weight, a["0.weight"], layout="filters"),
        mask_pattern(a["0.weight"]),
        weight_histogram(weight, 0.1),
        channel_magnitudes(weight.abs().sum(dim=(1, 2, 3)), a["0.weight"], sort=True),
        layer_sparsity(a),
        mask_overlap(a, b, "0.weight"),
    ]
    for fig in figures:
        payload = json.loads(fig.to_json())
        assert payload["data"] and payload["layout"]["title"]["text"]


def test_sparsity_curves_one_trace_per_strategy():
    import pandas as pd

    table = pd.DataFrame(
        {
            "strategy": ["mag", "mag", "rnd", "rnd"],
            "sparsity": [0.5, 0.0, 0.0, 0.5],
            "accuracy": [0.8, 0.9, 0.9, 0.3],
        }
    )
    fig = figures.sparsity_curves(table)
    assert [t.name for t in fig.data] == ["mag", "rnd"]
    assert list(fig.data[0].x) == [0.0, 50.0] and list(fig.data[0].y) == [90.0, 80.0]
    assert fig.layout.xaxis.title.text.startswith("sparsity")
    with pytest.raises(ValueError, match="lacks column"):
        figures.sparsity_curves(table, metric="loss")


def test_sensitivity_heatmap_grid_and_blank_skipped_points():
    import pandas as pd

    table = pd.DataFrame(
        {
            "layer": ["b", "b", "a", "a"],
            "sparsity": [0.5, 0.9, 0.5, 0.9],
            "drop": [0.1, float("nan"), 0.0, 0.3],
        }
    )
    table.attrs["metric"] = "accuracy"
    fig = figures.sensitivity_heatmap(table)
    heat = fig.data[0]
    assert list(heat.y) == ["b", "a"] and list(heat.x) == ["50%", "90%"]
    # a drop in accuracy is in percentage points, like every accuracy in the app
    assert np.isnan(heat.z[0][1]) and heat.z[1][1] == pytest.approx(30.0)
    assert "accuracy" in fig.layout.title.text and "points" in heat.hovertemplate
    curves = figures.sparsity_curves(table, metric="drop", by="layer")
    assert [t.name for t in curves.data] == ["b", "a"]
    assert curves.layout.yaxis.title.text == "drop in accuracy (points)"
    assert list(curves.data[1].y) == pytest.approx([0.0, 30.0])


def test_data_free_sensitivity_figures_use_words_not_column_names():
    from prunelab.sweeps import SensitivityConfig, sensitivity

    table = sensitivity(
        make_cnn(), sparsities=(0.5, 0.9), config=SensitivityConfig(method="magnitude")
    )
    assert table.attrs["metric"] == "energy_removed"
    for fig in (
        figures.sensitivity_heatmap(table),
        figures.sparsity_curves(table, metric="drop", by="layer"),
    ):
        text = json.dumps(fig.to_plotly_json(), default=str)
        assert "energy_removed" not in text
        assert "weights' energy removed" in text


def test_curves_of_twenty_layers_keep_a_readable_legend():
    import pandas as pd

    layers = [f"layer{i // 2}.{i % 2}.conv.weight" for i in range(21)]
    table = pd.DataFrame(
        {
            "layer": np.repeat(layers, 2),
            "sparsity": [0.5, 0.9] * 21,
            "drop": np.linspace(0, 0.5, 42),
        }
    )
    fig = figures.sparsity_curves(table, metric="drop", by="layer")
    *curves, scale = fig.data
    assert [t.name for t in curves] == [name.removesuffix(".weight") for name in layers]
    colours = [t.line.color for t in curves]
    assert len(set(colours)) == 21  # no palette cycling: two layers never share a colour
    # no legend of 21 entries; a colour bar from the first layer to the last, names on hover
    assert fig.layout.showlegend is False
    assert scale.marker.showscale and list(scale.marker.colorbar.ticktext) == [
        "layer0.0.conv",
        "layer10.0.conv",
    ]
    assert all(t.name in t.hovertemplate for t in curves)
    assert "hover a curve" in _title(fig)
    few = figures.sparsity_curves(table[table["layer"].isin(layers[:3])], metric="drop", by="layer")
    assert few.layout.showlegend is None and len(few.data) == 3  # a short legend stays


# -- activation figures ------------------------------------------------------------------


def _relu_stats(shift: float = 0.0, channels: int = 4):
    from prunelab.activations import activation_stats

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(200, channels, generator=gen) + shift
    x[:, 0] = -1.0  # channel 0 is dead after the ReLU
    return activation_stats(torch.nn.Sequential(torch.nn.ReLU()), x, bins=20)["0"]


def activation_stats_of(x: torch.Tensor):
    from prunelab.activations import activation_stats

    return activation_stats(torch.nn.Sequential(torch.nn.Identity()), x, layers="0")["0"]


def test_activation_histogram_overlays_shares_and_marks_the_threshold():
    before, after = _relu_stats(), _relu_stats(shift=0.5)
    fig = figures.activation_histogram(before, after, threshold=0.3, names=("dense", "pruned"))
    assert [t.name for t in fig.data] == ["dense", "pruned"]
    assert all(abs(sum(t.y) - 100) < 1e-6 for t in fig.data)
    rect = next(s for s in fig.layout.shapes if s.type == "rect")
    assert (rect.x0, rect.x1) == (0.0, 0.3)  # ReLU outputs: nothing below 0 to shade
    signed = activation_stats_of(torch.randn(50, 2))
    rect = next(s for s in figures.activation_histogram(signed, threshold=0.3).layout.shapes)
    assert (rect.x0, rect.x1) == (-0.3, 0.3)
    assert "dense: " in _title(fig) and "exact zeros" in _title(fig)
    one = figures.activation_histogram(before, channel=0)
    assert one.data[0].name == "activations" and "100.0% exact zeros" in _title(one)
    with pytest.raises(ValueError, match=r"out of range.*4 channels"):
        figures.activation_histogram(before, channel=4)
    with pytest.raises(TypeError, match="LayerStats"):
        figures.activation_histogram(torch.zeros(3))
    with pytest.raises(ValueError, match="same layer"):
        figures.activation_histogram(before, _relu_stats(channels=5))


def test_activation_histogram_at_threshold_zero_says_nothing_is_zeroed():
    fig = figures.activation_histogram(_relu_stats(), threshold=0.0)
    assert "< 0" not in _title(fig) and "no value is zeroed" in _title(fig)
    assert not [s for s in fig.layout.shapes if s.type == "rect"]


def test_channel_apoz_and_ranges_show_every_channel_with_dead_ones_flagged():
    stats = _relu_stats()
    fig = figures.channel_apoz(stats, _relu_stats(shift=1.0))
    assert [t.name for t in fig.data] == ["before", "after"]
    assert fig.data[0].y[0] == 100.0 and fig.data[0].marker.color[0] == "#d62728"
    assert fig.data[0].marker.color[1] != "#d62728"
    assert "1 dead" in _title(fig)
    boxes = figures.channel_ranges(stats, max_channels=3)
    assert len(boxes.data[0].x) == 3 and "first 3 of 4 channels" in _title(boxes)
    assert list(boxes.data[0].median) == stats.quantiles([0.5])[:3, 0].tolist()
    assert list(boxes.data[0].upperfence) == stats.max[:3].tolist()


def test_activation_mask_per_tensor_per_feature_and_soft():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    fig = figures.activation_mask(mask)
    assert fig.data[0].z.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    assert "50.0% of the positions kept" in _title(fig)
    per_feature = figures.activation_mask([mask[:1], mask[1:]], features=[2, 5])
    assert list(per_feature.layout.yaxis.ticktext) == ["feature 2", "feature 5"]
    soft = figures.activation_mask(torch.tensor([0.2, 0.9]))
    assert "soft mask" in _title(soft)
    with pytest.raises(ValueError, match="share one shape"):
        figures.activation_mask([torch.ones(2), torch.ones(3)])
    with pytest.raises(ValueError, match="empty list"):
        figures.activation_mask([])
    for built in (fig, per_feature, soft, figures.channel_ranges(_relu_stats())):
        assert json.loads(built.to_json())["layout"]["title"]["text"]


def _check_legend_matches_drawing(fig: go.Figure) -> None:
    """Each legend entry stands for traces that look alike, and every trace has an entry."""
    looks: dict[tuple, set] = {}
    for trace in fig.data:
        colour = trace.line.color if trace.mode == "lines" else trace.marker.color
        look = (trace.mode, trace.line.dash, trace.marker.symbol, colour)
        looks.setdefault((trace.legendgroup, trace.name), set()).add(look)
    shown = [(t.legendgroup, t.name) for t in fig.data if t.showlegend is not False]
    assert len(shown) == len(set(shown)) == len(looks)  # one entry per kind, none missing
    assert all(len(kinds) == 1 for kinds in looks.values()), looks
    groups = {t.legendgroup: t.line.color for t in fig.data if t.mode == "lines"}
    assert len(set(groups.values())) == len(groups)  # one colour per run


def test_training_curves_schedule_plot_and_compare_bars():
    import pandas as pd

    from prunelab.training import Gradual, OneShot

    history = pd.DataFrame(
        {
            "step": [0, 1, 2],
            "loss": [2.0, 1.5, 1.0],
            "accuracy": [0.2, 0.5, 0.7],
            "sparsity": [0.0, 0.5, 0.9],
            "eval_accuracy": [None, None, 0.8],
        }
    )
    fig = figures.training_curves(history)
    names = [t.name for t in fig.data]
    assert names == ["batch values", "batch values", "held-out data (each epoch)", "sparsity"]
    assert list(fig.data[2].y) == [80.0] and list(fig.data[3].y) == [0.0, 50.0, 90.0]
    assert "diamonds: held-out data" in _title(fig)
    both = figures.training_curves({"a": history, "b": history.drop(columns="sparsity")})
    assert "a: batch loss" in both.data[0].hovertemplate
    assert "b: batch accuracy" in both.data[5].hovertemplate
    no_eval = figures.training_curves(history.drop(columns="eval_accuracy"))
    assert "diamonds" not in _title(no_eval)
    for built in (fig, both, no_eval):
        _check_legend_matches_drawing(built)
    with pytest.raises(ValueError, match="lacks column"):
        figures.training_curves(history.drop(columns="loss"))
    cubic = figures.schedule_plot(Gradual(0.0, 0.8, start=0, end=10), steps=10)
    assert cubic.data[0].y[5] == pytest.approx(70.0) and cubic.data[0].y[-1] == pytest.approx(80)
    two = figures.schedule_plot(
        {"one-shot": OneShot(0.8), "gradual": Gradual(0.0, 0.8, start=0, end=10)}, steps=12
    )
    assert [t.name for t in two.data] == ["one-shot", "gradual"]
    with pytest.raises(TypeError, match="sparsity_at"):
        figures.schedule_plot(0.5, steps=10)
    bars = figures.compare_bars({"one-shot": 0.7, "fine-tuned": 0.97}, dense=0.98)
    assert list(bars.data[0].y) == pytest.approx([70.0, 97.0])
    assert "dense" in _title(bars)
    with pytest.raises(ValueError, match="non-empty"):
        figures.compare_bars({})
    for built in (fig, both, cubic, two, bars):
        assert json.loads(built.to_json())["layout"]["title"]["text"]


def test_size_and_speed_bars():
    import pandas as pd

    sizes = figures.size_bars({"dense": 1000, "coo": 1500, "bitmask": 250})
    assert list(sizes.data[0].text) == ["1.00x", "1.50x larger", "4.00x smaller"]
    assert "ratios vs dense" in _title(sizes)
    with pytest.raises(ValueError, match="positive numbers"):
        figures.size_bars({"dense": 0})
    report = pd.DataFrame(
        {
            "variant": ["dense", "masked", "shrunk"] * 2,
            "batch": [1, 1, 1, 16, 16, 16],
            "median_ms": [2.0, 2.1, 1.0, 8.0, 8.2, 3.0],
            "ratio_vs_dense": [1.0, 1.05, 0.5, 1.0, 1.025, 0.375],
        }
    )
    speed = figures.speed_bars(report)
    assert [t.name for t in speed.data] == ["dense", "masked", "shrunk"]
    assert list(speed.data[2].y) == [0.5, 0.375] and list(speed.data[2].x) == [
        "batch 1",
        "batch 16",
    ]
    with pytest.raises(ValueError, match="lacks column"):
        figures.speed_bars(report.drop(columns="ratio_vs_dense"))
    for built in (sizes, speed):
        assert json.loads(built.to_json())["layout"]["title"]["text"]
