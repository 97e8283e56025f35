"""Asking for Ray the wrong way: one clear line each, without starting a cluster."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from prunelab.cli.commands import main
from prunelab.sweeps import RunOptions, sweep
from prunelab.sweeps.executors import ClusterError, InProcess, RayExecutor, get_executor


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when not installed
    net = nn.Linear(4, 2)
    data = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(ClusterError, match=r'^Ray is not installed: pip install "prunelab\[ray\]"'):
        sweep(net, data, strategies=["random"], sparsities=[0.5], run=RunOptions(executor="ray"))


def test_executor_choices_are_checked_when_the_options_are_made():
    assert isinstance(get_executor(None), InProcess)
    assert get_executor("ray", address="h:6379") == RayExecutor(address="h:6379")
    with pytest.raises(ValueError, match="unknown executor 'dask'; accepted: in-process, ray"):
        RunOptions(executor="dask")
    with pytest.raises(ValueError, match='a Ray address needs executor="ray"'):
        RunOptions(address="h:6379")
    with pytest.raises(TypeError, match="executor must be 'in-process' or 'ray' or an object"):
        RunOptions(executor=3)


@pytest.mark.parametrize(
    ("address", "message"),
    [("nohostport", "bad Ray address 'nohostport'"), ("127.0.0.1:1", "no Ray cluster answers")],
)
def test_cli_refuses_a_bad_address_in_one_line(capsys, monkeypatch, address, message):
    # the check runs before Ray connects: the run stops at the first row's hand-out
    not_connected = types.SimpleNamespace(is_initialized=lambda: False)  # no import of Ray
    monkeypatch.setattr("prunelab.sweeps.executors.import_ray", lambda: not_connected)
    argv = ["sweep", "sample:digits-mlp", "--strategies", "random", "--sparsities", "0.5"]
    assert main([*argv, "--limit", "20", "--ray", address]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"prunelab sweep: error: {message}") and "\n" not in err


def test_ray_address_from_rays_own_variable_is_checked_too(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "nohostport")
    not_connected = types.SimpleNamespace(is_initialized=lambda: False)
    monkeypatch.setattr("prunelab.sweeps.executors.import_ray", lambda: not_connected)
    net = nn.Linear(4, 2)
    data = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(ClusterError, match="bad Ray address 'nohostport'"):
        sweep(net, data, strategies=["random"], sparsities=[0.5], run=RunOptions(executor="ray"))


def test_the_app_reads_a_ray_address_from_the_environment(monkeypatch):
    from prunelab.ui import engine

    monkeypatch.delenv(engine.RAY_ADDRESS_ENV, raising=False)
    assert engine.sweep_executor() is None
    monkeypatch.setenv(engine.RAY_ADDRESS_ENV, "10.0.0.5:6379")
    cluster = engine.sweep_executor()
    assert cluster.address == "10.0.0.5:6379"
    assert engine.sweep_executor() is cluster  # its actors serve the next run too
    monkeypatch.setenv(engine.RAY_ADDRESS_ENV, "local")
    assert engine.sweep_executor().address is None
