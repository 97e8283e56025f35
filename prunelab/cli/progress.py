"""The command line's progress bar: fed by the engine's callbacks or by a command's steps."""

from __future__ import annotations

import sys

__all__ = ["Bar"]


class Bar:
    """A tqdm progress bar on stderr, for anything that can take more than a few seconds.

    It is fed either by the engine's ``progress(fraction, message)`` callbacks (pass the bar
    itself) or by a command's own steps (:meth:`step`, given ``steps`` up front). The bar
    shows only on a terminal, so pipes and logs see none, and it is cleared when it closes,
    so an error after it still reads as one line. (No ``delay``: tqdm would then draw the
    bar on each report without ever clearing it, leaving it in front of the error.)
    """

    def __init__(self, what: str, *, steps: int = 0) -> None:
        self._what = what
        self._steps = steps
        self._done = 0
        self._bar = None

    def __call__(self, fraction: float, message: str) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=1000,
                desc=self._what,
                file=sys.stderr,
                leave=False,
                disable=None,  # not on a pipe or a log file
                bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix}",
            )
        self._bar.n = round(fraction * 1000)
        self._bar.set_postfix_str(message, refresh=True)

    def step(self, message: str) -> None:
        """Start the next of the command's ``steps``; ``message`` says what it does."""
        self(min(self._done / max(self._steps, 1), 1.0), message)
        self._done += 1

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
