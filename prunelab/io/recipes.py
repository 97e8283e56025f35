"""Recipes: per-layer sparsities with their provenance, saved as YAML or JSON and re-applied.

A recipe is what a sensitivity analysis leaves you with: a strategy, a granularity, the
sparsity of each layer (and a default for the layers not listed), and where the numbers came
from. It re-applies to a fresh copy of the model from Python or from ``prunelab apply``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from .._version import __version__
from ..core.apply import apply as apply_masks
from ..core.calibration import Calibration
from ..core.masks import Masks
from ..core.pruner import Pruner
from ..core.sparsegpt import Reconstructed
from ..core.strategies import ScoredStrategy, Strategy, get_strategy, strategy_choices
from ..core.targets import targets
from ..runtime.checks import check_sparsity
from ..runtime.files import atomic_write, bounded_repr, one_line, read_bounded

__all__ = ["Provenance", "Recipe"]

FORMAT = "prunelab.recipe/1"
MAX_BYTES = 1_000_000  # a recipe is a few KB; anything this large is not one
MAX_DEPTH = 32  # nesting of YAML lists and mappings; a recipe is three levels deep
# what to give instead, said whenever a file is not a recipe at all
_RECIPE_SOURCES = (
    "recipes are the YAML or JSON files `prunelab solve --out`, Recipe.save and the app write"
)


@dataclass(frozen=True)
class Provenance:
    """Where a recipe's numbers came from.

    Attributes:
        model: Model spec, e.g. ``"sample:digits-cnn"``.
        data: Data spec the metric was measured on.
        metric: Name of the metric (``"accuracy"``, ...).
        baseline: The dense model's value of the metric.
        predicted: The metric predicted from single-layer sensitivities.
        measured: The metric measured with the whole recipe applied.
        left_out: Layers the analysis left out, and why (the model's output layers under
            channel pruning).
        prunelab_version: Version that wrote the recipe.
        created: ISO-8601 time of creation (UTC).
    """

    model: str | None = None
    data: str | None = None
    metric: str | None = None
    baseline: float | None = None
    predicted: float | None = None
    measured: float | None = None
    left_out: str | None = None
    prunelab_version: str = __version__
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )


@dataclass(frozen=True)
class Recipe:
    """Per-layer sparsities for one strategy, re-appliable to a fresh model.

    Attributes:
        strategy: Registered strategy name.
        granularity: ``"unstructured"``, ``"channel"``, ``"input-channel"`` or ``"N:M"``.
        layers: ``{fqn: sparsity}``.
        default_sparsity: Sparsity of prunable layers not listed in ``layers``.
        provenance: Where the numbers came from.
        prune_outputs: With channel granularity, prune the model's output layers too
            (False: they are left out; see :class:`prunelab.Pruner`).
        options: The strategy's other options where they differ from its defaults, e.g.
            ``{"p": 2}`` (an L2 channel norm) or SparseGPT's ``{"percdamp": 0.05}``: without
            them a recipe would re-apply with the defaults and choose other weights.

    >>> import torch
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> recipe = Recipe(layers={"0.weight": 0.75})
    >>> recipe.masks(net).per_layer()["sparsity"].tolist()
    [0.75, 0.0]
    """

    strategy: str = "layer-magnitude"
    granularity: str = "unstructured"
    layers: Mapping[str, float] = field(default_factory=dict)
    default_sparsity: float = 0.0
    provenance: Provenance = field(default_factory=Provenance)
    prune_outputs: bool = False
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ValueError(
                "recipe field 'strategy' must be a strategy name, got "
                f"{bounded_repr(self.strategy)}"
            )
        if not isinstance(self.granularity, str):
            raise ValueError(
                f"recipe field 'granularity' must be a string, got {bounded_repr(self.granularity)}"
            )
        if not isinstance(self.layers, Mapping):
            raise ValueError("recipe field 'layers' must map layer names to sparsities")
        checked = {}
        for fqn, value in self.layers.items():
            if not isinstance(fqn, str):
                raise ValueError(
                    f"recipe field 'layers' has a non-string layer name {bounded_repr(fqn)}"
                )
            checked[fqn] = _sparsity(value, f"layers.{fqn}")
        object.__setattr__(self, "layers", checked)
        if not isinstance(self.prune_outputs, bool):
            raise ValueError(
                f"recipe field 'prune_outputs' must be true or false, got {self.prune_outputs!r}"
            )
        object.__setattr__(
            self, "default_sparsity", _sparsity(self.default_sparsity, "default_sparsity")
        )
        object.__setattr__(self, "options", _options(self.options))
        self.build_strategy()  # unknown strategy or granularity: fail now, naming the field

    def build_strategy(self) -> Strategy:
        """The strategy object this recipe names, with its granularity and options."""
        try:
            default = get_strategy(self.strategy)
        except ValueError as exc:
            raise ValueError(f"recipe field 'strategy': {exc}") from exc
        same = str(default.granularity) == self.granularity
        if same and default.prune_outputs == self.prune_outputs:
            return self._with_options({})
        outputs = default.prune_outputs == self.prune_outputs
        # a strategy of its own kind (sparsegpt) may take a granularity, not prune_outputs
        if not isinstance(default, ScoredStrategy) and not (outputs and is_dataclass(default)):
            field_name = "prune_outputs" if same else "granularity"
            raise ValueError(
                f"recipe field {field_name!r}: strategy {self.strategy!r} has no such option "
                f"(it does {default.granularity} with prune_outputs={default.prune_outputs})"
            )
        options: dict[str, object] = {} if outputs else {"prune_outputs": self.prune_outputs}
        if not same:
            options["granularity"] = self.granularity
        try:
            get_strategy(self.strategy, **options)
        except ValueError as exc:
            raise ValueError(f"recipe field 'granularity': {exc}") from exc
        return self._with_options(options)

    def _with_options(self, options: dict[str, object]) -> Strategy:
        # the recipe's own options last, so that an error names them and not the granularity
        try:
            return get_strategy(self.strategy, **options, **self.options)
        except ValueError as exc:
            raise ValueError(f"recipe field 'options': {exc}") from exc

    @classmethod
    def from_masks(
        cls, masks: Masks, strategy: Strategy, *, provenance: Provenance | None = None
    ) -> Recipe:
        """The recipe that reproduces ``masks`` made by ``strategy``: each layer's achieved
        sparsity (a sparsity or threshold chosen globally becomes per-layer numbers, which
        select the same weights layer by layer).

        >>> import torch
        >>> from prunelab.core.pruner import Pruner
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> pruner = Pruner(net, "global-magnitude")
        >>> masks = pruner.masks(sparsity=0.5)
        >>> again = Recipe.from_masks(masks, pruner.strategy).masks(net)
        >>> all(torch.equal(masks[f], again[f]) for f in masks)
        True
        """
        table = masks.per_layer()
        layers = {
            row.fqn: (row.elements - row.kept) / row.elements if row.elements else 0.0
            for row in table.itertuples()
        }
        return cls(
            strategy=strategy.name,
            granularity=str(strategy.granularity),
            layers=layers,
            provenance=provenance or Provenance(),
            prune_outputs=strategy.prune_outputs,
            options=strategy_choices(strategy),
        )

    # -- using it -----------------------------------------------------------------------

    def masks(self, model: nn.Module, calibration: Calibration | None = None) -> Masks:
        """Masks for ``model``: listed layers at their sparsity, the others at the default.

        Every prunable layer gets a mask; the layers at sparsity 0 keep everything (for N:M
        strategies too: the pattern applies to the layers listed at its sparsity).

        Raises:
            ValueError: If the recipe names layers the model does not have.
        """
        found_targets = targets(model)
        available = {t.fqn for t in found_targets}
        missing = [fqn for fqn in self.layers if fqn not in available]
        if missing:
            raise ValueError(
                f"recipe field 'layers' names {len(missing)} layer(s) this model does not have: "
                f"{missing[:5]}; the model's prunable layers: {sorted(available)[:8]}"
            )
        strategy = self.build_strategy()
        if self.default_sparsity:
            pruner = Pruner(model, strategy, calibration=calibration)
            return pruner.masks(sparsity=self.default_sparsity, per_layer=dict(self.layers))
        # Layers left dense are not handed to the strategy, so that a recipe pruning some
        # layers re-applies to a model whose other layers that strategy cannot score (N:M on
        # an input count it does not divide, activation statistics inside an LSTM).
        pruned = {fqn: value for fqn, value in self.layers.items() if value}
        chosen: Mapping[str, torch.Tensor] = {}
        coupled = None
        if pruned:
            layers = [t for t in found_targets if t.fqn in pruned]
            pruner = Pruner(model, strategy, targets=layers, calibration=calibration)
            chosen = pruner.masks(sparsity=0.0, per_layer=pruned)
            coupled = chosen.coupled
        full = {
            t.fqn: chosen[t.fqn] if t.fqn in chosen else torch.ones(t.shape, dtype=torch.bool)
            for t in found_targets
        }
        if isinstance(chosen, Reconstructed):  # sparsegpt: its new weights come along
            return Reconstructed(full, weights=chosen.weights, coupled=coupled)
        return Masks(full, coupled=coupled)

    def apply(self, model: nn.Module, calibration: Calibration | None = None) -> nn.Module:
        """A pruned copy of ``model`` (``torch.nn.utils.prune`` buffers); ``model`` unchanged."""
        return apply_masks(model, self.masks(model, calibration))

    def overall_sparsity(self, model: nn.Module) -> float:
        """Fraction of all target weights this recipe zeroes on ``model`` (by elements)."""
        total = pruned = 0.0
        for target in targets(model):
            total += target.numel
            pruned += target.numel * self.layers.get(target.fqn, self.default_sparsity)
        return pruned / total if total else 0.0

    # -- files --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data, as written to files."""
        return {
            "format": FORMAT,
            "strategy": self.strategy,
            "granularity": self.granularity,
            "default_sparsity": self.default_sparsity,
            "prune_outputs": self.prune_outputs,
            **({"options": dict(self.options)} if self.options else {}),
            "layers": dict(self.layers),
            "provenance": asdict(self.provenance),
        }

    @classmethod
    def from_dict(cls, payload: object) -> Recipe:
        """Validate plain data and build a Recipe; errors name the offending field."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"a recipe must be a mapping of fields, got {type(payload).__name__}")
        known = {
            "format",
            "strategy",
            "granularity",
            "default_sparsity",
            "prune_outputs",
            "options",
            "layers",
            "provenance",
        }
        unknown = sorted(str(k) for k in payload if k not in known)
        if unknown:
            raise ValueError(
                f"unknown recipe field(s) {bounded_repr(unknown)}; accepted: {sorted(known)}"
            )
        if payload.get("format") != FORMAT:
            raise ValueError(
                f"recipe field 'format' must be {FORMAT!r}, got "
                f"{bounded_repr(payload.get('format'))}"
            )
        for required in ("strategy", "layers"):
            if required not in payload:
                raise ValueError(f"recipe field {required!r} is missing")
        provenance = payload.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise ValueError("recipe field 'provenance' must be a mapping")
        accepted = {f.name: f.type for f in fields(Provenance)}
        extra = [k for k in provenance if k not in accepted]
        if extra:
            named = ["provenance." + str(k)[:60] for k in extra[:6]]
            raise ValueError(
                f"unknown recipe field(s) {bounded_repr(named)}; accepted: {sorted(accepted)}"
            )
        for key, value in provenance.items():
            _check_provenance(key, value)
        return cls(
            strategy=payload["strategy"],
            granularity=payload.get("granularity", "unstructured"),
            layers=payload["layers"] if payload["layers"] is not None else {},
            default_sparsity=payload.get("default_sparsity", 0.0),
            provenance=Provenance(**provenance),
            prune_outputs=payload.get("prune_outputs", False),
            options=payload["options"] if payload.get("options") is not None else {},
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            text = self.dumps()
        elif suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            raise ValueError(f"recipe files end in .yaml, .yml or .json, got {path.name!r}")
        with atomic_write(path, "w") as handle:
            handle.write(text)

    def dumps(self) -> str:
        """The YAML text :meth:`save` writes."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe written by :meth:`save` (safe YAML/JSON loading only)."""
        path = Path(path)
        raw = read_bounded(path, "recipe", MAX_BYTES, note="a recipe is a few KB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # torch.save writes a zip archive: masks (`prunelab prune --out`) or weights
            what = "a torch.save file (masks or weights)" if raw[:2] == b"PK" else "binary data"
            raise ValueError(f"{path} is not a recipe but {what}; {_RECIPE_SOURCES}") from None
        return cls.loads(text, name=str(path))  # the path as given: a command can repeat it

    @classmethod
    def loads(cls, text: str, *, name: str = "recipe") -> Recipe:
        """Parse recipe text (YAML, of which JSON is a subset)."""
        if len(text) > MAX_BYTES:
            raise ValueError(f"{name} is {len(text):,} characters; a recipe is a few KB")
        try:
            payload = yaml.load(text, Loader=_RecipeLoader)  # a bounded SafeLoader
        except yaml.YAMLError as exc:
            # YAML errors span lines (with a caret under the column); one line is enough
            where = one_line(exc, limit=1000)
            raise ValueError(
                f"{name} is not valid YAML/JSON (safe loading only, no custom tags): {where}"
            ) from exc
        if not isinstance(payload, Mapping):
            # a CSV table reads as one YAML string: say how a sensitivity table becomes a recipe
            what = "plain text" if isinstance(payload, str) else f"a {type(payload).__name__}"
            header = next((ln for ln in text.splitlines() if ln and ln[0] != "#"), "")
            file = None if name == "recipe" else name  # pasted text has no file name
            table = shlex.quote(file or "TABLE.csv")
            solve = f"prunelab solve {table} --target-sparsity 0.8 --out recipe.yaml"
            raise ValueError(
                f"{file or 'this'} is not a recipe (a mapping: format, strategy, layers, ...) but "
                f"{what}; "
                + (f"for a sensitivity table, run `{solve}`" if "," in header else _RECIPE_SOURCES)
            )
        return cls.from_dict(payload)


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting at most :data:`MAX_DEPTH` deep (deeper gave a
    RecursionError), aliases only of single values (an alias of a list or mapping is how a
    few hundred bytes expand to gigabytes), and no key given twice (``strategy`` twice
    would silently keep the last)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and not isinstance(node, yaml.ScalarNode):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"alias *{bounded_repr(event.anchor, limit=40)} repeats a list or mapping; "
                    "recipes allow aliases of single values only",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels; a recipe is a few levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {bounded_repr(key, limit=60)} is given twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _sparsity(value: object, name: str) -> float:
    try:
        return check_sparsity(value, what=f"recipe field '{name}'")
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def _options(options: object) -> dict[str, object]:
    """The ``options`` field checked: option names to plain values, as a file holds them."""
    if not isinstance(options, Mapping):
        raise ValueError(
            f"recipe field 'options' must map option names to values, got {bounded_repr(options)}"
        )
    checked = {}
    for name, value in options.items():
        if not isinstance(name, str):
            raise ValueError(f"recipe field 'options' has a non-string name {bounded_repr(name)}")
        if name in ("granularity", "prune_outputs"):
            raise ValueError(f"recipe field 'options.{name}': give it as the recipe field {name!r}")
        plain = isinstance(value, (bool, int, str)) or (
            isinstance(value, float) and not math.isnan(value)
        )
        if not plain:
            raise ValueError(
                f"recipe field 'options.{name[:60]}' must be a number, true/false or text, got "
                f"{bounded_repr(value)}"
            )
        checked[name] = value
    return checked


def _check_provenance(key: str, value: object) -> None:
    if value is None:
        return
    numeric = key in ("baseline", "predicted", "measured")
    if numeric:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"recipe field 'provenance.{key}' must be a number, got {bounded_repr(value)}"
            )
    elif not isinstance(value, str) or len(value) > 1000:
        raise ValueError(f"recipe field 'provenance.{key}' must be a short string")
