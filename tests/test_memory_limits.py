"""Models too large for memory are refused before they are built, with the estimate and the limit.

No test here allocates a large model: the estimates come from the meta device, and every
refusal happens before any weights exist.
"""

from __future__ import annotations

import resource

import pytest
import torch
from torch import nn

from prunelab.cli.commands import main
from prunelab.io import zoo
from prunelab.io.architectures import ARCHITECTURES
from prunelab.runtime import memory

VIT_H_14 = 632_045_800  # parameters of torchvision's vit_h_14 (it has no buffers)


@pytest.fixture(autouse=True)
def _no_limit_from_outside(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture
def builds(monkeypatch):
    """The device torchvision's builder runs on, each time it is called."""
    torchvision = pytest.importorskip("torchvision")
    devices: list[str] = []
    real = torchvision.models.get_model

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", spy)
    return devices


def test_vit_h_14_is_estimated_on_the_meta_device_without_allocating():
    pytest.importorskip("torchvision")  # imported before measuring
    before = _peak_rss()
    need = zoo.estimate_memory("torchvision:vit_h_14")
    assert need.elements == VIT_H_14
    assert need.model_bytes == VIT_H_14 * 4
    assert need.working_bytes == VIT_H_14 * 4 * memory.WORKING_COPIES
    assert need.basis == "632M parameters and buffers x 4 bytes x 5 working copies"
    assert _peak_rss() - before < 200 * 2**20  # its weights alone would be 2.4 GiB


def test_vit_h_14_is_refused_up_front_with_the_estimate_and_the_limit(builds):
    with pytest.raises(ValueError) as refused:
        zoo.load("torchvision:vit_h_14", memory_limit="4GiB")
    assert str(refused.value) == (
        "torchvision:vit_h_14 needs about 11.8 GiB (632M parameters and buffers x 4 bytes x 5 "
        "working copies) but the limit is 4.0 GiB (memory_limit='4GiB'). Use a smaller model "
        "or raise the limit."
    )
    assert builds == ["meta"]  # counted, never built


def test_resnet18_is_refused_under_a_10_mb_limit_from_the_environment(monkeypatch, builds):
    monkeypatch.setenv(memory.LIMIT_ENV, "10MB")
    with pytest.raises(ValueError, match=r"torchvision:resnet18 needs about 223\.1 MiB") as refused:
        zoo.load("torchvision:resnet18")
    assert "but the limit is 9.5 MiB (PRUNELAB_MEMORY_LIMIT=10MB)" in str(refused.value)
    assert builds == ["meta"]


def test_the_argument_wins_over_the_environment_and_off_disables_the_check(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "1kB")
    with pytest.raises(ValueError, match="the limit is 1000 bytes"):
        zoo.load("sample:digits-mlp")
    assert zoo.load("sample:digits-mlp", memory_limit="1GiB").name == "digits-mlp"
    assert zoo.load("sample:digits-mlp", memory_limit="off").name == "digits-mlp"
    monkeypatch.setenv(memory.LIMIT_ENV, "off")
    assert zoo.load("sample:digits-mlp").name == "digits-mlp"


def test_without_an_override_the_available_memory_is_the_limit(monkeypatch):
    meminfo = (2**19, "MemAvailable in /proc/meminfo")
    monkeypatch.setattr(memory, "available_memory", lambda: meminfo)
    with pytest.raises(ValueError) as refused:
        zoo.load("sample:digits-mlp")
    assert str(refused.value) == (
        "sample:digits-mlp needs about 988.5 KiB (50.6k parameters and buffers x 4 bytes x 5 "
        "working copies) but only 512.0 KiB is available (MemAvailable in /proc/meminfo). Use a "
        "smaller model, free some memory, or set PRUNELAB_MEMORY_LIMIT (e.g. "
        "PRUNELAB_MEMORY_LIMIT=64GiB) to try anyway."
    )


def test_available_memory_reads_meminfo_and_prefers_a_lower_container_limit(monkeypatch):
    available, source = memory.available_memory()
    assert (available is None) == (source == "unknown") and (available is None or available > 0)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 8 * 2**30)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    assert memory.available_memory() == (8 * 2**30, "MemAvailable in /proc/meminfo")
    monkeypatch.setattr(memory, "_cgroup_available", lambda: 2**30)
    assert memory.available_memory()[0] == 2**30
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    monkeypatch.setattr(memory, "_sysconf_available", lambda: None)
    assert memory.available_memory() == (None, "unknown")
    assert zoo.load("sample:digits-cnn").name == "digits-cnn"  # unknown: no check


