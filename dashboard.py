"""cifarnet dashboard: ``streamlit run dashboard.py``.

Streamlit runs this file on every rerun, before the chosen page: it sets the layout,
draws the shared sidebar (whose settings live in the URL) and hands over to the page.
Pages under ``app_pages/`` stay thin; the work is done by the ``cifarnet`` package.
"""

from cifarnet.ui.app import main

main()
