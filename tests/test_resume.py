"""Checkpointed sweeps and sensitivity: interrupted runs resume to exactly the same table."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from prunelab.sweeps import (
    Estimate,
    RunOptions,
    SensitivityConfig,
    SweepConfig,
    estimate_sensitivity,
    estimate_sweep,
    runner,
    sensitivity,
    sweep,
)
from prunelab.sweeps import curves as sweeps
from prunelab.sweeps.checkpoints import CheckpointError, CheckpointStatus, checkpoint_status
from tests.conftest import make_cnn, make_mlp

SWEEP = {
    "strategies": ["global-magnitude", "random", "layer-magnitude-gradient"],
    "sparsities": [0.0, 0.3, 0.6, 0.9],
}
LEVELS = [0.2, 0.5, 0.8]


def interrupt_after(rows: int):
    """A progress callback that stops the run (as Ctrl-C does) once ``rows`` rows are done."""
    seen = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if len(seen) == rows:
            raise KeyboardInterrupt

    return progress


def count_calls(monkeypatch, owner, name: str) -> list:
    calls = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_an_interrupted_sweep_resumes_to_the_same_table(tmp_path, mlp_data, monkeypatch):
    model = make_mlp().eval()
    path = tmp_path / "sweep.jsonl"
    expected = sweep(model, mlp_data, **SWEEP)
    with pytest.raises(KeyboardInterrupt):
        sweep(
            model, mlp_data, **SWEEP, run=RunOptions(checkpoint=path, progress=interrupt_after(6))
        )
    assert checkpoint_status(path) == CheckpointStatus("sweep", 6, 12, False)
    evaluations = count_calls(monkeypatch, sweeps, "evaluate")
    resumed = sweep(model, mlp_data, **SWEEP, run=RunOptions(checkpoint=path, resume=True))
    assert len(evaluations) == 6  # the six finished rows were read back, not evaluated
    assert_frame_equal(resumed, expected)
    assert checkpoint_status(path).finished  # kept: resuming again just reads the table
    evaluations.clear()
    assert_frame_equal(
        sweep(model, mlp_data, **SWEEP, run=RunOptions(checkpoint=path, resume=True)), expected
    )
    assert not evaluations


@pytest.mark.parametrize(
    ("make", "data", "early_stop", "stop_at"),
    [
        (make_cnn, "cnn_data", None, 4),  # prefix caching through a BatchNorm'd conv net
        # stopped inside a layer: its early stop is replayed from the saved rows
        (make_mlp, "mlp_data", 0.0, 1),  # ... from a drop past the bound
        (make_mlp, "mlp_data", 0.0, 2),  # ... from a skipped level
    ],
)
def test_an_interrupted_sensitivity_run_resumes_to_the_same_table(
    make, data, early_stop, stop_at, tmp_path, request, monkeypatch
):
    model, data = make().eval(), request.getfixturevalue(data)
    path = tmp_path / "sens.jsonl"
    options = {
        "sparsities": LEVELS,
        "config": SensitivityConfig(early_stop=early_stop, subset=30),
    }
    expected = sensitivity(model, data, **options)
    with pytest.raises(KeyboardInterrupt):
        sensitivity(
            model,
            data,
            **options,
            run=RunOptions(checkpoint=path, progress=interrupt_after(stop_at)),
        )
    total = len(expected)
    assert checkpoint_status(path) == CheckpointStatus("sensitivity", stop_at, total, False)
    points = count_calls(monkeypatch, runner._Runner, "masked_metrics")
    resumed = sensitivity(model, data, **options, run=RunOptions(checkpoint=path, resume=True))
    assert_frame_equal(resumed, expected)
    assert resumed.attrs == expected.attrs
    assert len(points) == int(expected["evaluated"].sum()) - int(
        expected["evaluated"].iloc[:stop_at].sum()
    )
    points.clear()
    finished = sensitivity(model, data, **options, run=RunOptions(checkpoint=path, resume=True))
    assert_frame_equal(finished, expected)
    assert finished.attrs == expected.attrs and not points


def test_a_checkpoint_from_other_settings_is_refused(tmp_path, mlp_data):
    model = make_mlp().eval()
    path = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sensitivity(
            model,
            mlp_data,
            sparsities=LEVELS,
            run=RunOptions(checkpoint=path, progress=interrupt_after(1)),
        )
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"what differs: sparsities \(checkpoint: \[0.2, 0.5"):
        sensitivity(
            model, mlp_data, sparsities=[0.2, 0.5], run=RunOptions(checkpoint=path, resume=True)
        )
    with pytest.raises(CheckpointError, match=r"^checkpoint .* model \(different contents"):
        sensitivity(
            make_mlp(seed=1).eval(),
            mlp_data,
            sparsities=LEVELS,
            run=RunOptions(checkpoint=path, resume=True),
        )
    other = (mlp_data[0] + 1, mlp_data[1])
    with pytest.raises(CheckpointError, match=r"data \(different contents\)"):
        sensitivity(model, other, sparsities=LEVELS, run=RunOptions(checkpoint=path, resume=True))
    with pytest.raises(
        CheckpointError, match=r"metric \(checkpoint: \"accuracy\"; now: \"loss\"\)"
    ):
        sensitivity(
            model,
            mlp_data,
            sparsities=LEVELS,
            config=SensitivityConfig(metric="loss"),
            run=RunOptions(checkpoint=path, resume=True),
        )
    with pytest.raises(CheckpointError, match="from a sensitivity run, not a sweep run"):
        sweep(model, mlp_data, **SWEEP, run=RunOptions(checkpoint=path, resume=True))
    with pytest.raises(CheckpointError, match=r"already holds 1 of 9 rows .* delete the file"):
        # no resume: no overwrite
        sensitivity(model, mlp_data, sparsities=LEVELS, run=RunOptions(checkpoint=path))
    assert path.read_bytes() == before  # nothing was mixed in


def test_the_sweep_seed_is_part_of_the_settings(tmp_path, mlp_data):
    model = make_mlp().eval()
    path = tmp_path / "run.jsonl"
    options = {"strategies": ["random"], "sparsities": [0.5]}
    sweep(model, mlp_data, **options, run=RunOptions(checkpoint=path))
    with pytest.raises(CheckpointError, match=r"what differs: seed \(checkpoint: 0; now: 1\)"):
        sweep(
            model,
            mlp_data,
            **options,
            config=SweepConfig(seed=1),
            run=RunOptions(checkpoint=path, resume=True),
        )


def test_resume_without_a_checkpoint_file_starts_the_run(tmp_path, mlp_data):
    model = make_mlp().eval()
    path = tmp_path / "new.jsonl"
    table = sweep(
        model,
        mlp_data,
        strategies=["random"],
        sparsities=[0.5],
        run=RunOptions(checkpoint=path, resume=True),
    )
    assert checkpoint_status(path) == CheckpointStatus("sweep", 1, 1, True)
    assert_frame_equal(table, sweep(model, mlp_data, strategies=["random"], sparsities=[0.5]))


def test_a_line_cut_short_by_a_kill_is_dropped_and_recomputed(tmp_path, mlp_data):
    model = make_mlp().eval()
    path = tmp_path / "run.jsonl"
    expected = sensitivity(model, mlp_data, sparsities=LEVELS)
    with pytest.raises(KeyboardInterrupt):
        sensitivity(
            model,
            mlp_data,
            sparsities=LEVELS,
            run=RunOptions(checkpoint=path, progress=interrupt_after(2)),
        )
    lines = path.read_bytes().splitlines(keepends=True)
    torn = b'{"row":2,"values":{"layer":"2.weight","elem'
    path.write_bytes(b"".join(lines) + torn)
    assert checkpoint_status(path).done == 2
    resumed = sensitivity(
        model, mlp_data, sparsities=LEVELS, run=RunOptions(checkpoint=path, resume=True)
    )
    assert_frame_equal(resumed, expected)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("row") for r in records[1:-1]] == list(range(len(expected)))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [*lines[:2], b"{not json\n", *lines[2:]], "line 3 is damaged"),
        (lambda lines: [b"\x00\xff garbage\n", *lines[1:]], "not a prunelab checkpoint"),
        (lambda lines: [], "not a prunelab checkpoint"),
        (lambda lines: [lines[0], b'{"row": 99, "values": {}}\n'], "line 2 names no row"),
        (
            lambda lines: [lines[0], lines[1].replace(b"0.weight", b"4.weight")],
            r"row 0 should be \{'layer': '0.weight'",
        ),
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error(damage, message, tmp_path, mlp_data):
    model = make_mlp().eval()
    path = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sensitivity(
            model,
            mlp_data,
            sparsities=LEVELS,
            run=RunOptions(checkpoint=path, progress=interrupt_after(2)),
        )
    path.write_bytes(b"".join(damage(path.read_bytes().splitlines(keepends=True))))
    with pytest.raises(CheckpointError, match=message):
        sensitivity(
            model, mlp_data, sparsities=LEVELS, run=RunOptions(checkpoint=path, resume=True)
        )


def test_the_magnitude_proxy_takes_no_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="takes no checkpoint"):
        sensitivity(
            make_mlp(),
            config=SensitivityConfig(method="magnitude"),
            run=RunOptions(checkpoint=tmp_path / "x.jsonl"),
        )
    assert not (tmp_path / "x.jsonl").exists()


def test_errors_found_before_the_first_row_leave_no_checkpoint(tmp_path, mlp_data):
    path = tmp_path / "run.jsonl"
    with pytest.raises(ValueError, match="needs labelled data"):
        sensitivity(
            make_mlp(),
            mlp_data[0],
            config=SensitivityConfig(metric="accuracy"),
            run=RunOptions(checkpoint=path),
        )
    assert not path.exists()


def test_a_checkpoint_in_a_missing_folder_fails_before_any_work(tmp_path, mlp_data, monkeypatch):
    evaluations = count_calls(monkeypatch, sweeps, "evaluate")
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder .*nowhere does not exist"):
        sweep(
            make_mlp(),
            mlp_data,
            **SWEEP,
            run=RunOptions(checkpoint=tmp_path / "nowhere" / "run.jsonl"),
        )
    assert not evaluations


def test_estimates_count_evaluations_and_time_one(mlp_data):
    model = make_mlp().eval()
    plan = estimate_sweep(model, mlp_data, **SWEEP)
    assert plan.evaluations == 12 and 0 < plan.seconds_per_evaluation < 1
    plan = estimate_sensitivity(
        model, mlp_data, sparsities=LEVELS, config=SensitivityConfig(layers=["0.*"], subset=10)
    )
    assert plan.evaluations == 3 and plan.seconds == pytest.approx(3 * plan.seconds_per_evaluation)
    assert plan.remaining(2).evaluations == 1
    assert str(Estimate(90, 2.0)) == "90 evaluations x 2.00 s = about 3 min 0 s"


def test_checkpointed_rows_hold_plain_numbers(tmp_path, mlp_data):
    path = tmp_path / "run.jsonl"
    table = sweep(
        make_mlp().eval(),
        mlp_data,
        strategies=["random"],
        sparsities=[0.5],
        run=RunOptions(checkpoint=path),
    )
    back = pd.DataFrame(
        [json.loads(line)["values"] for line in path.read_text().splitlines()[1:-1]]
    )
    assert_frame_equal(back, table)
