"""The baseline of bench_browser.py: a bare Streamlit page with one slider and one metric.

What any Streamlit page costs per slider move (websocket round trip, a script run, the
browser's redraw), with no prunelab in it. Served by ``bench_browser.py``; not part of the app.

With ``PRUNELAB_BARE_FIGURE=1`` in its environment the page also redraws one plotly heatmap
per move (``bench_browser.py --baseline figure``): 32 x 72 cells whose values follow the
slider, about the size of a digits-cnn layer. That is the least a page whose slider changes a
weight heatmap must pay, with nothing of prunelab in it.
"""

import os

import streamlit as st

value = st.slider("Value", 0, 100, 50, 1, key="bare_value")
st.metric("Value", value)
if os.environ.get("PRUNELAB_BARE_FIGURE") == "1":
    import numpy as np
    import plotly.graph_objects as go

    cells = np.random.default_rng(value).standard_normal((32, 72))
    st.plotly_chart(go.Figure(go.Heatmap(z=cells, colorscale="RdBu")), key="bare_figure")
