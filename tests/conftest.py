"""Shared fixtures: tiny seeded models covering every kind of prunable layer."""

from __future__ import annotations

import builtins
import os

# Every model here is tiny, so torch's second OpenMP thread buys nothing, and on a busy
# machine (CI, shared cores) its spinning made the suite several times slower (the
# random-architecture test: 86 s with the default threads, 24 s with one). Set before torch
# is imported so that subprocesses (the CLI, notebook kernels, app servers) inherit it too;
# a test that studies threads sets its own count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch import nn

import prunelab


def tiny_gpt2(seed: int = 0, **sizes) -> nn.Module:
    """A seeded GPT-2 language model small enough for a test (2 blocks, width 32, 2 heads,
    50 tokens, context 16; ``sizes`` override any ``GPT2Config`` field). transformers is
    imported here, not at the top: it costs seconds, paid only by the tests that need it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    fields = {"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 2}
    config = GPT2Config(**{**fields, **sizes}, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def make_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 4),
    )


class TinyLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


def make_lstm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyLSTM()


def make_misc(seed: int = 0) -> nn.Module:
    """Conv1d, grouped conv, ConvTranspose2d and Conv3d in one model (shapes only)."""
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {
            "c1": nn.Conv1d(4, 8, 3),
            "grouped": nn.Conv2d(8, 8, 3, groups=4),
            "depthwise": nn.Conv2d(8, 8, 3, groups=8),
            "up": nn.ConvTranspose2d(8, 4, 2),
            "c3": nn.Conv3d(2, 4, 2),
        }
    )


def snapshot(model: nn.Module) -> tuple[dict, list]:
    """Everything a call could change: tensors (with their identity) and hooks."""
    state = {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict(keep_vars=True).items()}
    hooks = [
        (
            name,
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            m.training,
        )
        for name, m in model.named_modules()
    ]
    grads = [p.grad is None for p in model.parameters()]
    return state, hooks + grads


def assert_unchanged(model: nn.Module, before: tuple[dict, list]) -> None:
    state, meta = snapshot(model)
    assert meta == before[1]
    assert state.keys() == before[0].keys()
    for key, (value, ptr) in state.items():
        old, old_ptr = before[0][key]
        assert ptr == old_ptr, f"{key} was replaced"
        assert torch.equal(value, old), f"{key} changed"


def masked_applied_baked(model: nn.Module, masks, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs on ``x`` of masked_forward, of apply's copy and of bake's copy of it."""
    with torch.no_grad():
        masked = prunelab.masked_forward(model, masks, x)
        applied = prunelab.apply(model, masks)
        return masked, applied(x), prunelab.bake(applied)(x)


@pytest.fixture
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture
def cnn() -> nn.Module:
    return make_cnn()


@pytest.fixture
def lstm() -> nn.Module:
    return make_lstm()


@pytest.fixture
def cnn_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, 6, 6, generator=gen), torch.randint(0, 4, (32,), generator=gen)


@pytest.fixture
def mlp_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(40, 12, generator=gen), torch.randint(0, 3, (40,), generator=gen)


@pytest.fixture
def broken_torchvision(monkeypatch):
    """torchvision installed but failing to import (a mismatched torch/torchvision pair)."""
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
