"""Argument checks at the engine's boundary: fractions, finite numbers and counts.

Each check refuses a value of the wrong type with ``TypeError`` (``True`` is not a number here,
although Python says it is an int) and a value out of range with ``ValueError``, names the
argument and shows the value given, and returns the value as a plain ``float`` or ``int`` (numpy
scalars included), so what the caller keeps is what was checked. Nothing here imports torch or
numpy: the command line checks its options without loading them.

>>> check_sparsity(0.5)
0.5
>>> check_number(-1, what="threshold", minimum=0)
Traceback (most recent call last):
...
ValueError: threshold must be a finite number >= 0, got -1.0
"""

from __future__ import annotations

import math
import numbers

from .files import bounded_repr

__all__ = ["check_count", "check_fraction", "check_number", "check_sparsity", "check_threshold"]


def _is_real(value: object) -> bool:
    # numpy registers its scalar types with ``numbers``; bool is an int to Python, not to us
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_fraction(value: object, *, what: str, meaning: str | None = None) -> float:
    """``value`` as a float in [0, 1].

    Args:
        value: The value given.
        what: The argument's name, leading the message.
        meaning: What the fraction is of, said in the message when it is out of range.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` lies outside [0, 1] (NaN included).

    >>> check_fraction(1.5, what="keep", meaning="fraction of channels kept")
    Traceback (most recent call last):
    ...
    ValueError: keep must be in [0, 1] (fraction of channels kept), got 1.5
    """
    if not _is_real(value):
        raise TypeError(f"{what} must be a number in [0, 1], got {bounded_repr(value)}")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        note = f" ({meaning})" if meaning else ""
        raise ValueError(f"{what} must be in [0, 1]{note}, got {number}")
    return number


def check_sparsity(value: object, *, what: str = "sparsity") -> float:
    """A sparsity (fraction of weights zeroed) as a float in [0, 1].

    >>> check_sparsity("half")
    Traceback (most recent call last):
    ...
    TypeError: sparsity must be a number in [0, 1], got 'half'
    """
    return check_fraction(value, what=what, meaning="fraction of weights zeroed")


def check_number(
    value: object, *, what: str, minimum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a finite float, at least ``minimum`` (above it with ``strict``) if given.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is NaN, infinite, or below the bound.

    >>> check_number(0, what="lr", minimum=0, strict=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got 0.0
    """
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if not _is_real(value):
        raise TypeError(f"{what} must be a number{bound}, got {bounded_repr(value)}")
    number = float(value)
    below = minimum is not None and (number <= minimum if strict else number < minimum)
    if not math.isfinite(number) or below:
        raise ValueError(f"{what} must be a finite number{bound}, got {number}")
    return number


def check_threshold(value: object) -> float:
    """An absolute score threshold: any finite number.

    >>> check_threshold(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: threshold must be a finite number, got nan
    """
    return check_number(value, what="threshold")


def check_count(value: object, *, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int from ``minimum`` up (to ``maximum`` if given): a batch size, a
    number of steps or bins, a bit width.

    Raises:
        TypeError: ``value`` is not an integer (``2.0`` is not: a count is never a float).
        ValueError: ``value`` lies outside the range.

    >>> check_count(0, what="batch_size")
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be at least 1, got 0
    >>> check_count(17, what="bits", maximum=16)
    Traceback (most recent call last):
    ...
    ValueError: bits must be an integer from 1 to 16, got 17
    """
    span = "" if maximum is None else f" from {minimum} to {maximum}"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer{span}, got {bounded_repr(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        needs = f"an integer{span}" if span else f"at least {minimum}"
        raise ValueError(f"{what} must be {needs}, got {value}")
    return int(value)
