"""storage: byte sizes match the tensors written; sparse formats round-trip exactly."""

from __future__ import annotations

import io
import math

import pytest
import torch

import prunelab
from prunelab.analysis.storage import (
    LAYOUTS,
    compression,
    load_sparse,
    save_sparse,
    sparse_payload,
    storage_table,
    to_sparse,
)
from prunelab.core.apply import masked_forward, masked_weights
from tests.conftest import assert_unchanged, make_cnn, snapshot


@pytest.fixture
def pruned():
    model = make_cnn().eval()
    return model, prunelab.prune(model, "global-magnitude", sparsity=0.7)


def _nbytes(parts: dict) -> int:
    return sum(t.numel() * t.element_size() for k, t in parts.items() if k != "shape")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sizes_are_the_bytes_written(pruned, layout):
    model, masks = pruned
    table = storage_table(model, masks).set_index("fqn")
    payload = sparse_payload(model, masks, layout=layout)
    for fqn, parts in payload["sparse"].items():
        assert _nbytes(parts) == table.loc[fqn, layout], fqn


def test_torch_sparse_tensors_hold_the_masked_weights(pruned):
    model, masks = pruned
    before = snapshot(model)
    expected = masked_weights(model, masks)
    table = storage_table(model, masks).set_index("fqn")
    for layout in ("coo", "csr"):
        for fqn, sparse in to_sparse(model, masks, layout=layout).items():
            dense = sparse.to_dense().reshape(expected[fqn].shape)
            assert torch.equal(dense, expected[fqn].detach())
            if layout == "coo":
                size = sparse.indices().nbytes + sparse.values().nbytes
            else:
                size = sum(t.nbytes for t in (sparse.crow_indices(), sparse.col_indices()))
                size += sparse.values().nbytes
            assert size == table.loc[fqn, layout]
    assert_unchanged(model, before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_checkpoint_round_trip_is_exact(pruned, layout, tmp_path):
    model, masks = pruned
    path = tmp_path / "model.sparse.pt"
    save_sparse(model, masks, path, layout=layout)
    restored, found = load_sparse(path, make_cnn(seed=5).eval())
    x = torch.randn(4, 3, 6, 6)
    for fqn in masks:
        assert torch.equal(found[fqn], masks[fqn])
    with torch.no_grad():
        assert torch.equal(restored(x), masked_forward(model, masks, x))


def test_compression_and_quantization(pruned):
    model, masks = pruned
    table = storage_table(model, masks, bits=4)
    row = table.iloc[0]
    positions = min(row[k] - row["nnz"] * 4 for k in LAYOUTS)
    assert row["quantized"] == min(
        positions + math.ceil(row["nnz"] * 4 / 8) + 4, math.ceil(row["numel"] / 2) + 4
    )
    summary = compression(model, masks, bits=4)
    assert summary["dense_bytes"] == sum(
        t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]
    )
    assert summary["quantized_bytes"] < summary["best_bytes"] < summary["dense_bytes"]
    assert summary["ratio"] == pytest.approx(summary["dense_bytes"] / summary["best_bytes"])


def test_dense_wins_when_nothing_is_pruned():
    model = make_cnn()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.0)
    assert set(storage_table(model, masks)["best"]) == {"dense"}


def test_bad_input_is_refused(pruned, tmp_path):
    model, masks = pruned
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 16"):
        storage_table(model, masks, bits=0)
    with pytest.raises(ValueError, match="accepted: coo, csr, bitmask"):
        sparse_payload(model, masks, layout="dok")
    with pytest.raises(ValueError, match="'coo' or 'csr'"):
        to_sparse(model, masks, layout="bitmask")
    junk = tmp_path / "junk.pt"
    torch.save({"a": torch.zeros(1)}, junk)
    with pytest.raises(ValueError, match="not a prunelab sparse checkpoint"):
        load_sparse(junk, model)


def test_interrupted_save_leaves_no_file(pruned, tmp_path, monkeypatch):
    model, masks = pruned
    path = tmp_path / "model.sparse.pt"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_sparse(model, masks, path)
    assert list(tmp_path.iterdir()) == []


def test_load_from_bytes(pruned):
    model, masks = pruned
    buffer = io.BytesIO()
    torch.save(sparse_payload(model, masks), buffer)
    buffer.seek(0)
    restored, _ = load_sparse(buffer, make_cnn())
    assert torch.equal(restored[0].weight, masked_weights(model, masks)["0.weight"])
