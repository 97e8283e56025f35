"""The pipeline: score -> select -> apply.

:mod:`.targets` lists what can be pruned, :mod:`.criteria` scores it (with :mod:`.calibration`
for data-driven scores), :mod:`.select` and :mod:`.granularity` turn scores into
:class:`~.masks.Masks`, :mod:`.strategies` names the combinations, :mod:`.pruner` runs them,
and :mod:`.apply` uses masks without changing the model. The public names are offered at the
top level (``prunelab.prune``, ``prunelab.Masks``, ...).
"""
