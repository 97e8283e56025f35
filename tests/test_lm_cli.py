"""The CLI on token data: a bundle's tokenizer is used, sequences are counted, perplexity shown."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from prunelab.cli.commands import _prune_table
from prunelab.cli.inputs import evaluation_data
from prunelab.io.text import load_tokenizer


def test_evaluation_data_uses_the_bundles_tokenizer():
    tokenizer = load_tokenizer("sample:pydoc-gpt")
    bundle = SimpleNamespace(default_data=None, tokenizer=tokenizer)
    args = argparse.Namespace(data="sample:pydoc-text?context=8", limit=3)
    data, calibration, described, spec = evaluation_data(bundle, args)
    assert data.tokenizer is tokenizer and len(data) == 3
    assert "3 sequences" in described and spec == args.data
    assert calibration().inputs.shape == (3, 8)  # the train split, same tokenizer


def test_prune_table_writes_perplexity_as_a_number():
    dense = {"perplexity": 12.3456, "agreement": 1.0}
    pruned = {"perplexity": 14.0, "agreement": 0.9}
    table = _prune_table(dense, pruned)
    assert "12.35" in table and "+1.65" in table and "perplexity" in table
