"""Streamlit-facing helpers for ``dashboard.py`` and ``app_pages/``: sidebar, charts, shared widgets.

Only this package (and the pages) import Streamlit; the rest of ``cifarnet`` stays
usable from the command line and tests without it.
"""
