"""Page logic, one module per page: what each page computes, caches and keeps in state.

The files in pages/ only lay out widgets, charts and explanations; everything else they need
comes from here.
"""
