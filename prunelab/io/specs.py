"""Specs: how models and data are named (``scheme:target?key=value&...``), and data splits.

A spec is parsed once into a :class:`Spec`; its options are read through typed accessors
(:meth:`Spec.shape`, :meth:`Spec.integer`, :meth:`Spec.flag`) that bound what they accept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.files import bounded_repr

__all__ = [
    "MAX_CLASSES",
    "MAX_INPUT_VALUES",
    "MAX_SPEC_CHARS",
    "SPLITS",
    "Spec",
    "check_split",
    "parse_spec",
]

SPLITS = ("train", "test")
# the most values per sample an input=CxHxW option may ask for: beyond it torch fails deep
# inside (an allocation of terabytes)
MAX_INPUT_VALUES = 2**28
# the most classes a model (num_classes=) or a data file (class_names) may have: beyond it
# torch fails deep inside (an allocation of terabytes)
MAX_CLASSES = 1_000_000
MAX_SPEC_CHARS = 4096  # a spec is a name and a path; anything longer is not one


@dataclass(frozen=True)
class Spec:
    """A parsed ``scheme:target?key=value&...`` spec.

    Attributes:
        scheme: ``"sample"``, ``"torchvision"`` or ``"file"``.
        target: The part after the scheme (a name or a path).
        options: The query as a dict of strings.
        text: The spec as given.
    """

    scheme: str
    target: str
    options: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def check_options(self, accepted: Sequence[str]) -> None:
        """Raise ValueError naming any option not in ``accepted``."""
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            listed = ", ".join(accepted) if accepted else "none"
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} in {self.text!r}; "
                f"accepted for {self.scheme}: specs: {listed}"
            )

    def flag(self, key: str) -> bool:
        """The option ``key`` read as a boolean (absent = False)."""
        value = self.options.get(key, "0").strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"option {key}={value!r} in {self.text!r} must be 1/0 or true/false")

    def shape(self, key: str = "input") -> tuple[int, ...] | None:
        """The option ``key`` read as sizes joined by 'x' (``3x32x32``), or None when absent."""
        text = self.options.get(key)
        if text is None:
            return None
        try:
            shape = tuple(int(part) for part in text.lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise ValueError(
                f"{key}={text!r} in {self.text!r} must be positive sizes joined by 'x', "
                "e.g. input=3x32x32 (batch dimension not included)"
            )
        if math.prod(shape) > MAX_INPUT_VALUES:
            raise ValueError(
                f"{key}={bounded_repr(text)} asks for {math.prod(shape):,} values per sample; at "
                f"most {MAX_INPUT_VALUES:,} are accepted"
            )
        return shape

    def integer(self, key: str) -> int | None:
        """The option ``key`` read as an int, or None when absent."""
        if key not in self.options:
            return None
        try:
            return int(self.options[key])
        except ValueError:
            raise ValueError(
                f"option {key}={self.options[key]!r} in {self.text!r} must be an integer"
            ) from None


def parse_spec(spec: str, *, schemes: Sequence[str], samples: Sequence[str] = ()) -> Spec:
    """Split ``"scheme:target?k=v&k2=v2"`` into its parts.

    Without a known scheme, a name in ``samples`` becomes ``sample:<name>`` and an existing
    path becomes ``file:<path>``.

    Raises:
        ValueError: If the spec has no known scheme and is neither a sample name nor a file.

    >>> parse_spec("file:/tmp/m.pt?arch=sample:digits-cnn", schemes=["file"]).options
    {'arch': 'sample:digits-cnn'}
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a spec must be a non-empty string, got {bounded_repr(spec)}")
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(
            f"spec {bounded_repr(spec)} is {len(spec):,} characters long; a spec is a name or "
            f"a path with a few options (at most {MAX_SPEC_CHARS:,} characters)"
        )
    text = spec.strip()
    body, options = text, {}
    if "?" in text:
        body, _, query = text.rpartition("?")
        for part in filter(None, query.split("&")):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"option {part!r} in {text!r} is not of the form key=value")
            options[key.strip()] = value.strip()
    scheme, sep, target = body.partition(":")
    if sep and scheme in schemes:
        if not target:
            raise ValueError(f"spec {text!r} names no {scheme} target")
        return Spec(scheme, target, options, text)
    if "sample" in schemes and body in samples:
        return Spec("sample", body, options, text)
    if "file" in schemes and Path(body).expanduser().is_file():
        return Spec("file", body, options, text)
    forms = ", ".join(f"{s}:..." for s in schemes)
    hint = f" or a sample name ({', '.join(samples)})" if samples else ""
    raise ValueError(f"cannot read spec {text!r}: expected one of {forms}{hint}")


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a clear error."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split
