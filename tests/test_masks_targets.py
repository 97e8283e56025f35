"""Masks (sparsity, per-layer table, overlap, save/load) and target discovery."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunelab
from tests.conftest import make_cnn, make_lstm, make_misc, make_mlp


def test_targets_cover_every_prunable_layer_type():
    found = {t.fqn: t for t in prunelab.targets(make_misc())}
    assert list(found) == [
        "c1.weight",
        "grouped.weight",
        "depthwise.weight",
        "up.weight",
        "c3.weight",
    ]
    assert found["up.weight"].out_dim == 1 and found["up.weight"].in_dim == 0
    assert found["grouped.weight"].groups == 4
    assert found["c1.weight"].bias == "c1.bias"
    lstm = [t.fqn for t in prunelab.targets(make_lstm())]
    assert lstm == [
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.weight_ih_l1",
        "lstm.weight_hh_l1",
        "head.weight",
    ]
    assert prunelab.targets(make_lstm())[0].bias == "lstm.bias_ih_l0"


def test_embeddings_norms_and_biases_are_not_targets():
    fqns = [t.fqn for t in prunelab.targets(make_cnn())]
    assert fqns == ["0.weight", "3.weight", "7.weight"]


def test_include_exclude_globs():
    model = make_lstm()
    assert [t.fqn for t in prunelab.targets(model, include="lstm.*_l1")] == [
        "lstm.weight_ih_l1",
        "lstm.weight_hh_l1",
    ]
    assert [t.fqn for t in prunelab.targets(model, exclude=["lstm.*"])] == ["head.weight"]


def test_tied_weights_are_one_target():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert [t.fqn for t in prunelab.targets(model)] == ["0.weight"]


def test_per_layer_table_and_sparsity():
    masks = prunelab.prune(make_mlp(), "layer-magnitude", sparsity=0.5)
    table = masks.per_layer()
    assert list(table.columns) == ["fqn", "shape", "elements", "kept", "sparsity", "empty"]
    assert table["elements"].tolist() == [192, 128, 24]
    assert table["kept"].tolist() == [96, 64, 12]
    assert masks.sparsity() == 0.5


def test_kept_counts_match_the_table_and_are_a_copy():
    masks = prunelab.prune(make_mlp(), "global-magnitude", sparsity=0.7)
    counts = masks.kept_counts()
    table = masks.per_layer()
    assert counts == dict(zip(table["fqn"], table["kept"].tolist(), strict=True))
    assert counts == {fqn: int(masks[fqn].sum()) for fqn in masks}
    counts[next(iter(counts))] = -1  # changing the answer does not change the masks' counts
    assert masks.kept_counts() == dict(zip(table["fqn"], table["kept"].tolist(), strict=True))


def test_overlap_is_iou_of_kept_sets():
    a = prunelab.Masks({"w": torch.tensor([True, True, False, False])})
    b = prunelab.Masks({"w": torch.tensor([True, False, True, False])})
    row = a.overlap(b).iloc[0]
    assert (row.kept_self, row.kept_other, row.kept_both) == (2, 2, 1)
    assert row.iou == pytest.approx(1 / 3)
    assert a.overlap(a).iloc[0].iou == 1.0


def test_magnitude_and_random_overlap_less_than_magnitude_with_itself():
    model = make_cnn()
    mag = prunelab.prune(model, "layer-magnitude", sparsity=0.5)
    rnd = prunelab.prune(model, "random", sparsity=0.5)
    assert (mag.overlap(rnd)["iou"] < 0.6).all()


def test_save_and_load_round_trip(tmp_path):
    masks = prunelab.prune(make_cnn(), "weight-norm-channel", sparsity=0.5)
    path = tmp_path / "masks.pt"
    masks.save(path)
    loaded = prunelab.Masks.load(path)
    assert loaded.keys() == masks.keys()
    assert all(torch.equal(loaded[f], masks[f]) for f in masks)
    assert loaded.coupled.keys() == masks.coupled.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["masks.pt"]


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"a": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a prunelab masks file"):
        prunelab.Masks.load(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a prunelab masks file"):
        prunelab.Masks.load(path)


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    masks = prunelab.prune(make_mlp(), "layer-magnitude", sparsity=0.5)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        masks.save(tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_masks_are_bool_only():
    with pytest.raises(TypeError, match="bool tensor"):
        prunelab.Masks({"w": torch.ones(3)})


def test_grouped_readers_follow_norms_and_activations_not_reshapes():
    from prunelab.core.targets import grouped_readers, targets

    grouped = nn.Conv2d(8, 8, 3, groups=4)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), grouped)
    assert grouped_readers(model, targets(model)) == {"0.weight": 4}
    shuffled = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Flatten(0, 1), nn.Unflatten(0, (1, 8)), grouped)
    assert grouped_readers(shuffled, targets(shuffled)) == {}
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8))
    assert grouped_readers(depthwise, targets(depthwise)) == {}
