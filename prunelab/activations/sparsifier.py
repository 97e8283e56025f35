"""The activation sparsifier: masks for what enters chosen layers, aggregated over data.

Aggregate the inputs of each registered layer over batches, reduce the aggregate, turn it into
a mask, and let the mask multiply the input (``torch.ao.pruning``'s experimental activation
sparsifier, on a copy of the model). :data:`AGGREGATE_FNS`, :data:`REDUCE_FNS` and
:data:`MASK_FNS` hold the built-in choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from ..core.apply import copy_model
from ..runtime.batches import iter_batches
from ..runtime.checks import check_fraction, check_number
from ..runtime.hooks import PreHook, first_tensor

__all__ = [
    "AGGREGATE_FNS",
    "MASK_FNS",
    "REDUCE_FNS",
    "ActivationSparsifier",
    "sparsity_mask",
    "threshold_mask",
]


def _sum(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return aggregate + batch


def _sum_abs(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return aggregate + batch.abs()


def _max_abs(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return torch.maximum(aggregate, batch.abs())


def _mean_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.mean(dim=0)


def _max_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.amax(dim=0)


def _norm_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor, dim=0)


def threshold_mask(tensor: torch.Tensor, *, threshold: float = 0.0) -> torch.Tensor:
    """Keep (True) where ``|value| >= threshold``: the sparsifier's default ``mask_fn``.

    >>> threshold_mask(torch.tensor([0.1, -2.0, 0.5]), threshold=0.5).tolist()
    [False, True, True]
    """
    return tensor.abs() >= check_number(threshold, what="threshold", minimum=0)


def sparsity_mask(tensor: torch.Tensor, *, sparsity_level: float = 0.5) -> torch.Tensor:
    """Zero (False) the ``sparsity_level`` fraction of values with the smallest ``|value|``.

    Ties are broken by position (earlier values are kept first), so masks are reproducible.

    >>> sparsity_mask(torch.tensor([0.1, -2.0, 0.5, 0.3]), sparsity_level=0.5).tolist()
    [False, True, True, False]
    """
    sparsity_level = check_fraction(sparsity_level, what="sparsity_level")
    flat = tensor.detach().abs().flatten()
    keep = flat.numel() - round(sparsity_level * flat.numel())
    order = torch.argsort(flat, descending=True, stable=True)[:keep]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[order] = True
    return mask.view(tensor.shape)


AGGREGATE_FNS: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = (
    MappingProxyType({"sum": _sum, "sum of |x|": _sum_abs, "max of |x|": _max_abs})
)
"""Built-in ``aggregate_fn(aggregate, batch)`` choices (the first is the default)."""

REDUCE_FNS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType(
    {
        "mean over batch": _mean_over_batch,
        "max over batch": _max_over_batch,
        "L2 norm over batch": _norm_over_batch,
    }
)
"""Built-in ``reduce_fn(aggregate)`` choices (the first is the default)."""

MASK_FNS: Mapping[str, Callable[..., torch.Tensor]] = MappingProxyType(
    {"threshold": threshold_mask, "sparsity level": sparsity_mask}
)
"""Built-in ``mask_fn(reduced, **sparse_config)`` choices (the first is the default)."""


@dataclass(frozen=True)
class _Config:
    aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reduce_fn: Callable[[torch.Tensor], torch.Tensor]
    mask_fn: Callable[..., torch.Tensor]
    features: tuple[int, ...] | None
    feature_dim: int | None
    sparse_config: Mapping[str, object]


@dataclass
class _Layer:
    config: _Config
    handle: torch.utils.hooks.RemovableHandle | None = None
    data: torch.Tensor | list[torch.Tensor] | None = None
    shape: tuple[int, ...] | None = None  # of the input (or of one feature's slice)
    mask: torch.Tensor | list[torch.Tensor] | None = None


def _check_features(
    features: object, feature_dim: object
) -> tuple[tuple[int, ...] | None, int | None]:
    if feature_dim is not None and (
        isinstance(feature_dim, bool) or not isinstance(feature_dim, int)
    ):
        raise TypeError(
            f"feature_dim must be an int (a dim of the layer's input), got {feature_dim!r}"
        )
    if features is None:
        return None, feature_dim
    if isinstance(features, (int, str)) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a sequence of feature indices, got {features!r}")
    checked = tuple(features)
    bad = [f for f in checked if isinstance(f, bool) or not isinstance(f, int) or f < 0]
    if bad or not checked:
        raise ValueError(
            f"features must be a non-empty sequence of indices >= 0, got {list(features)!r}"
        )
    if feature_dim is None:
        raise ValueError("features need feature_dim: the dim of the input that they index")
    return checked, feature_dim


def _check_mask_fn(
    mask_fn: Callable[..., object], sparse_config: Mapping[str, object], *, complete: bool
) -> None:
    """Whether ``mask_fn(tensor, **sparse_config)`` can be called (``complete``) or could be,
    once more keyword arguments are given (defaults, completed at ``register_layer``)."""
    try:
        signature = inspect.signature(mask_fn)
    except (TypeError, ValueError):  # builtins: checked when called
        return
    bind = signature.bind if complete else signature.bind_partial
    try:
        bind(torch.empty(0), **sparse_config)
    except TypeError as exc:
        name = getattr(mask_fn, "__name__", repr(mask_fn))
        raise ValueError(
            f"mask_fn {name}{signature} cannot take the sparse config {dict(sparse_config)}: "
            f"{exc}; pass the keyword arguments it accepts"
        ) from None


class ActivationSparsifier:
    """Masks for the activations entering chosen layers, computed from data.

    Follows ``torch.ao.pruning``'s experimental activation sparsifier: for every batch, the
    input entering a registered layer is combined into a running aggregate
    (``aggregate_fn(aggregate, input)``, starting from zeros); :meth:`step` reduces it
    (``reduce_fn``), turns it into a mask (``mask_fn(reduced, **sparse_config)``) and starts a
    new aggregate; after :meth:`squash_mask` the mask multiplies the layer's input. With
    ``features`` (indices along ``feature_dim``), each feature gets its own aggregate and
    mask, and only those features are masked. Given the same functions and data, the masks
    equal PyTorch's.

    Defaults: ``aggregate_fn`` sums the inputs element by element (so batches must share a
    shape), ``reduce_fn`` takes the mean over the batch dim, ``mask_fn`` keeps values with
    ``|value| >= threshold`` (:func:`threshold_mask`; ``threshold=0`` keeps all). See
    :data:`AGGREGATE_FNS`, :data:`REDUCE_FNS`, :data:`MASK_FNS` for the built-in choices.

    Unlike PyTorch's, it works on its own copy of the model, ``sparsifier.model``: run data
    through that copy (or call :meth:`observe`); the model you gave is never hooked or
    changed. Layer weights are not touched.

    Args:
        model: The model.
        aggregate_fn: Default ``aggregate_fn(aggregate, input) -> aggregate``.
        reduce_fn: Default ``reduce_fn(aggregate) -> reduced``.
        mask_fn: Default ``mask_fn(reduced, **sparse_config) -> mask`` broadcastable to the
            input (True/1 = kept).
        features: Default feature indices to mask separately, or None for the whole tensor.
        feature_dim: The input dim that ``features`` index (with the batch dim: 1 for the
            channels of a conv input, -1 or 1 for a Linear input).
        **sparse_config: Default keyword arguments of ``mask_fn``.

    >>> net = nn.Sequential(nn.Linear(3, 2)).eval()
    >>> sparsifier = ActivationSparsifier(net, threshold=0.5)
    >>> sparsifier.register_layer("0")
    >>> sparsifier.observe(torch.tensor([[1.0, 0.2, -0.9], [0.6, 0.0, -0.3]]))
    2
    >>> sparsifier.step()
    >>> sparsifier.get_mask("0").tolist()
    [True, False, True]
    >>> sparse_net = sparsifier.squash_mask()  # the copy, masking what enters layer "0"
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mask_fn: Callable[..., torch.Tensor] | None = None,
        features: Sequence[int] | None = None,
        feature_dim: int | None = None,
        **sparse_config: object,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self._names = {id(m): name for name, m in model.named_modules() if name}
        self._source = model  # keeps the ids above from being reused
        self.model = copy_model(model)
        self._defaults = self._config(
            aggregate_fn or _sum,
            reduce_fn or _mean_over_batch,
            mask_fn or threshold_mask,
            features,
            feature_dim,
            sparse_config,
            complete=False,
        )
        self._layers: dict[str, _Layer] = {}

    @staticmethod
    def _config(
        aggregate_fn: object,
        reduce_fn: object,
        mask_fn: object,
        features: object,
        feature_dim: object,
        sparse_config: Mapping[str, object],
        *,
        complete: bool = True,
    ) -> _Config:
        for name, fn in (("aggregate_fn", aggregate_fn), ("reduce_fn", reduce_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {fn!r}")
        if not callable(mask_fn):
            raise TypeError(f"mask_fn must be callable, got {mask_fn!r}")
        checked, dim = _check_features(features, feature_dim)
        _check_mask_fn(mask_fn, sparse_config, complete=complete)
        return _Config(
            aggregate_fn,  # type: ignore[arg-type]
            reduce_fn,  # type: ignore[arg-type]
            mask_fn,
            checked,
            dim,
            MappingProxyType(dict(sparse_config)),
        )

    @property
    def layers(self) -> list[str]:
        """Names of the registered layers."""
        return list(self._layers)

    def _name_of(self, layer: str | nn.Module) -> str:
        if isinstance(layer, nn.Module):
            name = self._names.get(id(layer))
            if name is None:
                name = next((n for n, m in self.model.named_modules() if m is layer and n), None)
            if name is None:
                raise ValueError(
                    f"that {type(layer).__name__} is not a submodule of the sparsifier's model; "
                    "pass one of its modules or a module name"
                )
            return name
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name or an nn.Module, got {layer!r}")
        modules = dict(self.model.named_modules())
        if not layer or layer not in modules:
            valid = [n for n in modules if n]
            shown = ", ".join(valid[:24]) + (", ..." if len(valid) > 24 else "")
            raise ValueError(
                f"unknown layer {layer!r}: name a submodule whose input to mask; accepted: {shown}"
            )
        return layer

    def _layer(self, layer: str | nn.Module) -> tuple[str, _Layer]:
        name = self._name_of(layer)
        if name not in self._layers:
            raise ValueError(f"layer {name!r} is not registered; registered: {self.layers}")
        return name, self._layers[name]

    def register_layer(
        self,
        layer: str | nn.Module,
        *,
        aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mask_fn: Callable[..., torch.Tensor] | None = None,
        features: Sequence[int] | None = None,
        feature_dim: int | None = None,
        **sparse_config: object,
    ) -> None:
        """Start aggregating the input entering ``layer`` (a module name or module).

        Options not given fall back to the sparsifier's defaults; ``sparse_config`` updates
        the default one. Registering a layer again replaces its configuration and data.
        """
        name = self._name_of(layer)
        d = self._defaults
        config = self._config(
            aggregate_fn or d.aggregate_fn,
            reduce_fn or d.reduce_fn,
            mask_fn or d.mask_fn,
            features if features is not None else d.features,
            feature_dim if feature_dim is not None else d.feature_dim,
            {**d.sparse_config, **sparse_config},
        )
        if name in self._layers:
            self.unregister_layer(name)
        state = _Layer(config)
        module = self.model.get_submodule(name)
        state.handle = module.register_forward_pre_hook(self._aggregate_hook(name, state))
        self._layers[name] = state

    def unregister_layer(self, layer: str | nn.Module) -> None:
        """Stop sparsifying ``layer``: its hook, data and mask are dropped."""
        name, state = self._layer(layer)
        if state.handle is not None:
            state.handle.remove()
        del self._layers[name]

    def _aggregate_hook(self, name: str, state: _Layer) -> PreHook:
        config = state.config

        def hook(module: nn.Module, args: tuple) -> None:
            x = first_tensor(args)
            if x is None:
                raise TypeError(f"the input entering {name!r} is not a tensor")
            with torch.no_grad():
                x = x.detach()
                if config.features is None:
                    state.shape = state.shape or tuple(x.shape)
                    state.data = _aggregate(config, state.data, x, name)
                    return
                slices = _feature_slices(x, config, name)
                state.shape = state.shape or tuple(slices[0].shape)
                data = state.data if isinstance(state.data, list) else [None] * len(slices)
                state.data = [
                    _aggregate(config, d, s, name) for d, s in zip(data, slices, strict=True)
                ]

        return hook

    def observe(
        self,
        data: object,
        *,
        batch_size: int = 128,
        limit: int | None = None,
        device: torch.device | str | None = None,
    ) -> int:
        """Run data through ``self.model`` (without gradients) to aggregate activations.

        The aggregate functions combine batches element by element, so batches whose size
        differs from the first one's (a last, smaller batch) are skipped.

        Returns:
            The number of samples observed.
        """
        if device is not None:
            self.model.to(device)  # the sparsifier's own copy
        size = None
        samples = 0
        with torch.no_grad():
            for batch in iter_batches(data, batch_size=batch_size, limit=limit, device=device):
                size = size or batch.inputs.shape[0]
                if batch.inputs.shape[0] != size:
                    continue
                self.model(batch.inputs)
                samples += size
        return samples

    def step(self) -> None:
        """Turn each layer's aggregate into its mask (reduce, then mask), and start afresh."""
        masks = {}
        with torch.no_grad():
            for name, state in self._layers.items():
                if state.data is None or state.shape is None:
                    raise ValueError(
                        f"no activations entered {name!r} since the last step(): run data "
                        "through sparsifier.model (or call observe) first"
                    )
                config = state.config
                if config.features is None:
                    assert isinstance(state.data, torch.Tensor)
                    masks[name] = _make_mask(config, state.data, state.shape, name)
                else:
                    assert isinstance(state.data, list)
                    masks[name] = [
                        _make_mask(config, d, state.shape, f"{name}, feature {f}")
                        for d, f in zip(state.data, config.features, strict=True)
                    ]
        for name, mask in masks.items():
            self._layers[name].mask = mask
            self._layers[name].data = None

    def get_mask(self, layer: str | nn.Module) -> torch.Tensor | list[torch.Tensor]:
        """The mask of ``layer``: a tensor, or one tensor per feature when ``features`` is set.

        Raises:
            ValueError: If the layer is not registered or :meth:`step` has not made its mask.
        """
        name, state = self._layer(layer)
        if state.mask is None:
            raise ValueError(f"no mask for {name!r} yet: observe data, then call step()")
        return state.mask

    def squash_mask(self, *, attach_sparsify_hook: bool = True) -> nn.Module:
        """Stop aggregating; with ``attach_sparsify_hook``, make each mask multiply its input.

        Returns:
            ``self.model``, the sparsifier's copy of the model, now masking the inputs of the
            registered layers (or plain again, with ``attach_sparsify_hook=False``).
        """
        if attach_sparsify_hook:
            missing = [n for n, s in self._layers.items() if s.mask is None]
            if missing:
                raise ValueError(f"no mask yet for {missing}: call step() before squash_mask()")
        for name, state in self._layers.items():
            if state.handle is not None:
                state.handle.remove()
                state.handle = None
            state.data = None
            if attach_sparsify_hook:
                module = self.model.get_submodule(name)
                state.handle = module.register_forward_pre_hook(self._sparsify_hook(state))
        return self.model

    @staticmethod
    def _sparsify_hook(state: _Layer) -> PreHook:
        config, mask = state.config, state.mask

        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            if config.features is None:
                assert isinstance(mask, torch.Tensor)
                return (x * mask.to(x.device), *args[1:])
            assert isinstance(mask, list) and config.feature_dim is not None
            masked = x.clone()  # never write into the caller's tensor
            for feature, part in zip(config.features, mask, strict=True):
                masked.narrow(config.feature_dim, feature, 1).mul_(part.to(x.device))
            return (masked, *args[1:])

        return hook

    def __repr__(self) -> str:
        return f"ActivationSparsifier(layers={self.layers})"


def _aggregate(
    config: _Config, data: torch.Tensor | None, x: torch.Tensor, name: str
) -> torch.Tensor:
    start = torch.zeros_like(x) if data is None else data
    try:
        return config.aggregate_fn(start, x)
    except RuntimeError as exc:
        raise ValueError(
            f"aggregate_fn could not combine the aggregate of shape {tuple(start.shape)} with "
            f"an input of shape {tuple(x.shape)} entering {name!r}: {exc}. The default sums "
            "inputs element by element, so batches must all have the same shape "
            "(observe() skips a smaller last batch)"
        ) from None


def _feature_slices(x: torch.Tensor, config: _Config, name: str) -> list[torch.Tensor]:
    assert config.features is not None and config.feature_dim is not None
    dim = config.feature_dim
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"feature_dim={dim} is out of range for the input of shape {tuple(x.shape)} "
            f"entering {name!r}; accepted: {-x.ndim} to {x.ndim - 1}"
        )
    size = x.shape[dim]
    bad = [f for f in config.features if f >= size]
    if bad:
        raise ValueError(
            f"feature index {bad} out of range for dim {dim} of the input entering {name!r} "
            f"(shape {tuple(x.shape)}); accepted: 0 to {size - 1}"
        )
    index = torch.tensor(config.features, device=x.device)
    return list(x.index_select(dim, index).split(1, dim=dim))


def _make_mask(
    config: _Config, data: torch.Tensor, shape: tuple[int, ...], name: str
) -> torch.Tensor:
    reduced = config.reduce_fn(data)
    mask = config.mask_fn(reduced, **config.sparse_config)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask_fn must return a tensor, got {type(mask).__name__} for {name!r}")
    try:
        fits = torch.broadcast_shapes(mask.shape, shape) == torch.Size(shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask_fn returned a mask of shape {tuple(mask.shape)} for {name!r}, which does not "
            f"broadcast to the input of shape {shape} that it multiplies; return one value per "
            f"position of a sample, shape {shape[1:]} (reduce_fn reducing dim 0), or any "
            "shape that broadcasts"
        )
    return mask.detach()
