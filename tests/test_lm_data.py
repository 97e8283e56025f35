"""Language-model data and metrics: token specs, per-token metrics, perplexity (issue 20)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab
from prunelab.analysis import evaluation
from prunelab.figures.fmt import metric_change, metric_value
from prunelab.io.data import load
from prunelab.io.text import TokenData, load_tokenizer, token_sequences
from prunelab.runtime.metrics import (
    LOWER_IS_BETTER,
    MetricTotals,
    accumulate,
    default_metrics,
    headline_metric,
    logits_of,
    summarize,
)
from prunelab.sweeps import SensitivityConfig, sensitivity
from prunelab.sweeps.config import LOWER_IS_BETTER as CONFIG_LOWER

VOCAB = 1024  # the sample tokenizer's


class TinyLM(nn.Module):
    """A causal LM small enough for any test: embedding, a causal mixing layer, a head."""

    def __init__(self, vocab: int = VOCAB, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> dict:
        h = self.embed(ids)
        # causal: each position sees the running mean of the positions up to it
        h = h.cumsum(1) / torch.arange(1, ids.shape[1] + 1).view(1, -1, 1)
        return {"logits": self.head(torch.relu(self.mix(h)))}


@pytest.fixture(scope="module")
def text_data() -> TokenData:
    return load("sample:pydoc-text?context=16&limit=12")


@pytest.fixture(scope="module")
def lm() -> nn.Module:
    torch.manual_seed(0)
    return TinyLM().eval()


def test_lower_is_better_has_one_home():
    assert CONFIG_LOWER is LOWER_IS_BETTER
    assert "perplexity" in LOWER_IS_BETTER


def test_sample_text_is_next_token_sequences(text_data):
    assert text_data.inputs.shape == (12, 16) and text_data.labels.shape == (12, 16)
    # labels are the inputs shifted by one, across sequence boundaries too
    flat_in, flat_lab = text_data.inputs.reshape(-1), text_data.labels.reshape(-1)
    assert torch.equal(flat_in[1:], flat_lab[:-1])
    assert int(text_data.inputs.max()) < VOCAB
    assert default_metrics(text_data)[0] == "perplexity" == headline_metric(text_data)
    train = load("sample:pydoc-text?context=16", split="train", limit=3)
    assert not torch.equal(train.inputs, text_data.inputs[:3])


def test_token_sequences_drop_the_partial_tail():
    inputs, labels = token_sequences(range(9), 4)
    assert inputs.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert labels.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(ValueError, match="fewer than one sequence"):
        token_sequences(range(4), 4)


def test_perplexity_is_exp_of_the_token_mean_over_all_batches(lm, text_data):
    result = prunelab.evaluate(lm, text_data, batch_size=5)  # uneven batches: 5, 5, 2
    with torch.no_grad():
        logits = lm(text_data.inputs)["logits"]
    losses = F.cross_entropy(
        logits.reshape(-1, VOCAB), text_data.labels.reshape(-1), reduction="none"
    )
    assert result["loss"] == pytest.approx(float(losses.mean()), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(float(losses.mean())), rel=1e-5)
    accuracy = (logits.argmax(-1) == text_data.labels).float().mean()
    assert result["accuracy"] == pytest.approx(float(accuracy))
    assert result["agreement"] == 1.0 and result["kl"] == 0.0 and result["samples"] == 12


def test_ignored_labels_and_fidelity_per_token(lm, text_data):
    labels = text_data.labels.clone()
    labels[:, :8] = -100  # score only the second half of each sequence
    masks = prunelab.prune(lm, "layer-magnitude", sparsity=0.7)
    result = prunelab.evaluate(lm, (text_data.inputs, labels), masks=masks)
    from prunelab.core.apply import masked_weights
    from prunelab.runtime.functional import functional_forward

    with torch.no_grad():
        dense = lm(text_data.inputs)["logits"][:, 8:].reshape(-1, VOCAB)
        pruned = functional_forward(lm, masked_weights(lm, masks), text_data.inputs)
        pruned = pruned["logits"][:, 8:].reshape(-1, VOCAB)
    assert result["samples"] == 12
    # fidelity over the scored positions only: the -100 ones are left out of it too
    kl = F.kl_div(pruned.log_softmax(-1), dense.log_softmax(-1), log_target=True, reduction="none")
    assert result["kl"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-4)
    agree = (dense.argmax(-1) == pruned.argmax(-1)).float().mean()
    assert result["agreement"] == pytest.approx(float(agree))
    expected = F.cross_entropy(dense, labels[:, 8:].reshape(-1))
    dense_only = prunelab.evaluate(lm, (text_data.inputs, labels))
    assert dense_only["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_kl_and_agreement_match_a_direct_computation(lm, text_data):
    masks = prunelab.prune(lm, "layer-magnitude", sparsity=0.6)
    result = prunelab.evaluate(lm, text_data.inputs, masks=masks)  # unlabelled: fidelity only
    from prunelab.core.apply import masked_weights
    from prunelab.runtime.functional import functional_forward

    with torch.no_grad():
        pruned = functional_forward(lm, masked_weights(lm, masks), text_data.inputs)
        p, q = lm(text_data.inputs)["logits"], pruned["logits"]
    kl = F.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none")
    assert result["kl"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-4)
    assert result["agreement"] == pytest.approx(
        float((p.argmax(-1) == q.argmax(-1)).float().mean())
    )
    assert "perplexity" not in result and "accuracy" not in result


def test_dense_cache_is_bounded_and_numbers_do_not_depend_on_it(lm, text_data, monkeypatch):
    masks = prunelab.prune(lm, "layer-magnitude", sparsity=0.5)
    evaluation.clear_cache()
    cached = prunelab.evaluate(lm, text_data, masks=masks)
    assert len(evaluation._cache) == 1
    assert prunelab.evaluate(lm, text_data, masks=masks) == cached  # read from the cache
    evaluation.clear_cache()
    monkeypatch.setattr(evaluation, "CACHE_ENTRY_BYTES", 1024)  # outputs over it: not stored
    streamed = prunelab.evaluate(lm, text_data, masks=masks)
    assert len(evaluation._cache) == 0
    assert streamed == cached


def test_classifier_results_unchanged():
    net = nn.Sequential(nn.Linear(4, 3)).eval()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    result = prunelab.evaluate(net, (x, y))
    assert sorted(result) == ["accuracy", "agreement", "kl", "loss", "samples"]
    assert default_metrics((x, y))[0] == "accuracy"
    totals = MetricTotals()
    with torch.no_grad():
        accumulate(totals, net(x), y, None, ("accuracy", "perplexity"))
    assert "perplexity" not in summarize(totals, ("accuracy", "perplexity"), dense=True)


def test_logits_shapes_are_checked():
    assert logits_of(torch.zeros(2, 3, 5)).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"\(batch, positions, vocab\)"):
        logits_of(torch.zeros(2, 3, 4, 5))
    net = TinyLM(vocab=8)
    with pytest.raises(prunelab.errors.DataError, match="next-token ids of shape"):
        prunelab.evaluate(
            net, (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
        )
    with pytest.raises(prunelab.errors.DataError, match="token ids from 0 to 7"):
        prunelab.evaluate(net, (torch.zeros(2, 4, dtype=torch.long), torch.full((2, 4), 9)))


def test_text_file_spec(tmp_path, text_data):
    page = tmp_path / "page.txt"
    page.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    data = load(f"text:{page}?tokenizer=sample:pydoc-gpt&context=8&limit=5")
    assert data.inputs.shape == (5, 8)
    same = load(f"text:{page}?context=8", tokenizer=load_tokenizer("sample:pydoc-gpt"))
    assert torch.equal(same.inputs[:5], data.inputs)
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(ValueError, match="looks binary"):
        load(f"text:{binary}?tokenizer=sample:pydoc-gpt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        load(f"text:{empty}?tokenizer=sample:pydoc-gpt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 10)
    with pytest.raises(ValueError, match="not UTF-8"):
        load(f"text:{latin}?tokenizer=sample:pydoc-gpt")
    with pytest.raises(ValueError, match="names no tokenizer"):
        load(f"text:{page}")
    with pytest.raises(ValueError, match="context=0"):
        load(f"text:{page}?tokenizer=sample:pydoc-gpt&context=0")


def _save_arrow_dataset(folder, texts):
    """What datasets' save_to_disk writes, written with pyarrow alone (no datasets here)."""
    pa = pytest.importorskip("pyarrow")
    folder.mkdir(parents=True)
    table = pa.table({"text": texts, "id": list(range(len(texts)))})
    arrow = str(folder / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    (folder / "dataset_info.json").write_text("{}")


def test_hf_dataset_directory(tmp_path):
    texts = [f"Document {i}: pruning removes weights that matter least." for i in range(30)]
    _save_arrow_dataset(tmp_path / "ds", texts)
    data = load(f"hfdata:{tmp_path / 'ds'}?tokenizer=sample:pydoc-gpt&context=8")
    assert data.inputs.shape[1] == 8 and len(data) > 10
    # a DatasetDict: the split's own folder
    (tmp_path / "dd").mkdir()
    _save_arrow_dataset(tmp_path / "dd" / "validation", texts[:10])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["validation"]}))
    small = load(f"hfdata:{tmp_path / 'dd'}?tokenizer=sample:pydoc-gpt&context=8")
    assert len(small) < len(data)
    with pytest.raises(ValueError, match="no column 'body'"):
        load(f"hfdata:{tmp_path / 'ds'}?tokenizer=sample:pydoc-gpt&column=body")
    with pytest.raises(ValueError, match="not a saved Hugging Face dataset"):
        load(f"hfdata:{tmp_path}?tokenizer=sample:pydoc-gpt")


