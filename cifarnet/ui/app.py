"""The app's frame: page setup, navigation, the shared sidebar, then the chosen page.

``dashboard.py`` calls :func:`main`. The page files live in ``app_pages/``, not
``pages/``: Streamlit treats a folder named ``pages`` next to the entry script as an
old-style multipage app until ``st.navigation`` has run once in the server process, so
the first visit to a shared link such as ``/train?norm=gn`` would run the page alone,
without this frame and its sidebar.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from cifarnet.ui import access, sidebar
from cifarnet.ui.common import runs_notice

PAGES_DIR = Path(__file__).resolve().parents[2] / "app_pages"
PAGES: dict[str, tuple[str, str]] = {
    "home": ("Overview", ":material/home:"),
    "train": ("Train", ":material/rocket_launch:"),
    "runs": ("Runs", ":material/monitoring:"),
    "compare": ("Compare", ":material/compare_arrows:"),
    "receptive_field": ("Receptive field", ":material/center_focus_strong:"),
    "model": ("Model", ":material/layers:"),
    "misclassified": ("Misclassified", ":material/cancel:"),
    "predict": ("Predict", ":material/image_search:"),
    "inside": ("Inside", ":material/visibility:"),
}


def page_path(name: str) -> str:
    """The file of page ``name``, as ``st.Page`` and ``st.page_link`` take it."""
    return str(PAGES_DIR / f"{name}.py")


def main() -> None:
    """Draw the frame and run the page the URL asks for (the overview when it asks for none)."""
    st.set_page_config(page_title="cifarnet lab", page_icon=":material/science:", layout="wide")
    pages = [
        st.Page(page_path(name), title=title, icon=icon, default=name == "home")
        for name, (title, icon) in PAGES.items()
    ]
    page = st.navigation(pages, position="top")
    sidebar.render()
    runs_notice()
    access.notice()
    page.run()
