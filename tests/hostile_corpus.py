"""The hostile-file corpus of issue 22, built by the tests (never stored as binaries).

Each builder takes the folder of the test and returns the file's bytes. Files that would run
code do what :class:`RunsCode` does: create ``folder / MARKER``, harmless proof that code
from the file ran. ``tests/test_hostile_corpus.py`` shows that each such file is live (the
code does run when the file is opened the unsafe way) and that prunelab never runs it.
"""

from __future__ import annotations

import functools
import io
import json
import pathlib
import pickle
import re
import zipfile
from pathlib import Path

import torch

MARKER = "MARKER"
ARCH = "sample:digits-mlp"


class RunsCode:
    """Unpickling this creates ``path``: harmless proof that the pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one line on stderr: that line."""
    from prunelab.cli.commands import main

    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def touch_code(folder: Path) -> str:
    """A Python expression that creates the marker (for files that torch evaluates)."""
    return f"__import__('pathlib').Path({str(folder / MARKER)!r}).touch()"


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# -- torch.export archives -----------------------------------------------------------------


@functools.cache
def program_bytes() -> bytes:
    """A real ``torch.export.save`` archive of the digits MLP, with a dynamic batch."""
    from prunelab.io import zoo

    model = zoo.load(ARCH).model
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _members() -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(program_bytes())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(iter(members)).split("/", 1)[0]
    return root, members


