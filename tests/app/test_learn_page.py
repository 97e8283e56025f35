"""The Learn page: lessons found by file name, a glossary, and each lesson's own controls
beside its own figure, reacting at once without recomputing its curves."""

from __future__ import annotations

import ast
import json
import re

import pytest

from prunelab.teach import criteria, masks, patterns, scope
from prunelab.ui import cache
from prunelab.ui.sidebar import NO_DATA
from prunelab.ui.state import Keys
from prunelab.ui.views import learn
from tests.app.conftest import ROOT, assert_clean, metric, page

PAGE = "pages/7_Learn.py"
GLOSSARY = ("Sparsity", "Mask", "FLOPs", "N:M", "Channel", "Fine-tuning", "Calibration")


def _charts(at) -> dict[str, dict]:
    """Each chart's figure by its key (an element id ends with the user's key)."""
    return {c.proto.id.split("-", 2)[2]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def _marks(chart: dict) -> list[float]:
    return [shape["x0"] for shape in chart["layout"].get("shapes", []) if shape["type"] == "line"]


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(scope="module")
def learn_page():
    at = page(PAGE).run()
    assert_clean(at)
    return at


def test_lessons_are_found_by_file_name_in_number_order():
    numbers = [int(re.fullmatch(r".*lesson(\d+)", m.__name__).group(1)) for m in learn.LESSONS]
    assert numbers == sorted(numbers) and numbers[:4] == [1, 2, 3, 4]
    for lesson in learn.LESSONS:
        assert isinstance(lesson.TITLE, str) and callable(lesson.render)


def test_each_lessons_widget_keys_carry_its_number():
    # keys outside ui/state.Keys, one prefix per lesson: lessons never share a widget
    for number in (1, 2, 3, 4):
        tree = ast.parse((ROOT / f"prunelab/ui/views/learn/lesson{number}.py").read_text())
        keys = [
            kw.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            for kw in node.keywords
            if kw.arg == "key"
        ]
        keys += [  # the lessons' sparsity sliders take their key first
            node.args[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "sparsity_slider"
        ]
        texts = [k.value if isinstance(k, ast.Constant) else k.values[0].value for k in keys]
        assert texts and all(t.startswith(f"learn{number}_") for t in texts), texts


def test_page_has_its_lessons_and_a_glossary(learn_page):
    titles = [s.value for s in learn_page.subheader]
    assert titles[:4] == [lesson.TITLE for lesson in learn.LESSONS[:4]]
    (glossary,) = [e for e in learn_page.expander if e.label.startswith("Glossary")]
    words = " ".join(m.value for m in glossary.markdown)
    assert all(f"**{word}**" in words for word in GLOSSARY)
    charts = _charts(learn_page)
    assert {
        "learn1_mask",
        "learn1_gains",
        "learn2_curves",
        "learn3_curves",
        "learn4_curves",
    } <= set(charts)
    # every curve marks the slider's sparsity (50% at first)
    for key in ("learn1_gains", "learn2_curves", "learn3_curves", "learn4_curves"):
        assert _marks(charts[key]) == [50.0], key


@pytest.mark.parametrize(
    ("number", "charts"),
    [
        (1, {"learn1_mask", "learn1_gains"}),
        (2, {"learn2_mask0", "learn2_mask1", "learn2_mask2", "learn2_curves"}),
        (3, {"learn3_layerwise", "learn3_global", "learn3_curves"}),
        (4, {"learn4_curves"}),
    ],
)
def test_each_lesson_reacts_to_its_own_slider_and_only_it(learn_page, number, charts):
    at = learn_page
    before_charts, before_metrics = _charts(at), _metrics(at)
    at.slider(key=f"learn{number}_sparsity").set_value(0.8).run()
    assert_clean(at)
    after = _charts(at)
    assert {k for k in after if after[k] != before_charts[k]} == charts
    for key in charts & {f"learn{number}_gains", f"learn{number}_curves"}:
        assert _marks(after[key]) == [80.0]  # the mark moved: the curves were only redrawn
    changed = {k for k, v in _metrics(at).items() if before_metrics.get(k) != v}
    if number != 2:  # lesson 2's numbers are captions under its masks
        assert changed, "the numbers beside the slider did not change"
    at.slider(key=f"learn{number}_sparsity").set_value(0.5).run()


def test_lesson_one_shows_what_pruning_buys_and_costs(learn_page):
    at = learn_page
    at.slider(key="learn1_sparsity").set_value(0.9).run()
    shown = _metrics(at)
    assert shown["Stored size"] == "14% of dense" and shown["Effective FLOPs"] == "20% of dense"
    assert float(shown["Accuracy"].rstrip("%")) < 60  # the cost, without retraining
    at.slider(key="learn1_sparsity").set_value(0.5).run()


def test_lesson_two_says_when_a_pattern_cannot_reach_the_sparsity(learn_page):
    at = learn_page
    at.slider(key="learn2_sparsity").set_value(0.3).run()
    captions = [c.value for c in at.caption]
    assert any(c.startswith("30.1% zeroed") for c in captions)  # unstructured: 154 of 512
    assert any("whole rows only" in c.lower() for c in captions)  # channel: in steps of one row
    assert any("3:4 always zeroes 25%" in c for c in captions)  # N:M: its own sparsity
    titles = [c["layout"]["title"]["text"] for k, c in _charts(at).items() if "mask" in k]
    assert any(t.startswith("3:4") for t in titles)
    at.radio(key="learn2_group").set_value(8).run()
    assert_clean(at)
    titles = [c["layout"]["title"]["text"] for k, c in _charts(at).items() if "mask" in k]
    assert any(t.startswith("6:8") for t in titles)
    names = {t["name"] for t in _charts(at)["learn2_curves"]["data"]}
    assert names == {"unstructured", "channel", "N:8"}
    at.radio(key="learn2_group").set_value(4).run()
    at.slider(key="learn2_sparsity").set_value(0.5).run()


def test_lesson_four_draws_the_criteria_the_student_picks(learn_page):
    at = learn_page
    curves = {t["name"] for t in _charts(at)["learn4_curves"]["data"]}
    assert curves == {"magnitude", "random"}
    at.checkbox(key="learn4_activation").check().run()
    assert_clean(at)
    curves = {t["name"] for t in _charts(at)["learn4_curves"]["data"]}
    assert curves == {"magnitude", "random", "activation"}
    assert metric(at, "activation: accuracy at 50%").endswith("%")
    for name in criteria.CRITERIA:
        at.checkbox(key=f"learn4_{name}").uncheck()
    at.run()
    assert any("Pick at least one criterion" in i.value for i in at.info)
    for name in ("magnitude", "random"):
        at.checkbox(key=f"learn4_{name}").check()
    at.run()


def test_a_control_move_recomputes_no_curve(monkeypatch):
    calls = []

    def counting(module, name):
        real = getattr(module, name)

        def count(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, count)

    for module, name in (
        (masks, "gains"),
        (patterns, "pattern_curves"),
        (scope, "scope_curves"),
        (criteria, "criterion_curves"),
    ):
        counting(module, name)
    cache.lesson_result.clear()
    at = page(PAGE).run()
    assert_clean(at)
    assert sorted(calls) == sorted(
        ["gains", "pattern_curves", "scope_curves", "criterion_curves", "criterion_curves"]
    )
    calls.clear()
    for number in (1, 2, 3, 4):
        at.slider(key=f"learn{number}_sparsity").set_value(0.7).run()
    at.checkbox(key="learn4_random").uncheck().run()
    at.checkbox(key="learn4_random").check().run()
    assert_clean(at)
    assert calls == []


def test_without_data_the_lessons_say_what_they_need():
    at = page(PAGE).run()
    at.sidebar.selectbox(key=Keys.data_choice).set_value(NO_DATA).run()
    assert_clean(at)
    shown = " ".join(i.value for i in at.info)
    assert "see what pruning costs" in shown and "compare the criteria" in shown
    assert "learn1_mask" in _charts(at) and "learn3_global" in _charts(at)  # no data needed


def test_a_large_model_computes_its_curves_on_a_button(monkeypatch):
    monkeypatch.setattr(learn, "AUTO_EVALUATE_PARAMS", 0)
    cache.lesson_result.clear()
    at = page(PAGE).run()
    assert_clean(at)
    charts = _charts(at)
    assert "learn1_mask" in charts and "learn1_gains" not in charts
    at.button(key="learn1_compute").click().run()
    assert_clean(at)
    assert "learn1_gains" in _charts(at)
    at.slider(key="learn1_sparsity").set_value(0.7).run()
    assert "learn1_gains" in _charts(at)  # asked once, kept for the session
