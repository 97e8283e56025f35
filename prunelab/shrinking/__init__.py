"""From channel masks to a physically smaller model, through the Torch-Pruning library.

Zeros alone do not make a model smaller or faster: dense kernels multiply by zero as fast as
by anything else. Removing whole output channels does. :func:`shrink` removes the channels
that channel masks prune, together with everything coupled to them, using Torch-Pruning's
dependency graph (residual adds, BatchNorm, depthwise convolutions, the next layer's input
channels).

Semantics (what "masked" and "shrunk" mean, so that the two agree):

* Layers coupled by the graph (e.g. every conv feeding the same residual add) must keep the
  same channels. A channel of such a *group* is removed only when **every** coupled layer
  with a mask prunes it; a channel that any coupled layer keeps survives everywhere (layers
  that pruned it keep their zero rows). Layers without a mask keep all their channels.
* Removing a channel also removes the coupled BatchNorm (or other per-channel) weight and bias
  entries, the biases, and the following layers' input channels. :func:`extend_channel_masks`
  returns masks that zero exactly those tensors, so the masked model computes what the shrunk
  one does (a removed channel's BatchNorm would otherwise still output its shift beta).
* Groups whose channels are the model's outputs (the classifier), or the model's input
  channels (a depthwise convolution, a norm or a residual add on the input itself), cannot
  lose channels; their pruned rows stay in as zeros.

* A grouped convolution keeps its groups: a channel goes only at a position that every group
  loses (as Torch-Pruning prunes them), so the union above is taken per position.
* A norm whose statistics span channels counts a zeroed channel, but not a removed one: a
  LayerNorm over channels (ConvNeXt) keeps all of its channels (pruned ones stay as zeros), a
  GroupNorm loses whole norm groups only (a group any channel of which is kept stays whole).
* Branches that run in training only (auxiliary classifiers) are traced in train mode and
  lose their channels too, so the shrunk model runs in train and eval mode.

:func:`shrink` checks that the shrunk model's output equals the masked (extended) model's and
raises with the largest difference if not; relative to scale, on two inputs, with the output
layers' inputs too, and never vacuously (:mod:`.check`). It checks on one sample of the
example input and a variant of it, centre-cropped where the model's output allows it (see
:func:`shrink`), because forward passes at full size were a large part of the time it takes.

The work is done in :mod:`.graph` (Torch-Pruning's dependency graph and the coupled groups),
:mod:`.plan` (what the masks remove, and the extended masks), :mod:`.check` (the output check)
and :mod:`.remove` (the channels taken out: :func:`shrink`).

>>> import torch
>>> from torch import nn
>>> from prunelab.core.masks import Masks
>>> from prunelab.shrinking import shrink
>>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
>>> keep = torch.tensor([True, False, True, False, True, True])
>>> masks = Masks({"0.weight": keep[:, None].expand(6, 4).clone()})
>>> small = shrink(net, masks, example_input=torch.randn(1, 4))
>>> small[0].out_features, small[2].in_features
(4, 4)
"""

from .._lazy import lazy_names

_NAMES = {
    "coupled_groups": ".graph",
    "ShrinkPlan": ".plan",
    "extend_channel_masks": ".plan",
    "plan_shrink": ".plan",
    "shrink": ".remove",
    "shrink_with_plan": ".remove",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
