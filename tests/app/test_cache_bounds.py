"""Many users on one server: bounded caches, memory shown per model, choices kept per session."""

from __future__ import annotations

import ast
import gc
import io
import threading
import weakref

import pytest
import torch

import prunelab
from prunelab.io import zoo
from prunelab.io.architectures import ARCHITECTURES
from prunelab.runtime import memory
from prunelab.ui import cache, engine, sidebar
from prunelab.ui.state import Keys
from tests.app.conftest import ROOT, assert_clean, metric, page

# each sample model under two specs ("sample:digits-cnn" and "digits-cnn"): eight cache keys,
# eight model objects, more than the cache keeps
SPECS = [f"sample:{name}" for name in ARCHITECTURES] + list(ARCHITECTURES)


@pytest.fixture
def fresh_caches():
    caches = (cache.load_model, cache.load_upload, cache.load_data, cache.pruner)
    for cached in caches:
        cached.clear()
    yield
    for cached in caches:
        cached.clear()


def _alive(refs: list[weakref.ref]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in refs)


def _choice(spec: str, loaded: engine.Loaded) -> engine.Choice:
    data_spec = loaded.bundle.default_data
    return engine.Choice(spec, loaded, data_spec, cache.load_data(data_spec))


def _cached_functions(path) -> dict[str, ast.expr]:
    """``{function name: its st.cache_* decorator}`` of one file."""
    tree = ast.parse(path.read_text())
    return {
        node.name: d
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for d in node.decorator_list
        if "cache_" in ast.unparse(d)
    }


def _app_files() -> list:
    pages = sorted((ROOT / "pages").glob("*.py"))
    return [ROOT / "app.py", *pages, *sorted((ROOT / "prunelab/ui").rglob("*.py"))]


def test_every_cache_of_the_app_is_in_one_module_and_bounded():
    elsewhere = {
        str(path.relative_to(ROOT)): sorted(_cached_functions(path))
        for path in _app_files()
        if path.name != "cache.py" and _cached_functions(path)
    }
    assert elsewhere == {}
    cached = _cached_functions(ROOT / "prunelab/ui/cache.py")
    assert set(cached) == {
        "load_model",
        "load_upload",
        "load_upload_data",
        "load_data",
        "train_split",
        "pruner",
        "recipe_masks",
        "dense_metrics",
        "dense_next_tokens",
        "flop_table",
        "weight_table",
        "coupled_groups",
        "shrink_plan",
        "storage_sizes",
        "activations_of",
        "threshold_effect",
        "sparsifier_mask",
        "figure",
        "_evaluated",
        "lesson_result",
        "_results",
    }
    for name, decorator in cached.items():
        assert isinstance(decorator, ast.Call), name
        assert "max_entries" in {k.arg for k in decorator.keywords}, name


def test_session_stores_are_bounded():
    store = cache.Bounded(3)
    for i in range(10):
        store.put(i, i)
    assert len(store) == 3 and list(store.values()) == [7, 8, 9]
    assert store.get(7) == 7  # now the most recently used: 8 goes first
    store.put(10, 10)
    assert 8 not in store and list(store.values()) == [9, 7, 10]


def test_more_models_than_the_bound_keep_only_the_bound_in_memory(fresh_caches):
    assert len(SPECS) > cache.MAX_MODELS
    refs = []
    for spec in SPECS:
        loaded = cache.load_model(spec)
        choice = _choice(spec, loaded)
        # everything the app derives from a model, so that none of it keeps an old one alive
        calibration = cache.calibration(spec, choice.data_spec, _choice=choice)
        calibration.gradients()
        pruned = cache.pruner(
            spec, choice.data_spec, "global-magnitude-gradient", (), (), 0, _choice=choice
        )
        cache.remember(("test", spec), pruned.masks(sparsity=0.5))
        refs.append(weakref.ref(loaded.bundle.model))
        del loaded, choice, calibration, pruned
    assert _alive(refs) == cache.MAX_MODELS
    assert all(ref() is not None for ref in refs[-cache.MAX_MODELS :])  # the most recent ones


def test_uploads_have_their_own_bound(fresh_caches):
    buffer = io.BytesIO()
    torch.save(zoo.load("sample:digits-mlp").model.state_dict(), buffer)
    refs = []
    for copy in range(cache.MAX_UPLOADS + 2):
        payload = buffer.getvalue()
        loaded = cache.load_upload(
            f"digest{copy}", "w.pt", "arch=sample:digits-mlp", False, payload
        )
        refs.append(weakref.ref(loaded.bundle.model))
        del loaded
    assert _alive(refs) == cache.MAX_UPLOADS