def test_sensitivity_on_token_data_uses_perplexity(lm, text_data):
    table = sensitivity(lm, text_data, sparsities=[0.5, 0.9])
    assert table.attrs["metric"] == "perplexity"
    # drop of perplexity is its rise over the dense baseline
    rise = table["perplexity"] - table.attrs["baseline"]
    assert table["drop"].to_numpy() == pytest.approx(rise.to_numpy())
    config = SensitivityConfig(metric="accuracy")
    assert sensitivity(lm, text_data, sparsities=[0.5], config=config).attrs["metric"] == "accuracy"


def test_perplexity_is_written_as_a_number():
    assert metric_value("perplexity", 12.3456) == "12.35"
    assert metric_change("perplexity", 1.5) == "+1.50"
    assert metric_value("accuracy", 0.5) == "50.00%"


def test_calibration_on_token_data(lm, text_data):
    from prunelab.core.calibration import Calibration

    for name in ("layer-activation-magnitude", "layer-magnitude-gradient"):
        masks = prunelab.prune(lm, name, sparsity=0.5, calibration=Calibration(lm, text_data))
        assert masks.sparsity() == pytest.approx(0.5, abs=0.01)


def test_perplexity_on_a_classifier_is_refused_clearly():
    net = nn.Sequential(nn.Linear(4, 3)).eval()
    data = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    with pytest.raises(ValueError, match="language model's"):
        sensitivity(net, data, sparsities=[0.5], config=SensitivityConfig(metric="perplexity"))
