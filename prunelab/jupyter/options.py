"""What a strategy lets a person choose, read from the strategy itself.

A registered strategy is a frozen dataclass whose fields are its options (``granularity``,
``p`` of the weight norm, ...). The explorer builds its controls from those fields instead of
testing strategy names, so a strategy someone registers gets its controls too. Which values a
choice may take is found by building the strategy with each candidate: ``n:m`` refuses
``"unstructured"``, so its menu offers only N:M patterns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.strategies import Strategy, get_strategy

__all__ = ["GRANULARITIES", "Option", "build_strategy", "strategy_options"]

GRANULARITIES = ("unstructured", "channel", "input-channel", "2:4", "1:4", "4:8")
# Options every strategy kind understands, with the values worth offering; any other field
# becomes a free number or a checkbox.
_CANDIDATES = {"granularity": GRANULARITIES, "scope": ("layer", "global")}
# prune_outputs is shown beside the layers it concerns (channel granularity only), not here
_ELSEWHERE = frozenset({"prune_outputs"})


@dataclass(frozen=True)
class Option:
    """One option of a strategy.

    Attributes:
        name: The keyword :func:`prunelab.get_strategy` takes.
        default: Its value in the registered preset.
        choices: The values it may take, or None for a free value of the default's kind
            (``kind``).
        kind: ``"choice"``, ``"bool"``, ``"int"`` or ``"float"``.
    """

    name: str
    default: object
    choices: tuple | None = None
    kind: str = "choice"


def build_strategy(name: str, options: Mapping[str, object]) -> Strategy:
    """The registered strategy ``name`` with ``options`` (as :func:`prunelab.get_strategy`)."""
    return get_strategy(name, **dict(options))


def _builds(name: str, options: Mapping[str, object]) -> bool:
    try:
        build_strategy(name, options)
    except (ValueError, TypeError):
        return False
    return True


def _shown(value: object) -> object:
    # granularities are objects (NM(n=2, m=4)); menus and recipes use their text ("2:4")
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def strategy_options(name: str) -> list[Option]:
    """The options strategy ``name`` offers, with the values each may take.

    A numeric option that another one overrides (``n`` and ``m`` of ``n:m`` follow its
    granularity) is left out, so no control contradicts another.

    >>> [(o.name, o.choices) for o in strategy_options("n:m")]
    [('granularity', ('2:4', '1:4', '4:8'))]
    >>> [(o.name, o.kind) for o in strategy_options("weight-norm-channel")]
    [('granularity', 'choice'), ('p', 'float')]
    """
    preset = get_strategy(name)
    if not dataclasses.is_dataclass(preset):
        return []
    fields = [f for f in dataclasses.fields(preset) if f.init and f.name not in _ELSEWHERE]
    defaults = {f.name: _shown(getattr(preset, f.name)) for f in fields}
    pinned = {k: v for k, v in defaults.items() if k in _CANDIDATES}
    found = []
    for f in fields:
        value = defaults[f.name]
        if f.name in _CANDIDATES:
            candidates = dict.fromkeys((value, *_CANDIDATES[f.name]))
            choices = tuple(c for c in candidates if _builds(name, {**pinned, f.name: c}))
            if len(choices) > 1:
                found.append(Option(f.name, value, choices))
        elif isinstance(value, bool):
            found.append(Option(f.name, value, (False, True), kind="bool"))
        elif isinstance(value, (int, float)):
            kind = "float" if "float" in str(f.type) or isinstance(value, float) else "int"
            if _independent(name, f.name, value, pinned):
                found.append(Option(f.name, value, None, kind=kind))
    return found


def _independent(name: str, field: str, value: float, pinned: Mapping[str, object]) -> bool:
    """Whether setting ``field`` changes the strategy while the pinned choices stay."""
    other = value + 1
    try:
        built = build_strategy(name, {**pinned, field: other})
    except (ValueError, TypeError):
        return False
    return getattr(built, field, None) == other
