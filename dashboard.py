"""cifarnet dashboard: ``streamlit run dashboard.py``.

Streamlit runs this file on every rerun, before the chosen page: it sets the layout,
draws the shared sidebar (whose settings live in the URL) and hands over to the page.
Pages under ``pages/`` stay thin; the work is done by the ``cifarnet`` package.
"""

import streamlit as st

from cifarnet.ui import sidebar

st.set_page_config(page_title="cifarnet lab", page_icon="🧪", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/train.py", title="Train", icon="🚀"),
    st.Page("pages/runs.py", title="Runs", icon="📈"),
    st.Page("pages/receptive_field.py", title="Receptive field", icon="🔭"),
    st.Page("pages/model.py", title="Model", icon="🧱"),
    st.Page("pages/misclassified.py", title="Misclassified", icon="❌"),
    st.Page("pages/predict.py", title="Predict", icon="🔮"),
]

page = st.navigation(PAGES, position="top")
sidebar.render()
page.run()
