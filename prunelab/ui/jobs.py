"""Long jobs in the app: an estimate first, a confirmation when long, cancel and resume.

A job (a sensitivity run, a sweep) writes its finished rows to a checkpoint in the session's
private temporary folder, named by the job's settings. Clicking any button while a job runs
makes Streamlit stop the script at its next call (the progress bar's next update, right after
a row is saved), so *Cancel* loses nothing; the page then offers *Resume (k of n done)* and
*Start over*. The folder is deleted when the session ends.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import streamlit as st

from ..errors import user_message
from ..runtime.files import one_line
from ..sweeps.checkpoints import CheckpointError, CheckpointStatus, checkpoint_status
from ..sweeps.estimates import Estimate, format_duration
from .cache import session_store
from .engine import progress_bar
from .errors import error_boundary, failing_as
from .state import Keys

__all__ = ["CONFIRM_SECONDS", "Job", "controls", "run", "start"]

CONFIRM_SECONDS = 60  # longer jobs start only after the user confirms

T = TypeVar("T")
Work = Callable[[Path, Callable[[float, str], None]], T]


class _Folder:
    """A private folder (mode 0700) removed when the session's state is dropped, or at exit."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="prunelab-jobs-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


def _folder() -> Path:
    folder = st.session_state.get(Keys.jobs_folder)
    if folder is None or not folder.path.is_dir():
        folder = st.session_state[Keys.jobs_folder] = _Folder()
    return folder.path


@dataclass(frozen=True)
class Job:
    """One long computation, named by the page's key prefix and its settings.

    Its widgets' keys are ``<prefix>_run``, ``_resume``, ``_restart``, ``_confirm`` and
    ``_cancel``.
    """

    prefix: str
    settings: tuple

    def key(self, control: str) -> str:
        return f"{self.prefix}_{control}"

    @property
    def checkpoint(self) -> Path:
        digest = hashlib.sha256(repr(self.settings).encode()).hexdigest()[:20]
        return _folder() / f"{self.prefix}-{digest}.jsonl"

    def status(self) -> CheckpointStatus | None:
        return checkpoint_status(self.checkpoint)

    def discard(self) -> None:
        """Forget the saved rows (after Start over, or once the result is kept elsewhere)."""
        self.checkpoint.unlink(missing_ok=True)

    def estimate(self, measure: Callable[[], Estimate]) -> Estimate | None:
        """``measure()`` once per session and settings (it times a real evaluation).

        None where the user's input makes it fail: the run itself then reports the problem.
        """
        kept = session_store(Keys.jobs_estimates)
        key = (self.prefix, self.settings)
        if key not in kept:
            try:
                with st.spinner("Timing one evaluation..."):
                    estimate = measure()
            except Exception as exc:
                if user_message(exc) is None:  # a bug: the page's boundary reports it
                    raise
                estimate = None
            kept.put(key, estimate)
        return kept.get(key)


def controls(job: Job, estimate: Estimate | None, *, label: str) -> bool:
    """The estimate, the confirmation for long jobs and the start buttons; True to start.

    Starting always continues the job's saved rows, if any: *Start over* deletes them first.
    """
    try:
        state = job.status()
    except CheckpointError as exc:
        st.error(f"The saved progress of this run cannot be used: {one_line(exc)}")
        if st.button("Start over", key=job.key("restart")):
            job.discard()
            return True
        return False
    if state is not None and state.finished:
        return True  # the whole table is saved: reading it back costs nothing
    done = state.done if state is not None else 0
    confirmed = True
    if estimate is not None:
        left = estimate.remaining(done)
        st.caption(f"Estimate: {left}" + (f" (another {done} are done already)" if done else ""))
        if left.seconds > CONFIRM_SECONDS:
            st.warning(
                f"This will take about {format_duration(left.seconds)}. You can cancel at any "
                "time and resume later without losing the finished evaluations."
            )
            confirmed = st.checkbox(
                f"Yes, run for about {format_duration(left.seconds)}", key=job.key("confirm")
            )
    if not done:
        count = f" ({estimate.evaluations} evaluations)" if estimate is not None else ""
        return st.button(label + count, key=job.key("run"), type="primary", disabled=not confirmed)
    cols = st.columns([1, 1, 3])
    resume = cols[0].button(
        f"Resume ({done} of {state.total} done)",
        key=job.key("resume"),
        type="primary",
        disabled=not confirmed,
    )
    restart = cols[1].button("Start over", key=job.key("restart"), disabled=not confirmed)
    if restart:
        job.discard()
    return resume or restart


def run(job: Job, work: Work[T], *, label: str) -> T | None:
    """Run ``work(checkpoint, progress)`` with a progress bar and a Cancel button.

    Returns its result, or None after showing the error (``st.error``, never a traceback):
    the page goes on, so that the run can be started again.
    """
    st.button(
        "Cancel",
        key=job.key("cancel"),
        help="Stops after the evaluation under way; the finished ones are kept for Resume.",
    )
    bar, report = progress_bar(label)
    result = None
    with error_boundary(), failing_as("The run could not finish"):
        result = work(job.checkpoint, report)
    bar.empty()
    return result


def start(job: Job, estimate: Estimate | None, work: Work[T], *, label: str, running: str):
    """:func:`controls`, then :func:`run` in their place once started; the result or None."""
    holder = st.empty()
    with holder.container():
        go = controls(job, estimate, label=label)
    if not go:
        return None
    holder.empty()  # while it runs, only Cancel and the progress bar show
    return run(job, work, label=running)
