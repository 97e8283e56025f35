"""Where activations are observed: layer names, the default layers, and the hooks that read them.

Weight pruning zeroes parameters; activation pruning zeroes values that flow between layers,
which depend on the input. This package looks at those values and prunes them.

**Where activations are observed.** A *layer* here is a module fqn, and names that module's
**output** (the first tensor of it, for modules such as LSTM that return tuples).
``"<fqn>:input"`` names the first positional input entering the module instead. By default
(:func:`activation_layers`) the outputs of the prunable layers (Linear, Conv, ConvTranspose,
LSTM/GRU/RNN), of activation-function modules (ReLU, GELU, ...) and of pooling layers are
observed. Models that apply ``torch.relu`` functionally have no ReLU module: the input of
the next layer (``"fc2:input"``) is where their rectified activations can be seen.

**Channels** lie on dim 1 for convolutions, pooling and normalisation layers, and last for
Linear and recurrent layers; an activation function follows the layout of its input (dim 1
from 4-D on, else last). :func:`prunelab.runtime.hooks.channel_axis` decides.

Nothing here modifies a model it was given: statistics and thresholding hook a structural
copy or a full copy, never the model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..runtime.hooks import POOLING, Hook, PreHook, first_tensor, replace_first

__all__ = ["INPUT_SUFFIX", "activation_layers"]

INPUT_SUFFIX = ":input"
_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)
_NOT_ACTIVATIONS = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == nn.modules.activation.__name__ and not isinstance(
        module, _NOT_ACTIVATIONS
    )


def activation_layers(model: nn.Module, *, inputs: bool = False) -> list[str]:
    """The layers whose activations are observed by default, in model order.

    These are the outputs of prunable layers (Linear, Conv, ConvTranspose, LSTM/GRU/RNN), of
    activation-function modules and of pooling layers. With ``inputs=True`` the input of every
    prunable layer is listed too, as ``"<fqn>:input"``, just before its output.

    >>> activation_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), inputs=True)
    ['0:input', '0', '1']
    """
    names = []
    for fqn, module in model.named_modules():
        if not fqn:
            continue
        if isinstance(module, _PRUNABLE):
            if inputs:
                names.append(fqn + INPUT_SUFFIX)
            names.append(fqn)
        elif isinstance(module, POOLING) or _is_activation(module):
            names.append(fqn)
    return names


@dataclass(frozen=True)
class _Point:
    name: str
    module: str
    is_input: bool


def _split(name: str) -> tuple[str, bool]:
    if name.endswith(INPUT_SUFFIX):
        return name[: -len(INPUT_SUFFIX)], True
    return name, False


def _unknown_layers(model: nn.Module, bad: list[str]) -> ValueError:
    valid = activation_layers(model, inputs=True) or [n for n, _ in model.named_modules() if n]
    shown = ", ".join(valid[:24]) + (", ..." if len(valid) > 24 else "")
    return ValueError(
        f"unknown layer(s) {bad}: a layer is a module name of the model (its output), or "
        f"'<name>{INPUT_SUFFIX}' for what enters it; accepted, e.g.: {shown}"
    )


def _points(model: nn.Module, layers: str | Sequence[str] | None) -> list[_Point]:
    if layers is None:
        names = activation_layers(model)
        if not names:
            raise ValueError(
                "the model has no Linear, Conv, RNN, activation or pooling module to observe; "
                "name the modules with layers=[...]"
            )
    elif isinstance(layers, str):
        names = [layers]
    else:
        names = list(layers)
        if not names:
            raise ValueError("layers is empty; give at least one module name")
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(f"layers must be module names (str), got {wrong[:3]}")
    modules = dict(model.named_modules())
    points, bad = [], []
    for name in dict.fromkeys(names):
        module, is_input = _split(name)
        if not module or module not in modules:
            bad.append(name)
        else:
            points.append(_Point(name, module, is_input))
    if bad:
        raise _unknown_layers(model, bad)
    return points


def _observe(
    model: nn.Module,
    points: Sequence[_Point],
    record: Callable[[_Point, nn.Module, torch.Tensor], torch.Tensor | None],
) -> tuple[dict[str, Hook], dict[str, PreHook]]:
    """Hooks calling ``record(point, module, tensor)`` on each point's tensor; a tensor it
    returns replaces the activation."""
    outputs: dict[str, list[_Point]] = {}
    inputs: dict[str, list[_Point]] = {}
    for point in points:
        (inputs if point.is_input else outputs).setdefault(point.module, []).append(point)

    def record_all(
        chosen: list[_Point], module: nn.Module, tensor: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Record each point in turn; the last replacement (if any) is what flows on."""
        replaced = None
        for point in chosen if tensor is not None else ():
            new = record(point, module, tensor if replaced is None else replaced)
            replaced = new if new is not None else replaced
        return replaced

    def output_hook(chosen: list[_Point]) -> Hook:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            replaced = record_all(chosen, module, first_tensor(output))
            return None if replaced is None else replace_first(output, replaced)

        return hook

    def input_hook(chosen: list[_Point]) -> PreHook:
        def hook(module: nn.Module, args: tuple) -> object:
            replaced = record_all(chosen, module, first_tensor(args))
            return None if replaced is None else (replaced, *args[1:])

        return hook

    return (
        {name: output_hook(chosen) for name, chosen in outputs.items()},
        {name: input_hook(chosen) for name, chosen in inputs.items()},
    )
