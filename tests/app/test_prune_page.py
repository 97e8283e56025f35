"""The Prune page draws a strategy's controls from the strategy's options, not from its name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

import prunelab
from prunelab.core import strategies
from prunelab.core.options import Option
from prunelab.io import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, page


@pytest.fixture
def registry_sandbox(monkeypatch):
    # the page runs in this process: it sees what the test registers, until the copy goes
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))


def _key(strategy: str, option: str) -> str:
    return f"{Keys.strategy}_{strategy}_{option}"


def _keys(widgets) -> set[str]:
    return {w.key for w in widgets}


def _same(masks, expected) -> bool:
    return set(masks) == set(expected) and all(torch.equal(masks[f], expected[f]) for f in masks)


def test_a_registered_strategy_gets_a_control_for_each_of_its_options(registry_sandbox):
    @prunelab.register_strategy("test-power")
    @dataclass(frozen=True)
    class Power(prunelab.ScoredStrategy):
        """Prune the smallest |w| ** k + shift (a strategy of this test)."""

        k: float = field(
            default=1.0, metadata={"option": Option("Power k", choices=(0.5, 1.0, 3.0))}
        )
        shift: float = 0.0  # no description: a number box
        negate: bool = False  # no description: a checkbox

        def scores(self, layer):
            scores = layer.weight.abs() ** self.k + self.shift
            return -scores if self.negate else scores

    at = page("pages/2_Prune.py").run()
    assert_clean(at)
    assert _key("test-power", "k") not in _keys(at.sidebar.selectbox)
    at.sidebar.selectbox(key=Keys.strategy).select("test-power").run()
    assert_clean(at)
    power = at.sidebar.selectbox(key=_key("test-power", "k"))
    assert power.label == "Power k" and power.options == ["0.5", "1.0", "3.0"]
    assert at.sidebar.number_input(key=_key("test-power", "shift")).value == 0.0
    assert at.sidebar.checkbox(key=_key("test-power", "negate")).value is False
    # a scored strategy chooses its scope and granularity, a user's too
    assert at.sidebar.radio(key=_key("test-power", "scope")).options == ["layer", "global"]
    assert at.sidebar.selectbox(key=_key("test-power", "granularity")).value == "unstructured"

    at.sidebar.radio(key=_key("test-power", "scope")).set_value("global").run()
    at.sidebar.checkbox(key=_key("test-power", "negate")).check().run()
    assert_clean(at)
    model = zoo.load("sample:digits-cnn").model
    expected = prunelab.Pruner(
        model, prunelab.get_strategy("test-power", scope="global", negate=True)
    ).masks(sparsity=0.5)
    assert _same(at.session_state[Keys.masks], expected)
    assert any("test-power (scope=global, negate=True)" in c.value for c in at.caption)


def test_a_seeded_strategy_gets_a_seed_box_whatever_its_name(registry_sandbox):
    @prunelab.register_strategy("test-coin")
    @dataclass(frozen=True)
    class Coin(prunelab.ScoredStrategy):
        """Prune by a coin per weight (a strategy of this test)."""

        seeded: ClassVar[bool] = True
        by_threshold: ClassVar[bool] = False

        def scores(self, layer):
            generator = torch.Generator().manual_seed(layer.seed)
            return torch.rand(layer.target.shape, generator=generator)

    at = page("pages/2_Prune.py").run()
    assert Keys.seed not in _keys(at.sidebar.number_input)
    at.sidebar.selectbox(key=Keys.strategy).select("test-coin").run()
    assert_clean(at)
    assert not [r for r in at.radio if r.key == Keys.drive]  # by sparsity only
    at.sidebar.number_input(key=Keys.seed).set_value(7).run()
    assert_clean(at)
    assert at.session_state[Keys.recipe] is None  # recipes carry no seed
    assert any("cannot be saved as a recipe" in c.value for c in at.caption)


def test_a_preset_shows_its_fixed_scope_and_offers_only_what_is_left():
    at = page("pages/2_Prune.py").run()
    assert at.sidebar.selectbox(key=Keys.strategy).value == "global-magnitude"
    assert _key("global-magnitude", "scope") not in _keys(at.sidebar.radio)
    assert any("scope **global**" in c.value for c in at.sidebar.caption)
    at.sidebar.selectbox(key=Keys.strategy).select("weight-norm-channel").run()
    assert_clean(at)
    assert at.sidebar.radio(key=_key("weight-norm-channel", "p")).options == ["L1", "L2"]
    at.sidebar.radio(key=_key("weight-norm-channel", "scope")).set_value("global").run()
    assert_clean(at)
    model = zoo.load("sample:digits-cnn").model
    expected = prunelab.Pruner(
        model, prunelab.get_strategy("weight-norm-channel", scope="global")
    ).masks(sparsity=0.5)
    assert _same(at.session_state[Keys.masks], expected)


def test_the_n_m_pattern_is_the_strategy_s_granularity_option():
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.strategy).select("n:m").run()
    pattern = at.sidebar.selectbox(key=_key("n:m", "granularity"))
    assert pattern.label == "N:M pattern" and pattern.options == ["2:4", "1:4", "4:8"]
    pattern.select("1:4").run()
    assert_clean(at)
    assert at.session_state[Keys.masks].sparsity() == pytest.approx(0.75)
