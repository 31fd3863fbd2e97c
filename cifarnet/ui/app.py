"""The app's frame: page setup, navigation, the shared sidebar, then the chosen page.

``dashboard.py`` calls :func:`main`. Keeping the frame in a function lets tests start
the same app with any page as the landing page (``main("model")``): Streamlit's
``AppTest`` drops the sidebar on pages reached by ``switch_page``, unlike a browser.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from cifarnet.ui import sidebar

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"
PAGES: dict[str, tuple[str, str]] = {
    "home": ("Overview", ":material/home:"),
    "train": ("Train", ":material/rocket_launch:"),
    "runs": ("Runs", ":material/monitoring:"),
    "receptive_field": ("Receptive field", ":material/center_focus_strong:"),
    "model": ("Model", ":material/layers:"),
    "misclassified": ("Misclassified", ":material/cancel:"),
    "predict": ("Predict", ":material/image_search:"),
}


def page_path(name: str) -> str:
    """The file of page ``name``, as ``st.Page`` and ``st.page_link`` take it."""
    return str(PAGES_DIR / f"{name}.py")


def main(landing: str = "home") -> None:
    """Draw the frame and run the page the URL asks for (``landing`` when it asks for none)."""
    st.set_page_config(page_title="cifarnet lab", page_icon=":material/science:", layout="wide")
    pages = [st.Page(page_path(name), title=title, icon=icon, default=name == landing)
             for name, (title, icon) in PAGES.items()]
    page = st.navigation(pages, position="top")
    sidebar.render()
    page.run()
