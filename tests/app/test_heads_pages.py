"""The Prune page shows a heads x layers picture for a transformer, and Export shrinks its
heads (a small torchvision ViT stands in for vit_b_16: no 86M parameters, no download)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import VisionTransformer

import prunelab
from prunelab.figures.fmt import count
from prunelab.io import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page


@pytest.fixture
def small_vit(monkeypatch):
    real = zoo.torchvision_model

    def fake(spec, arch, **kwargs):
        if arch != "vit_b_16":
            return real(spec, arch, **kwargs)
        torch.manual_seed(0)
        vit = VisionTransformer(
            image_size=224, patch_size=56, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64
        )
        torch.nn.init.normal_(vit.heads.head.weight, std=0.1)
        return vit, None

    monkeypatch.setattr(zoo, "torchvision_model", fake)
    monkeypatch.setattr(zoo, "_estimate", lambda spec: None)


def test_prune_page_marks_the_heads_head_magnitude_prunes(small_vit):
    at = page("pages/2_Prune.py")
    at.session_state[Keys.model_source] = "torchvision architecture"
    at.session_state[Keys.torchvision_arch] = "vit_b_16"
    at.run()
    assert_clean(at)
    assert "Attention heads" in [h.value for h in at.subheader]
    at.sidebar.selectbox(key=Keys.strategy).select("head-magnitude").run()
    assert_clean(at)
    at.slider(key=Keys.sparsity).set_value(0.5).run()
    assert_clean(at)
    (chart,) = [c for c in at.get("plotly_chart") if "Attention heads" in c.proto.spec]
    assert "4 of 8 heads pruned" in chart.proto.spec


def test_no_heads_section_without_attention():
    at = page("pages/2_Prune.py").run()
    assert_clean(at)
    assert "Attention heads" not in [h.value for h in at.subheader]


def test_export_shrinks_the_heads_the_prune_page_masked(small_vit):
    model, _ = zoo.torchvision_model(None, "vit_b_16")
    masks = prunelab.prune(model, "head-magnitude", sparsity=0.5)
    at = page("pages/6_Export.py")
    at.session_state[Keys.model_source] = "torchvision architecture"
    at.session_state[Keys.torchvision_arch] = "vit_b_16"
    at.session_state[Keys.masks] = masks
    at.session_state[Keys.masks_label] = "head-magnitude at 50%"
    at.run()
    assert_clean(at)
    assert at.radio(key=Keys.export_source).value == "masks from the Prune page"
    assert not [w for w in at.warning if "cannot shrink" in w.value]
    shrunk = prunelab.shrink(model, masks, example_input=torch.randn(1, 3, 224, 224))
    assert metric(at, "Shrunk parameters") == count(sum(p.numel() for p in shrunk.parameters()))
