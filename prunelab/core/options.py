"""Options of a strategy, described so that an app can draw their controls.

A strategy's options are the fields of its dataclass (granularity, scope, a norm's order, ...).
:func:`options_of` describes them as :class:`Option` records: which values are offered, the
default, bounds; a menu, a number box or a checkbox is drawn from that, not from the strategy's
name, so that a strategy a user registers gets its controls in the app too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING

from .granularity import Granularity

if TYPE_CHECKING:
    from .strategies import Strategy

__all__ = [
    "GRANULARITIES",
    "GRANULARITY",
    "HIDDEN",
    "NM_PATTERNS",
    "SCOPE",
    "SCOPES",
    "Option",
    "options_of",
]

SCOPES = ("layer", "global")
NM_PATTERNS = ("2:4", "1:4", "4:8")
# the granularities a menu offers; any other "N:M" is accepted too
GRANULARITIES = ("unstructured", "channel", "input-channel", *NM_PATTERNS)
HIDDEN = {"option": None}  # field metadata: an option set in code, with no control in the app


@dataclass(frozen=True)
class Option:
    """One option of a strategy, described so that an app can draw a control for it.

    A strategy's options are its dataclass fields. Their name and default come from the
    field; the rest from ``field(metadata={"option": Option(...)})``, or, without it, from the
    default's type: a bool is a checkbox, an int or a float a number, a str a text box.
    ``metadata=HIDDEN`` (``{"option": None}``) hides a field: an option set in code only. A
    field redeclared to change its default keeps the description of the field it replaces.

    >>> from dataclasses import dataclass, field
    >>> from prunelab.core.strategies import ScoredStrategy
    >>> @dataclass(frozen=True)
    ... class Power(ScoredStrategy):
    ...     "Prune the smallest |w| ** k."
    ...     k: float = field(default=1.0, metadata={"option": Option("Power", choices=(1.0, 2.0))})
    ...     def scores(self, layer):
    ...         return layer.weight.abs() ** self.k
    >>> [(o.name, o.default) for o in options_of(Power)]
    [('granularity', 'unstructured'), ('scope', 'layer'), ('k', 1.0)]

    Attributes:
        label: Shown beside the control.
        choices: The values offered (a menu); empty for a free value.
        low: Smallest number allowed (None: no bound).
        high: Largest number allowed (None: no bound).
        step: Step of a number control (None: the control's own).
        help: One sentence on what the option changes.
        format: How a choice is shown, a format string such as ``"L{}"``.
        name: The keyword :func:`get_strategy` takes (filled in from the field).
        default: The value when none is chosen (filled in from the field or the preset).
    """

    label: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    help: str = ""
    format: str = "{}"
    name: str = ""
    default: object = None

    def show(self, value: object) -> str:
        """``value`` as the control shows it."""
        return self.format.format(value)

    def offered(self) -> tuple:
        """The values a menu offers: the choices, led by the default when it is not one.

        >>> Option("Norm", choices=(1, 2), default=3).offered()
        (3, 1, 2)
        """
        if self.default in self.choices:
            return self.choices
        return (self.default, *self.choices)

    def bounds(self) -> tuple:
        """``(low, high, step)`` in the default's number type (None where unset): a number
        control refuses an int value between float bounds.

        >>> Option("Shift", low=0, high=1.5, default=0.5).bounds()
        (0.0, 1.5, None)
        """
        kind = type(self.default)
        return tuple(None if v is None else kind(v) for v in (self.low, self.high, self.step))


def _plain(value: object) -> object:
    # a granularity object is offered and chosen by its name ("channel", "2:4")
    return str(value) if isinstance(value, Granularity) else value


def _declared(cls: type, name: str) -> object:
    # a subclass that redeclares a field to change its default keeps the base's description
    for base in cls.__mro__:
        item = getattr(base, "__dataclass_fields__", {}).get(name)
        if item is not None and "option" in item.metadata:
            return item.metadata["option"]
    return MISSING


def _described(cls: type, item: Field, default: object) -> Option | None:
    name = item.name
    spec = _declared(cls, name)
    if spec is None:
        return None
    if spec is MISSING:
        if not isinstance(default, (bool, int, float, str)):
            return None  # no control fits it: the option stays at its default
        spec = Option(name.replace("_", " ").capitalize())
    if not isinstance(spec, Option):
        raise TypeError(f"field {name!r}: metadata 'option' must be an Option or None")
    if _float_field(item, default) and not spec.choices:
        default = float(default)  # ``p: float = 1`` takes 1.5 too: a float box, not an int one
    return replace(spec, name=name, default=default)


def _float_field(item: Field, default: object) -> bool:
    # annotations are text under ``from __future__ import annotations``
    typed = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", "")
    return typed == "float" and isinstance(default, int) and not isinstance(default, bool)


def _accepted(cls: type, fixed: Mapping[str, object], spec: Option) -> Option | None:
    """``spec`` with only the choices ``cls`` builds with (``n:m`` refuses ``"channel"``), or
    None when that leaves one value: nothing to choose."""
    kept = []
    for choice in spec.choices:
        try:
            cls(**{**fixed, spec.name: choice})
        except (TypeError, ValueError):
            continue
        kept.append(choice)
    spec = replace(spec, choices=tuple(kept))
    return spec if len(spec.offered()) > 1 else None


def options_of(
    cls: type[Strategy], *, fixed: Mapping[str, object] | None = None
) -> tuple[Option, ...]:
    """The options of strategy class ``cls`` left to choose (the ``fixed`` ones are not).

    A menu offers only the values ``cls`` is built with (a strategy that refuses a
    granularity in ``__post_init__`` is not offered it), and a menu left with one value is not
    offered at all: that option is fixed. An option another one overrides (``n`` and ``m`` of
    ``n:m`` follow its pattern) is declared ``metadata=HIDDEN``.
    """
    if not is_dataclass(cls):
        return ()
    fixed = fixed or {}
    try:
        made = cls(**fixed)
    except (TypeError, ValueError):  # options without defaults: offer the fields' own
        made = None
    out = []
    for item in fields(cls):
        if not item.init or item.name in fixed:
            continue
        if made is not None:
            default = getattr(made, item.name)
        elif item.default is not MISSING:
            default = item.default
        else:
            continue  # no default to start the control from
        spec = _described(cls, item, _plain(default))
        if spec is not None and spec.choices and made is not None:
            spec = _accepted(cls, fixed, spec)
        if spec is not None:
            out.append(spec)
    return tuple(out)


SCOPE = Option(
    "Scope",
    choices=SCOPES,
    help="layer: every layer loses the same fraction. global: one ranking across all layers, "
    "so layers whose scores are small lose more.",
)
GRANULARITY = Option(
    "Granularity",
    choices=GRANULARITIES,
    help="What is kept or pruned together: single weights, whole output channels, whole input "
    "channels, or N of every M consecutive weights.",
)