def test_a_reloaded_model_gets_its_own_calibration(fresh_caches):
    first = _choice("sample:digits-cnn", cache.load_model("sample:digits-cnn"))
    old = cache.calibration(first.model_key, first.data_spec, _choice=first)
    assert old.model is first.model
    cache.load_model.clear()  # evicted, then picked again by someone
    second = _choice("sample:digits-cnn", cache.load_model("sample:digits-cnn"))
    assert second.model is not first.model
    new = cache.calibration(second.model_key, second.data_spec, _choice=second)
    assert new.model is second.model  # the Pruner would refuse a calibration of another model
    assert cache.calibration(second.model_key, second.data_spec, _choice=second) is new


def test_the_result_store_is_bounded_and_safe_under_concurrent_sessions():
    errors = []

    def session(index: int) -> None:
        try:
            for step in range(200):
                cache.remember(("load", index, step), step)
                cache.remembered(("load", (index + 1) % 8, step))
        except Exception as exc:  # pragma: no cover - the failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache._results()) == cache.MAX_RESULTS
    assert cache.remembered(("load", 0, 0)) is None  # long gone


def test_the_model_page_says_what_the_model_takes_and_how_many_are_kept():
    at = page("pages/1_Model.py").run()
    assert_clean(at)
    model = zoo.load("sample:digits-cnn").model
    size = memory.format_bytes(memory.model_bytes(model))
    assert size == "38.8 KiB"
    assert metric(at, "Memory") == size
    note = next(c.value for c in at.caption if c.value.startswith("This model takes"))
    assert f"This model takes {size} in memory (parameters + buffers)" in note
    assert f"at most {cache.MAX_MODELS_KEPT} models" in note
    assert any(f"({size} in memory)" in c.value for c in at.sidebar.caption)


def test_a_model_over_the_memory_limit_is_an_error_on_the_page(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "10MB")
    at = page("pages/1_Model.py").run()
    assert_clean(at)  # the samples fit
    at.sidebar.radio(key=Keys.model_source).set_value("torchvision architecture").run()
    at.sidebar.selectbox(key=Keys.torchvision_arch).select("resnet18").run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Could not load that: torchvision:resnet18 needs about 223.1 MiB (11.7M parameters and "
        "buffers x 4 bytes x 5 working copies) but the limit is 9.5 MiB "
        "(PRUNELAB_MEMORY_LIMIT=10MB). Use a smaller model or raise the limit."
    ]
    at.sidebar.radio(key=Keys.model_source).set_value("Sample model").run()
    assert_clean(at)


def _picked_on_model_page_then_prune():
    at = page("app.py").run()
    at.switch_page("pages/1_Model.py").run()
    at.sidebar.selectbox(key=Keys.sample).select("sample:digits-mlp").run()
    assert at.title[0].value == "Model: digits-mlp"
    # what a real server hands to the next page's widget (AppTest would carry it regardless)
    assert at.session_state[sidebar._KEPT + Keys.sample] == "sample:digits-mlp"
    at.switch_page("pages/2_Prune.py").run()
    assert_clean(at)
    return at.sidebar.selectbox(key=Keys.sample).value


def test_the_model_picked_on_one_page_is_the_model_on_the_next():
    # AppTest keeps widget values across pages anyway; a real server does not, which
    # benchmarks/load_app.py checks (each session picks its model on Prune, then goes on)
    assert _picked_on_model_page_then_prune() == "sample:digits-mlp"


def test_masked_metrics_are_kept_per_masks(monkeypatch):
    spec = "sample:digits-cnn"
    choice = _choice(spec, cache.load_model(spec))
    calls = []
    real = cache.evaluate

    def counted(*args, **kwargs):
        calls.append(kwargs.get("masks"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "evaluate", counted)
    cache._evaluated.clear()
    pruner = prunelab.Pruner(choice.model, prunelab.get_strategy("global-magnitude"))
    half, most = pruner.masks(sparsity=0.5), pruner.masks(sparsity=0.9)
    first = cache.evaluate_masks(choice, half)
    first["accuracy"] = -1.0  # the caller's copy: the kept numbers do not change
    again = cache.evaluate_masks(choice, pruner.masks(sparsity=0.5))  # equal masks, new object
    other = cache.evaluate_masks(choice, most)
    assert len(calls) == 2  # the equal masks were not evaluated again
    assert again == real(choice.model, choice.data, masks=half)
    assert other == real(choice.model, choice.data, masks=most) and other != again