def write_zip(members: dict[str, bytes | int], *, compress: bool = False) -> bytes:
    """A zip of ``members``; an int stands for that many zero bytes, streamed (never held)."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method, compresslevel=1) as archive:
        for name, data in members.items():
            if isinstance(data, bytes):
                archive.writestr(name, data)
                continue
            chunk = bytes(2**20)
            with archive.open(name, "w", force_zip64=True) as handle:
                for start in range(0, data, len(chunk)):
                    handle.write(chunk[: min(len(chunk), data - start)])
    return buffer.getvalue()


def rewritten(changes: dict[str, bytes | int | None], *, compress: bool = False) -> bytes:
    """The program archive with members (relative to its root) replaced, added or removed."""
    root, members = _members()
    for name, data in changes.items():
        if data is None:
            members.pop(f"{root}/{name}", None)
        else:
            members[f"{root}/{name}"] = data
    return write_zip(members, compress=compress)


def _json(name: str) -> dict:
    root, members = _members()
    return json.loads(members[f"{root}/{name}"])


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
MODEL = "models/model.json"


def pt2_pickled_weight(folder: Path) -> bytes:
    """A weight stored as a pickle: torch.export.load unpickles it with weights_only=False."""
    config = _json(WEIGHTS)
    entry = config["config"]["fc1.weight"]
    entry["use_pickle"] = True
    return rewritten(
        {
            WEIGHTS: json.dumps(config).encode(),
            f"data/weights/{entry['path_name']}": saved(RunsCode(folder / MARKER)),
        }
    )


def pt2_opaque_constant(folder: Path) -> bytes:
    """An opaque constant: torch.export.load reads it with pickle.loads."""
    config = _json(CONSTANTS)
    config["config"]["evil"] = {
        "path_name": "opaque_obj_0",
        "is_param": False,
        "use_pickle": True,
        "tensor_meta": None,
    }
    return rewritten(
        {
            CONSTANTS: json.dumps(config).encode(),
            "data/constants/opaque_obj_0": pickle.dumps(RunsCode(folder / MARKER)),
        }
    )


def pt2_symbolic_size(folder: Path) -> bytes:
    """A symbolic size that torch parses as Python (sympy.sympify evaluates it)."""
    root, members = _members()
    text = members[f"{root}/{MODEL}"].decode()
    text = re.sub(
        r'"expr_str": "(Symbol\([^"]*\))"',
        lambda m: f'"expr_str": "({touch_code(folder)}) or {m.group(1)}"',
        text,
        count=1,
    )
    return rewritten({MODEL: text.encode()})


def pt2_guard_code(folder: Path) -> bytes:
    """Guard code, which the loaded program runs at its first call."""
    program = _json(MODEL)
    program["guards_code"] = [f"{touch_code(folder)} is None"]
    return rewritten({MODEL: json.dumps(program).encode()})


def pt2_sample_inputs(folder: Path) -> bytes:
    """Sample inputs that fail weights_only loading, so torch falls back to full unpickling."""
    return rewritten({"data/sample_inputs/model.pt": saved(RunsCode(folder / MARKER))})


def pt2_old_format(folder: Path) -> bytes:
    """The archive format of torch 2.7 and before, which torch reads by full unpickling."""
    from torch._export.serde.schema import SCHEMA_VERSION

    _, members = _members()
    program = next(v for k, v in members.items() if k.endswith(MODEL))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        archive.writestr("serialized_exported_program.json", program)
        archive.writestr("serialized_state_dict.pt", saved(RunsCode(folder / MARKER)))
        archive.writestr("serialized_constants.pt", saved({}))
        archive.writestr("serialized_example_inputs.pt", saved(((), {})))
    return buffer.getvalue()


BOMB_BYTES = 2**28  # 256 MiB of zeros, deflated to about 1 MB


def pt2_compressed_bomb(folder: Path) -> bytes:
    """A weight of 256 MiB of zeros, deflated to about a megabyte (declared in the archive)."""
    config = _json(WEIGHTS)
    entry = config["config"]["fc1.weight"]
    entry["tensor_meta"]["sizes"] = [{"as_int": BOMB_BYTES // 4 // 64}, {"as_int": 64}]
    entry["tensor_meta"]["strides"] = [{"as_int": 64}, {"as_int": 1}]
    return rewritten(
        {WEIGHTS: json.dumps(config).encode(), f"data/weights/{entry['path_name']}": BOMB_BYTES},
        compress=True,
    )


# -- torch.save files ----------------------------------------------------------------------


def pt_compressed_bomb(folder: Path) -> bytes:
    """A 256 MiB tensor in a torch.save archive whose members are deflated to about 1 MB.

    Saved with one element, then its storage member and the sizes in the pickle are widened
    (``torch.save`` writes the element count as a plain integer), so no big tensor is made.
    """
    small = 12345  # an element count whose pickled form is easy to find
    raw = saved({"fc1.weight": torch.zeros(small)})
    big = BOMB_BYTES // 4
    members = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                old, new = pickle.dumps(small, protocol=2)[2:-1], pickle.dumps(big, protocol=2)
                data = data.replace(old, new[2:-1])
            members[info.filename] = big * 4 if info.filename.endswith("/data/0") else data
    return write_zip(members, compress=True)


def pt_shared_tuple_key(folder: Path) -> bytes:
    """A 1.5 KB checkpoint whose key is a tuple nested 40 deep, each level used twice.

    Such a key cannot even be built here (putting it in a dict hashes 2**40 tuples), so a
    placeholder key is saved and its opcodes are swapped for ones that build the tuple through
    the pickle's memo: ``t = ('w',)``, then forty times ``t = (t, t)``.
    """
    placeholder = "PLACEHOLDERKEY"
    raw = saved({placeholder: torch.zeros(2)})
    pushed = b"X" + len(placeholder).to_bytes(4, "little") + placeholder.encode()
    nested = b"X\x01\x00\x00\x00w\x85" + b"q\xc8h\xc8h\xc8\x86" * 40  # memo slot 200
    members = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert data.count(pushed) == 1
                data = data.replace(pushed, nested)
            members[info.filename] = data
    return write_zip(members)


def data_claims_huge(folder: Path) -> bytes:
    """A 2 KB data file whose inputs are an expanded view claiming 10**12 samples."""
    return saved({"x": torch.zeros(1, 64).expand(10**12, 64), "y": torch.zeros(1).long()})


# -- recipes -------------------------------------------------------------------------------

RECIPE_HEAD = "format: prunelab.recipe/1\nlayers: {fc1.weight: 0.5}\n"


def recipe_alias_bomb(folder: Path) -> bytes:
    """491 bytes of YAML: nine levels of nine aliases, 9**9 strings once expanded."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return (RECIPE_HEAD + "\n".join(lines) + "\nstrategy: *i\n").encode()


def recipe_deep(folder: Path) -> bytes:
    return (RECIPE_HEAD + "strategy: " + "[" * 50_000 + "]" * 50_000 + "\n").encode()


def recipe_duplicate_key(folder: Path) -> bytes:
    return (RECIPE_HEAD + "strategy: layer-magnitude\nstrategy: random\n").encode()
