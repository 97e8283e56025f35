"""The Streamlit app's shared parts: state keys, the sidebar, caches, page logic, errors.

``state`` names every session-state key; ``sidebar`` picks the model and data (an
``engine.Choice``); ``cache`` holds every cache of the app, each bounded; ``views`` holds each
page's logic, so that the files in pages/ only lay it out; ``errors`` is the one error boundary.
This is the only package (with app.py and pages/) that imports streamlit.
"""
