"""Streamlit-facing helpers for ``dashboard.py`` and ``app_pages/``: the app's frame (``app``), the shared
sidebar (``sidebar``), settings as URL query parameters (``query``), charts (``charts``), shared widgets
and cached loads (``common``) and the Inside page's pieces (``inside``). Only this package (and the pages)
import Streamlit, so the rest of ``cifarnet`` stays usable from the command line and tests without it. It
may import every other part of ``cifarnet`` except :mod:`cifarnet.cli`.
"""
