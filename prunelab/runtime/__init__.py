"""Running a model without touching it: the layer everything else stands on.

Structural copies and functional forwards (:mod:`.functional`), device choice, batches of any
data (:mod:`.batches`), hooks held in context managers (:mod:`.hooks`), logits and metric totals
(:mod:`.metrics`), memory estimates (:mod:`.memory`), and files read and written safely
(:mod:`.files`, :mod:`.torchfiles`). Nothing here imports from the rest of prunelab.
"""