def test_a_model_whose_builder_cannot_run_on_meta_is_estimated_from_torchvision_metadata():
    # regnets compute their widths with tensors while they are built
    need = zoo.estimate_memory("torchvision:regnet_y_128gf")
    assert need.elements == 644_812_894
    assert need.working_bytes == need.elements * 4 * memory.WORKING_COPIES


def test_samples_are_estimated_exactly():
    for name, arch in ARCHITECTURES.items():
        model = arch.factory()
        need = zoo.estimate_memory(f"sample:{name}")
        assert need.model_bytes == memory.model_bytes(model)
        assert need.elements == sum(t.numel() for t in [*model.parameters(), *model.buffers()])


def test_wider_and_narrower_dtypes_count_at_least_four_bytes_per_copy():
    model = nn.Linear(10, 10).to(torch.float16)
    need = memory.estimate(model, what="half")
    assert need.model_bytes == 220 and need.working_bytes == 110 * 4 * memory.WORKING_COPIES
    double = memory.estimate(nn.Linear(10, 10).double(), what="double")
    assert double.working_bytes == 110 * 8 * memory.WORKING_COPIES


def test_tied_weights_are_counted_once():
    a = nn.Linear(8, 8, bias=False)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert memory.model_bytes(model) == 8 * 8 * 4


def _state_dict_file(tmp_path, name="digits-mlp"):
    path = tmp_path / f"{name}.pt"
    torch.save(zoo.load(f"sample:{name}").model.state_dict(), path)
    return path


def test_a_file_is_judged_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    path = _state_dict_file(tmp_path)
    size = path.stat().st_size
    need = zoo.estimate_memory(f"file:{path}")
    assert need.elements is None and need.working_bytes == size * memory.WORKING_COPIES
    assert need.basis == f"a {memory.format_bytes(size)} file x 5 working copies"

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(torch, "load", no_read)
    with pytest.raises(ValueError, match=r"needs about .* file x 5 working copies\) but the limit"):
        zoo.load(f"file:{path}?arch=sample:digits-mlp", memory_limit=size)


def test_a_small_state_dict_for_a_large_architecture_is_refused_before_building_it(
    tmp_path, builds
):
    path = _state_dict_file(tmp_path)  # a few hundred kB, but arch says resnet18
    with pytest.raises(ValueError, match=r"needs about 223\.1 MiB \(11\.7M parameters"):
        zoo.load(f"file:{path}?arch=torchvision:resnet18", memory_limit="50MB")
    assert builds == ["meta"]


def test_unknown_models_and_missing_files_keep_their_own_errors():
    assert zoo.estimate_memory("sample:lenet5") is None
    with pytest.raises(ValueError, match="unknown sample model"):
        zoo.load("sample:lenet5", memory_limit="1kB")
    with pytest.raises(FileNotFoundError):
        zoo.load("file:/nonexistent/model.pt", memory_limit="1kB")


@pytest.mark.parametrize("text", ["ten", "-5MB", "0", "5 parsecs", ""])
def test_a_bad_limit_says_what_a_size_looks_like(text):
    with pytest.raises(ValueError, match=r"memory limit .* (is not a size|must be positive)"):
        memory.parse_bytes(text)


def test_sizes_parse_in_decimal_and_binary_units():
    assert memory.parse_bytes("10MB") == 10_000_000
    assert memory.parse_bytes("10 MiB") == memory.parse_bytes("10m") == 10 * 2**20
    assert memory.parse_bytes("1.5GiB") == 3 * 2**29
    assert memory.parse_bytes(4096) == 4096
    assert memory.parse_bytes("Off") is None


def test_the_cli_prints_the_refusal_on_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv(memory.LIMIT_ENV, "10MB")
    assert main(["layers", "torchvision:resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "torchvision:resnet18 needs about 223.1 MiB" in err
    assert "PRUNELAB_MEMORY_LIMIT=10MB" in err
