"""English text on every machine: CPython's own help texts, split once into train and test.

``pydoc_data.topics`` ships with CPython (it is what ``help("if")`` prints): 79 topics, about
465,000 characters of English prose with code examples. The sample language model is trained
on the train split and judged on the test split, so no download is ever needed. The split is
by topic, not by position, so that no paragraph is in both: every fifth topic in sorted order
(starting with the third) is held out.

>>> len(pydoc_text("test")) < len(pydoc_text("train"))
True
"""

from __future__ import annotations

import functools

from .specs import check_split

__all__ = ["pydoc_text", "pydoc_topics"]

_HELD_OUT_EVERY = 5
_HELD_OUT_FIRST = 2


@functools.cache
def pydoc_topics(split: str) -> tuple[str, ...]:
    """The names of the help topics in ``split`` (``"train"`` or ``"test"``), sorted."""
    check_split(split)
    from pydoc_data.topics import topics  # a stdlib module of 0.5 MB: read only when asked

    names = sorted(topics)
    held_out = set(names[_HELD_OUT_FIRST::_HELD_OUT_EVERY])
    return tuple(n for n in names if (n in held_out) == (split == "test"))


@functools.cache
def pydoc_text(split: str) -> str:
    """The help texts of ``split``'s topics, joined by blank lines, in sorted topic order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in pydoc_topics(split))
