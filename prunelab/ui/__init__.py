"""The Streamlit app's shared parts: state keys, cached engine calls, the sidebar.

This is the only package (with app.py and pages/) that imports streamlit.
"""
