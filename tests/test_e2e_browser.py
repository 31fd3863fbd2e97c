"""The real dashboard in a real browser: server process + headless Chromium via Playwright.

Scenario: open Train with a tiny configuration in the URL, pick GroupNorm in the
sidebar, launch, watch the live curve gain points, stop the run, then open the
Misclassified and Receptive field pages through the top navigation. Then hostile input: a
shared link whose values are Markdown, and crafted uploads on Predict. Screenshots go to
``test-artifacts/`` for a human to look at. Skipped only when Chromium is missing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest

from cifarnet.monitor import newest_live_run
from cifarnet.runs import read_run
from cifarnet.ui.server import CHROMIUM_ARGS, dashboard_server
from conftest import CRAFTED_IMAGES, crafted_images

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
TINY_RUN = "subset=20&epochs=30&batch_size=16&eval_every=3&eval_subset=10"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")


@pytest.fixture
def server(tmp_path, data_dir):
    """The real dashboard on a free port with its own runs folder; yields (url, runs folder)."""
    runs = tmp_path / "runs"
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        yield url, runs


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1440, "height": 1400})
        tab.set_default_timeout(30_000)
        yield tab
        browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(800)  # let plotly finish its transition
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def points(page, index: int) -> int:
    """Points drawn in the ``index``-th Plotly chart on the page (all its traces)."""
    return page.locator(".js-plotly-plot").nth(index).evaluate(
        "el => (el._fullData || []).reduce((n, trace) => n + (trace._length || 0), 0)")


def selected(page, label: str) -> str:
    """The value shown by the selectbox labelled ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    return box.get_by_role("combobox").input_value() or box.inner_text().split("\n")[-1]


def click_cell(page, true_row: int, predicted_col: int, classes: int = 10) -> None:
    """Click the centre of one confusion-matrix cell (rows: true class, columns: predicted)."""
    chart = page.locator(".js-plotly-plot").filter(has_text="Confusion matrix")
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (predicted_col + 0.5) / classes,
                     box["y"] + box["height"] * (true_row + 0.5) / classes)


def test_train_gn_live_stop_then_inspect(server, page):
    url, runs = server
    page.goto(f"{url}/train?{TINY_RUN}")
    page.get_by_role("button", name="Launch run").wait_for()
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("GN", exact=True).click()
    page.get_by_text("GN (2 groups)").wait_for()
    assert "norm=gn" in page.url and "subset=20" in page.url  # the link keeps the settings
    shot(page, "01-train-settings")

    page.get_by_role("button", name="Launch run").click()
    page.get_by_text(" · running").wait_for(timeout=90_000)
    run_id = newest_live_run(runs)
    assert run_id and read_run(runs / run_id).config["norm"] == "gn"
    charts = page.locator(".js-plotly-plot")
    charts.nth(2).wait_for()  # LR schedule, loss, accuracy
    first = points(page, 2)
    deadline = time.time() + 90
    while points(page, 2) <= max(first, 2):
        assert time.time() < deadline, "the live accuracy curve did not gain points"
        page.wait_for_timeout(500)
    assert points(page, 2) > first
    shot(page, "02-train-live")

    page.get_by_role("button", name="Stop run").click()
    page.get_by_text("Stopped on request").wait_for(timeout=60_000)
    assert read_run(runs / run_id).status == "stopped"
    shot(page, "03-train-stopped")

    page.get_by_role("link", name="Misclassified").click()
    page.get_by_text("Misclassified test images").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    mismatch = page.get_by_text("is not the one this run was evaluated on")  # synthetic data (no real copy)
    page.get_by_text("mistakes on 10,000 test images").or_(mismatch).wait_for()
    for _ in range(5):  # plotly binds its click handler a moment after it draws
        click_cell(page, true_row=5, predicted_col=3)  # dog predicted as cat
        page.wait_for_timeout(1500)
        if selected(page, "True class") == "dog":
            break
    assert (selected(page, "True class"), selected(page, "Predicted class")) == ("dog", "cat")
    shot(page, "04-misclassified")

    page.get_by_role("link", name="Receptive field").click()
    page.get_by_text("59 px").wait_for()
    assert sidebar.get_by_role("radio", name="GN").is_checked()  # settings survive page changes
    shot(page, "05-receptive-field")


def test_hostile_link_and_uploads_show_as_plain_messages(server, page):
    """Issue 15.11: a link's values are literal, short text: no link or image from them in the sidebar, and the
    browser fetches nothing from the address they name. Issue 15.10: crafted uploads on Predict each get one
    message, never Streamlit's exception box."""
    url, _ = server
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    injected = {"name": "[click here](https://example.com)", "seed": "![x](http://127.0.0.1:9/x)",
                "lr": "9" * 20_000}  # the server takes requests up to 64 KB; AppTest covers 100 KB
    page.goto(f"{url}/predict?{urlencode(injected)}")
    alerts = page.get_by_test_id("stSidebar").get_by_test_id("stAlert")
    alerts.nth(2).wait_for()
    shown = [alerts.nth(i).inner_text().replace("\u2060", "") for i in range(alerts.count())]  # invisible joiners
    assert len(shown) == 3 and all(len(text) < 400 for text in shown), shown
    assert "name='[click here](https://example.com)' is not allowed" in "\n".join(shown)
    assert "seed='![x](http://127.0.0.1:9/x)' is not a number" in "\n".join(shown)
    assert alerts.locator("a, img").count() == 0
    assert page.locator("a[href*='example.com'], img[src*='127.0.0.1:9']").count() == 0

    uploads = {name: CRAFTED_IMAGES[name] for name in ("bmp-header-size.bmp", "ppm-maxval.ppm", "photoshop.png")}
    uploads["cut.jpg"] = crafted_images(mutations=0)["JPEG-cut-60"]
    uploads["[f](http:127.0.0.1:9).png"] = CRAFTED_IMAGES["bmp-compression.bmp"]
    for name, content in uploads.items():
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}])
        as_drawn = re.compile("\u2060?".join(map(re.escape, f"{name}: ")))  # joiners may sit after ":"
        message = page.get_by_test_id("stMain").get_by_test_id("stAlert").filter(has_text=as_drawn)
        message.wait_for()
        assert "not an image this app can read" in message.inner_text(), message.inner_text()
        assert page.get_by_test_id("stException").count() == 0 and message.locator("a, img").count() == 0
    shot(page, "06-predict-hostile-input")
    assert not [address for address in requested if urlparse(address).port == 9], requested
