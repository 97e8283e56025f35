"""Issue 22's hostile files through the API and the CLI: no file runs code, none exhausts memory.

The corpus is built by tests/hostile_corpus.py. Each ``.pt2`` that carries code is first shown
to be live (``torch.export.load`` does run it: the marker file appears), then loaded by
prunelab, which must not run it. The memory guards are proven under a real cap: a subprocess
limits its own address space (``RLIMIT_AS``) to a little more than it uses after importing
prunelab, then goes through the corpus with ``prunelab.cli.commands.main``; a guard that let a
256 MiB tensor (deflated to 1 MB) be allocated would end in a MemoryError there, not in the
one-line refusal. The app's side is in tests/app/test_hostile_corpus_app.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import prunelab
from prunelab.cli.commands import main
from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from prunelab.runtime import memory
from prunelab.sweeps import SensitivityConfig, save_table
from tests import hostile_corpus as corpus
from tests.hostile_corpus import ARCH, MARKER
from tests.hostile_corpus import one_line_error as _one_line_error

# (builder, error without arch=, error with arch= or None: loads, running nothing)
PT2_CODE_CASES = {
    "pickled weight": (corpus.pt2_pickled_weight, "stored as a pickle"),
    "opaque constant": (corpus.pt2_opaque_constant, None),
    "symbolic size": (corpus.pt2_symbolic_size, None),
    "guard code": (corpus.pt2_guard_code, None),
    "sample inputs": (corpus.pt2_sample_inputs, None),
    "old archive format": (corpus.pt2_old_format, "not under one folder"),
}


def _write(folder: Path, name: str, payload: bytes) -> Path:
    path = folder / name
    path.write_bytes(payload)
    return path


@pytest.fixture(autouse=True)
def _memory_limit(monkeypatch):
    # the bombs are 256 MiB: refused under this limit whatever the machine has free
    monkeypatch.setenv(memory.LIMIT_ENV, "512MiB")


# -- .pt2: code --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PT2_CODE_CASES))
def test_each_pt2_case_runs_code_under_torch_export_load(name, tmp_path):
    # proves the marker checks below mean something
    path = _write(tmp_path, "evil.pt2", PT2_CODE_CASES[name][0](tmp_path))
    with contextlib.suppress(Exception):  # several cases break the program after their code ran
        torch.export.load(path).module()(torch.zeros(3, 1, 8, 8))
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("name", list(PT2_CODE_CASES))
def test_a_pt2_runs_nothing_without_trust(name, tmp_path, capsys):
    build, with_arch = PT2_CODE_CASES[name]
    path = _write(tmp_path, "evil.pt2", build(tmp_path))
    with pytest.raises(ValueError, match="trust") as info:
        zoo.load(f"file:{path}")
    assert "\n" not in str(info.value)
    line = _one_line_error(capsys, ["layers", f"file:{path}"])
    assert line.startswith("prunelab layers: error:") and "trust" in line
    # with arch=, only the weights are read, by prunelab itself
    spec = f"file:{path}?arch={ARCH}"
    if with_arch is None:
        bundle = zoo.load(spec)
        x = bundle.example_input(batch_size=3)
        with torch.no_grad():
            assert torch.equal(bundle.model(x), zoo.load(ARCH).model(x))
        assert main(["layers", spec]) == 0
    else:
        with pytest.raises(ValueError, match=with_arch):
            zoo.load(spec)
        assert with_arch in _one_line_error(capsys, ["layers", spec])
    assert not (tmp_path / MARKER).exists()


def test_a_trusted_pt2_program_still_runs(tmp_path):
    path = _write(tmp_path, "good.pt2", corpus.program_bytes())
    bundle = zoo.load(f"file:{path}", trust=True)
    x = bundle.example_input(batch_size=3)
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), zoo.load(ARCH).model(x), atol=1e-6)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"as_expr": {"expr_str": "s0", "hint": 4}}, "not a plain non-negative integer"),
        ({"as_int": -1}, "not a plain non-negative integer"),
        ({"as_int": 10**4}, "reaches past its"),
    ],
)
def test_pt2_weights_with_odd_sizes_are_refused(change, expect, tmp_path):
    config = corpus._json(corpus.WEIGHTS)
    config["config"]["fc2.weight"]["tensor_meta"]["sizes"][0] = change
    payload = corpus.rewritten({corpus.WEIGHTS: json.dumps(config).encode()})
    path = _write(tmp_path, "odd.pt2", payload)
    with pytest.raises(ValueError, match=expect):
        zoo.load(f"file:{path}?arch={ARCH}")


def test_solve_measure_never_trusts_the_spec_a_table_names(tmp_path, capsys):
    evil = _write(tmp_path, "evil.pt2", corpus.pt2_opaque_constant(tmp_path))
    pickle_file = _write(tmp_path, "whole.pt", corpus.saved(corpus.RunsCode(tmp_path / MARKER)))
    created = tmp_path / "created" / "by" / "web"
    table = prunelab.sensitivity(
        zoo.load(ARCH).model, sparsities=[0.5], config=SensitivityConfig(method="magnitude")
    )
    argv = ["solve", str(tmp_path / "t.csv"), "--target-sparsity", "0.2", "--measure"]
    argv += ["--out", str(tmp_path / "r.yaml")]
    for model, data, expect in [
        (f"file:{evil}", None, "trust"),
        (f"file:{pickle_file}?trust=1", None, "untrusted place"),
        (ARCH, f"torchvision:MNIST?root={created}&download=1", "untrusted place"),
        (ARCH, f"torchvision:MNIST?root={created}", "does not exist"),
    ]:
        table.attrs.update(model=model, data=data)
        save_table(table, tmp_path / "t.csv")
        assert expect in _one_line_error(capsys, argv)
    assert not (tmp_path / MARKER).exists()
    assert not (tmp_path / "created").exists()


def test_a_data_spec_from_a_form_cannot_carry_options(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    assert data_lib.torchvision_spec("mnist", folder) == f"torchvision:MNIST?root={folder}"
    for bad in [f"{folder}&download=1", f"{folder}?x=1", "a=b", ""]:
        with pytest.raises(ValueError, match="cannot be used"):
            data_lib.torchvision_spec("MNIST", bad)


# -- memory --------------------------------------------------------------------------------

MEMORY_CASES = {
    "pt deflated bomb": (corpus.pt_compressed_bomb, "model.pt", "unpacks to 256.0 MiB"),
    "pt2 deflated bomb": (corpus.pt2_compressed_bomb, "model.pt2", "unpacks to 256."),
    "shared tuple key": (corpus.pt_shared_tuple_key, "model.pt", "shared parts"),
}


@pytest.mark.parametrize("name", list(MEMORY_CASES))
def test_archives_are_judged_by_what_they_unpack_to(name, tmp_path, capsys):
    build, filename, expect = MEMORY_CASES[name]
    path = _write(tmp_path, filename, build(tmp_path))
    assert path.stat().st_size < 2 * 2**20
    spec = f"file:{path}?arch={ARCH}"
    with pytest.raises(ValueError, match=expect):
        zoo.load(spec)
    assert expect in _one_line_error(capsys, ["layers", spec])


def test_a_data_file_claiming_a_trillion_samples_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "off")  # the file size cap holds even without a limit
    path = _write(tmp_path, "data.pt", corpus.data_claims_huge(tmp_path))
    assert path.stat().st_size < 4096
    with pytest.raises(ValueError, match="claims 1,000,000,000,000 samples"):
        data_lib.load(f"file:{path}")


@pytest.mark.parametrize("reader", ["recipe", "table", "checkpoint", "model", "data", "masks"])
def test_only_regular_files_are_read(reader, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ValueError, match=r"not a regular file|is a directory"):
            if reader == "recipe":
                Recipe.load(path)
            elif reader == "table":
                prunelab.sweeps.load_table(path)
            elif reader == "checkpoint":
                prunelab.sweeps.checkpoints.checkpoint_status(path)
            elif reader == "model":
                zoo.load(f"file:{path}?arch={ARCH}")
            elif reader == "data":
                data_lib.load(f"file:{path}")
            else:
                prunelab.Masks.load(path)


# -- recipes -------------------------------------------------------------------------------

RECIPE_CASES = {
    "alias bomb": (corpus.recipe_alias_bomb, "repeats a list or mapping"),
    "deep nesting": (corpus.recipe_deep, "nesting deeper than 32"),
    "duplicate key": (corpus.recipe_duplicate_key, "'strategy' is given twice"),
}


@pytest.mark.parametrize("name", list(RECIPE_CASES))
def test_bounded_yaml(name, tmp_path, capsys):
    build, expect = RECIPE_CASES[name]
    path = _write(tmp_path, "recipe.yaml", build(tmp_path))
    with pytest.raises(ValueError, match=expect):
        Recipe.load(path)
    assert expect in _one_line_error(capsys, ["apply", str(path), ARCH])


def test_single_value_aliases_still_work():
    text = corpus.RECIPE_HEAD.replace("0.5", "&half 0.5") + "strategy: layer-magnitude\n"
    text += "default_sparsity: *half\n"
    assert Recipe.loads(text).default_sparsity == 0.5


# -- under a real memory cap, and through the real command ---------------------------------

_CAPPED = textwrap.dedent(
    """
    import contextlib, io, json, resource, sys
    import prunelab.cli.commands, torch
    # what the commands import lazily, loaded before the cap: the cap is for the files, not for code
    import prunelab.analysis.evaluation, prunelab.io.recipes, prunelab.io.zoo
    import prunelab.sweeps.tables

    def vm():
        status = open("/proc/self/status").read().splitlines()
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmSize:"))

    cap = vm() + 160 * 2**20  # room to work, not room for a 256 MiB tensor
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = prunelab.cli.commands.main(argv)
        except MemoryError:
            status = "MemoryError"
        results.append([status, err.getvalue()])
    print(json.dumps(results))
    """
)


def test_the_guards_hold_under_a_real_memory_cap(tmp_path):
    argv = [["layers", ARCH]]  # control: ordinary work fits under the cap
    expected = [None]
    for name, (build, filename, expect) in MEMORY_CASES.items():
        path = _write(tmp_path, f"{name.replace(' ', '-')}-{filename}", build(tmp_path))
        argv.append(["layers", f"file:{path}?arch={ARCH}"])
        expected.append(expect if "bomb" not in name else "unpacks to")
    data = _write(tmp_path, "data.pt", corpus.data_claims_huge(tmp_path))
    argv.append(["prune", ARCH, "--strategy", "layer-magnitude", "--sparsity", "0.5"])
    argv[-1] += ["--data", f"file:{data}"]
    expected.append("data file data.pt")  # refused for memory, or for its claimed samples
    for name, (build, expect) in RECIPE_CASES.items():
        path = _write(tmp_path, f"{name.replace(' ', '-')}.yaml", build(tmp_path))
        argv.append(["apply", str(path), ARCH])
        expected.append(expect)
    env = {k: v for k, v in os.environ.items() if k != memory.LIMIT_ENV}
    env["MALLOC_ARENA_MAX"] = "1"  # each thread's malloc arena would reserve 64 MiB
    out = subprocess.run(
        [sys.executable, "-c", _CAPPED, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results[0][0] == 0, results[0]
    for (status, err), expect, args in zip(results[1:], expected[1:], argv[1:], strict=True):
        assert status == 2, (args, status, err[-500:])
        assert len(err.strip().splitlines()) == 1 and expect in err, (args, err)


def test_the_real_command_prints_one_line_and_runs_nothing(tmp_path):
    # the issue's own case: `prunelab layers file:x.pt2` with guard code in the program
    path = _write(tmp_path, "evil.pt2", corpus.pt2_guard_code(tmp_path))
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prunelab")), "layers", f"file:{path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "trust" in out.stderr, out.stderr
    assert not (tmp_path / MARKER).exists()
