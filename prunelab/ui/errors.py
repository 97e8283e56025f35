"""The app's one error boundary: whatever a page raises is shown with ``st.error``.

Every page wraps its body in :func:`error_boundary`. A mistake of the user's (a file that does
not fit, data of the wrong shape; see :func:`prunelab.errors.user_message`, the one place that
decides) is shown as its plain message. Anything else is a bug: a short note says so, and the
details for a report (the exception and the last frames of its traceback) are in an expander.
Neither shows a path on the server: a visitor sees the names of files, not where they are kept.

Page logic (``prunelab.ui.views``) catches nothing by type: it names what it was doing with
:func:`failing_as`, and the boundary puts that before the message ("Could not build the masks:
..."). A panel that the rest of the page does not depend on has a boundary of its own, so that
its error leaves the rest of the page in place.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from ..errors import user_message
from ..runtime.files import one_line

__all__ = ["error_boundary", "failing_as", "show_error", "without_paths"]

# an absolute path (two parts or more): only its last part, the file's name, is shown
_PATH = re.compile(r"(?<![\w./])(?:/[^\s/'\"`:;,()\[\]]+)+/([^\s/'\"`:;,()\[\]]+)")
_FRAMES = 6
# where failing_as leaves what was being done, on the exception itself
_DOING = "_prunelab_doing"


def without_paths(text: str) -> str:
    """``text`` with every absolute path cut to its file name.

    >>> without_paths("cannot read /tmp/prunelab-upload-x1/upload.pt2: truncated")
    'cannot read upload.pt2: truncated'
    """
    return _PATH.sub(r"\1", text)


def _details(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    frames = frames[-_FRAMES:]
    lines = [f"{type(exc).__name__}: {one_line(exc, limit=500)}", "", "last frames:"]
    lines += [f"  {without_paths(f.filename)}:{f.lineno} in {f.name}" for f in frames]
    return without_paths("\n".join(lines))


def show_error(exc: BaseException, *, context: str | None = None) -> None:
    """Show ``exc`` as ``st.error``: the user's mistake plainly, a bug with its details folded.

    Args:
        exc: The exception.
        context: What was being done, e.g. ``"Could not load that"``; put before the message.
            By default, what :func:`failing_as` named, if anything.
    """
    context = context or getattr(exc, _DOING, None)
    message = user_message(exc)
    lead = f"{context}: " if context else ""
    if message is not None:
        st.error(lead + without_paths(message))
        return
    what = "something went wrong inside prunelab" if context else "Something went wrong"
    st.error(
        f"{lead}{what}. This is a bug in prunelab, not a problem with your input; the details "
        "below help to report it."
    )
    with st.expander("Details for a bug report"):
        st.code(_details(exc), language=None)


@contextmanager
def failing_as(context: str) -> Iterator[None]:
    """Name what the block does: an exception from it is shown as ``"<context>: <message>"``.

    The exception goes on to the boundary unchanged (its type decides whether it is the
    user's); the innermost name wins, as it says most precisely what failed.
    """
    try:
        yield
    except Exception as exc:
        if getattr(exc, _DOING, None) is None:
            setattr(exc, _DOING, context)
        raise


@contextmanager
def error_boundary() -> Iterator[None]:
    """Run a page's body, or a panel's; an exception from it is shown with :func:`show_error`.

    What follows the block runs as usual: at the end of a page that ends the page; around a
    panel, the rest of the page is still drawn. Streamlit's own control flow (``st.stop()``,
    reruns) is not an ``Exception`` and passes through.
    """
    try:
        yield
    except Exception as exc:
        show_error(exc)
