"""Transformer blocks: the repeated-block stack of a model, and each layer's block and projection.

A transformer is a stack of identical blocks: the largest ``nn.ModuleList`` whose modules all
have one type (``transformer.h`` in GPT-2, ``model.layers`` in Llama). A layer inside it is
named by its block number and its *projection*: ``q``, ``k``, ``v`` and ``o`` in attention,
``up``, ``gate`` and ``down`` in the MLP. GPT-2 fuses the query, key and value projections
into one ``c_attn`` layer, which is ``qkv`` here (its output columns are q, k and v side by
side); its ``c_proj`` is ``o`` under ``attn`` and ``down`` under ``mlp``, and ``c_fc`` is
``up``. A layer no rule names keeps its own name (its last part) as the projection.

>>> from torch import nn
>>> block = lambda: nn.ModuleDict({"q_proj": nn.Linear(2, 2), "down_proj": nn.Linear(2, 2)})
>>> net = nn.Module()
>>> net.layers = nn.ModuleList([block(), block()])
>>> block_stack(net)[0]
'layers'
>>> layer_group(net, "layers.1.down_proj.weight")
(1, 'down')
"""

from __future__ import annotations

from torch import nn

__all__ = ["PROJECTIONS", "block_stack", "layer_group"]

PROJECTIONS = ("q", "k", "v", "qkv", "o", "up", "gate", "down")
# a layer's own name -> its projection; names shared by attention and MLP (GPT-2's c_proj,
# BERT's dense) are told apart by the module above them
_NAMES = {
    "q_proj": "q",
    "query": "q",
    "q": "q",
    "q_lin": "q",
    "k_proj": "k",
    "key": "k",
    "k": "k",
    "k_lin": "k",
    "v_proj": "v",
    "value": "v",
    "v": "v",
    "v_lin": "v",
    "c_attn": "qkv",
    "qkv_proj": "qkv",
    "query_key_value": "qkv",
    "Wqkv": "qkv",
    "qkv": "qkv",
    "o_proj": "o",
    "out_proj": "o",
    "out_lin": "o",
    "o": "o",
    "up_proj": "up",
    "c_fc": "up",
    "fc1": "up",
    "w1": "up",
    "fc_in": "up",
    "dense_h_to_4h": "up",
    "gate_proj": "gate",
    "w3": "gate",
    "down_proj": "down",
    "fc2": "down",
    "w2": "down",
    "fc_out": "down",
    "dense_4h_to_h": "down",
}
_ATTENTION = ("attn", "attention", "self_attn", "self_attention", "mixer")


def block_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The name and modules of the model's repeated-block stack, or None if it has none.

    The largest (by parameters) ``nn.ModuleList`` of at least two modules of one type.
    """
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size and (best is None or size > best[0]):
            best = (size, name, module)
    return None if best is None else (best[1], best[2])


def _projection(path: list[str]) -> str:
    name = path[-1]
    above = path[-2] if len(path) > 1 else ""
    if name == "dense" and above == "intermediate":
        return "up"  # BERT's MLP: intermediate.dense, then output.dense
    if name in ("c_proj", "dense", "proj"):
        attention = any(p in _ATTENTION or p.startswith("attn") for p in path[:-1])
        if name == "dense" and above == "output" and "attention" not in path:
            return "down"  # BERT: attention.output.dense is o, output.dense is down
        return "o" if attention else "down"
    return _NAMES.get(name, name)


def layer_group(model: nn.Module, fqn: str, stack: str | None = None) -> tuple[int, str] | None:
    """``(block, projection)`` of the weight ``fqn``, or None outside the block stack.

    ``stack`` is the stack's name when already known (:func:`block_stack`), saving a search.
    """
    if stack is None:
        found = block_stack(model)
        if found is None:
            return None
        stack = found[0]
    prefix = stack + "." if stack else ""
    if not fqn.startswith(prefix):
        return None
    parts = fqn[len(prefix) :].split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), _projection(parts[1:-1])
