"""The baseline of bench_browser.py: a bare Streamlit page with one slider and one metric.

What any Streamlit page costs per slider move (websocket round trip, a script run, the
browser's redraw), with no prunelab in it. Served by ``bench_browser.py``; not part of the app.
"""

import streamlit as st

value = st.slider("Value", 0, 100, 50, 1, key="bare_value")
st.metric("Value", value)
