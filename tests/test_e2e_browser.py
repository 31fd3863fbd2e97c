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
from urllib.parse import urlencode, urlparse

import pandas as pd
import pytest
from conftest import (
    CHROMIUM,
    CRAFTED_IMAGES,
    crafted_images,
    fake_finished_run,
    new_tab,
    selected,
    settle,
    shot,
    wait_for,
)

from cifarnet.analysis.curves import curves_frame
from cifarnet.runs.experiments import list_experiments
from cifarnet.runs.folders import read_run
from cifarnet.runs.monitor import live_run_ids, newest_live_run
from harness import dashboard_server

LONG_RUN = "subset=20&epochs=200&batch_size=16&eval_every=3&eval_subset=10"  # minutes: still live when stopped
TINY_RUN = "subset=20&epochs=30&batch_size=16&eval_every=3&eval_subset=10"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture
def server(tmp_path, data_dir):
    """The real dashboard on a free port with its own runs folder; yields (url, runs folder)."""
    runs = tmp_path / "runs"
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        yield url, runs


def points(page, index: int) -> int:
    """Points drawn in the ``index``-th Plotly chart on the page (all its traces)."""
    return (
        page.locator(".js-plotly-plot")
        .nth(index)
        .evaluate("el => (el._fullData || []).reduce((n, trace) => n + (trace._length || 0), 0)")
    )


def click_cell(page, true_row: int, predicted_col: int, classes: int = 10) -> None:
    """Click the centre of one confusion-matrix cell (rows: true class, columns: predicted)."""
    chart = page.locator(".js-plotly-plot").filter(has_text="Confusion matrix")
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(
        box["x"] + box["width"] * (predicted_col + 0.5) / classes, box["y"] + box["height"] * (true_row + 0.5) / classes
    )


@pytest.mark.slow
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
    while (now := points(page, 2)) <= max(first, 2):  # read once: a rerun may be redrawing the chart
        assert time.time() < deadline, "the live accuracy curve did not gain points"
        page.wait_for_timeout(500)
    assert now > first
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


def heading(page) -> str:
    """The followed run's title line on the Train page (``Run <id> · <status>``)."""
    return page.get_by_role("heading", name="Run").first.inner_text()


@pytest.mark.slow
def test_two_tabs_each_follow_and_stop_their_own_run(server, browser):
    """Tab A launches a BN run, tab B a GN run: each shows its own, and A's Stop stops A's run only."""
    url, runs = server
    tab_a, tab_b = new_tab(browser, 1400, 1000), new_tab(browser, 1400, 1000)
    tab_a.goto(f"{url}/train?{LONG_RUN}")
    tab_a.get_by_role("button", name="Launch run").click()
    tab_a.get_by_text(" · running").wait_for(timeout=90_000)
    (run_a,) = live_run_ids(runs)
    assert f"run={run_a}" in tab_a.url  # a reload keeps following it
    tab_a.get_by_text("Shown because you launched it in this tab").wait_for()
    shot(tab_a, "06-tab-a-launched", full_page=False)  # progress bar and curves above the fold at 1400x1000
    # the live fragment redraws every second: a box read during a redraw is None, so read until one is there
    bar = wait_for(lambda: tab_a.get_by_test_id("stProgress").bounding_box(), timeout=30)
    curves = wait_for(lambda: tab_a.locator(".js-plotly-plot").last.bounding_box(), timeout=30)
    assert bar["y"] + bar["height"] < 1000 and curves["y"] + 0.8 * curves["height"] < 1000

    tab_b.goto(f"{url}/train?{LONG_RUN}&norm=gn")
    tab_b.get_by_text(f"{run_a}").first.wait_for()  # before launching, B shows the live run, and says why
    tab_b.get_by_text("it is the newest run training").wait_for()
    tab_b.get_by_role("button", name="Launch run").click()
    deadline = time.time() + 90
    while len(live_run_ids(runs)) < 2:
        assert time.time() < deadline, "tab B's run did not start"
        time.sleep(0.3)
    run_b = next(run for run in live_run_ids(runs) if run != run_a)
    assert read_run(runs / run_b).config["norm"] == "gn" and read_run(runs / run_a).config["norm"] == "bn"
    tab_b.get_by_role("heading", name=f"{run_b} · running").wait_for(timeout=90_000)
    tab_b.get_by_text("Shown because you launched it in this tab").wait_for()

    tab_a.get_by_text(f"Also training: {run_b}").wait_for(timeout=30_000)  # A still shows A, and offers B
    assert run_a in heading(tab_a) and run_b not in heading(tab_a)
    tab_a.get_by_role("button", name="Stop run").click()
    tab_a.get_by_text("Stopped on request").wait_for(timeout=90_000)
    assert read_run(runs / run_a).status == "stopped"
    assert read_run(runs / run_b).status == "running"  # the other tab's run trains on
    tab_b.get_by_role("heading", name=f"{run_b} · running").wait_for()  # and tab B still shows it
    shot(tab_a, "07-tab-a-stopped")

    tab_a.reload()  # the address names the run: a reload shows it again, not the live one
    tab_a.get_by_text("Stopped on request").wait_for(timeout=60_000)
    assert run_a in heading(tab_a)
    tab_a.get_by_text("Shown because the page's address names it").wait_for()
    tab_a.get_by_role("button", name="Show it").click()  # pick the other live run
    tab_a.get_by_role("heading", name=run_b).wait_for(timeout=30_000)
    tab_a.get_by_role("button", name="Stop run").click()
    deadline = time.time() + 90
    while read_run(runs / run_b).status == "running":
        assert time.time() < deadline, "the picked run did not stop"
        time.sleep(0.3)
    assert read_run(runs / run_b).status == "stopped"


class FrameCounter:
    """Websocket messages the page receives from the server: an idle page that does not poll gets none."""

    def __init__(self, page) -> None:
        self.count = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._seen))

    def _seen(self, _frame) -> None:
        self.count += 1

    def during(self, page, seconds: float) -> int:
        before = self.count
        page.wait_for_timeout(seconds * 1000)
        return self.count - before


def boxes_overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


@pytest.mark.slow
def test_finished_runs_read_right_and_nothing_polls(tmp_path, data_dir, browser):
    """With only finished runs: the Train page shows the newest without polling, the Runs page's legend stays clear
    of its chart titles, and the Misclassified grid shows its tiles at the stated size in aligned rows."""

    from cifarnet.data.cifar10 import load_cifar10

    runs = tmp_path / "runs"
    runs.mkdir()
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    names = [f"finished-run-number-{i}" for i in range(5)]
    for name in names:
        fake_finished_run(runs, labels, name=name)
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        page = new_tab(browser, 1400, 1000)
        frames = FrameCounter(page)
        page.goto(f"{url}/train")
        page.get_by_text("Shown because it is the newest run; none is training").wait_for()
        assert names[-1] in heading(page) and f"run={names[-1]}" in page.url
        page.get_by_role("link", name="All runs").wait_for()
        settle(page)  # the first run of the page has drawn everything (a loaded machine takes seconds)
        assert frames.during(page, 4.5) == 0  # a finished run is not polled

        page.get_by_role("link", name="Runs").first.click()
        page.get_by_text("Compare learning curves").wait_for()
        picker = page.get_by_test_id("stMultiSelect").first
        for name in names:
            picker.locator("input").fill(name)
            page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_timeout(2500)
        shot(page, "08-runs-legends", full_page=False)
        for chart in page.locator(".js-plotly-plot").all()[:2]:
            legend, title = chart.locator("g.legend").bounding_box(), chart.locator(".gtitle").bounding_box()
            axis = chart.locator(".xtitle").bounding_box()
            assert legend and not boxes_overlap(legend, title) and not boxes_overlap(legend, axis)
        assert frames.during(page, 4.5) == 0  # no run is training: the Runs page does not poll either
        page.get_by_role("slider").first.focus()
        page.keyboard.press("End")  # strongest smoothing
        page.get_by_text("0.99").first.wait_for()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download these curves (CSV)").click()
        exported = pd.read_csv(download.value.path())
        recorded = curves_frame([read_run(runs / name) for name in names], ("test_acc", "train_loss"))
        merged = exported.merge(recorded, on=["run", "metric", "step"], suffixes=("", "_recorded"))
        assert len(merged) == len(recorded) and (merged["value"] - merged["value_recorded"]).abs().max() < 1e-9

        page.get_by_role("link", name="Misclassified").click()
        page.get_by_text("Pixels are enlarged 3x (96x96)").wait_for()
        page.get_by_text("mistakes on 10,000 test images").wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stImage] img')]"
            ".filter(e => e.naturalWidth === 96).length >= 32"
        )  # every tile loaded
        tiles = [
            box
            for box in page.locator("[data-testid=stImage] img").evaluate_all(
                "els => els.map(e => [e.naturalWidth, e.getBoundingClientRect().width, e.getBoundingClientRect().top])"
            )
            if box[0] == 96
        ]
        assert len(tiles) == 32 and all(abs(width - 96) < 0.5 for _, width, _ in tiles)  # shown at the stated 3x
        tops = [top for _, _, top in tiles]
        assert all(len({round(t) for t in tops[row : row + 8]}) == 1 for row in range(0, 32, 8))  # rows line up
        shot(page, "09-misclassified-grid")


def test_hostile_link_and_uploads_show_as_plain_messages(server, page):
    """Issue 15.11: a link's values are literal, short text: no link or image from them in the sidebar, and the
    browser fetches nothing from the address they name. Issue 15.10: crafted uploads on Predict each get one
    message, never Streamlit's exception box."""
    url, _ = server
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    injected = {
        "name": "[click here](https://example.com)",
        "seed": "![x](http://127.0.0.1:9/x)",
        "lr": "9" * 20_000,
    }  # the server takes requests up to 64 KB; AppTest covers 100 KB
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
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}]
        )
        as_drawn = re.compile("\u2060?".join(map(re.escape, f"{name}: ")))  # joiners may sit after ":"
        message = page.get_by_test_id("stMain").get_by_test_id("stAlert").filter(has_text=as_drawn)
        message.wait_for()
        assert "not an image this app can read" in message.inner_text(), message.inner_text()
        assert page.get_by_test_id("stException").count() == 0 and message.locator("a, img").count() == 0
    shot(page, "06-predict-hostile-input")
    assert not [address for address in requested if urlparse(address).port == 9], requested


@pytest.mark.slow
def test_compare_norms_queues_three_runs_from_the_train_page(tmp_path, data_dir, page, monkeypatch):
    """Compare norms with a one-run limit: the table shows one run training and two queued; Cancel ends one."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    runs = tmp_path / "runs"
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        page.goto(f"{url}/train?{LONG_RUN}")
        page.get_by_role("button", name="Compare norms").click()
        page.get_by_text("Queued runs start by themselves").wait_for(timeout=60_000)
        (experiment,) = [e for e in list_experiments(runs) if not e.shipped]
        assert list(experiment.variants) == ["norm=bn", "norm=ln", "norm=gn"]
        bn = experiment.variants["norm=bn"][0]
        wait_for(lambda: read_run(bn).status == "running", timeout=120)
        page.get_by_text(f"Run {bn.name} · running").wait_for(timeout=30_000)  # this tab follows the first run
        statuses = {label: read_run(paths[0]).status for label, paths in experiment.variants.items()}
        assert statuses == {"norm=bn": "running", "norm=ln": "queued", "norm=gn": "queued"}
        page.get_by_test_id("stDataFrame").wait_for()
        shot(page, "11-compare-norms-queued")
        gn = experiment.variants["norm=gn"][0].name
        page.get_by_role("button", name=f"Cancel {gn}").click()
        page.get_by_role("button", name=f"Cancel {gn}").wait_for(state="detached")
        assert read_run(runs / gn).status == "cancelled"
        assert read_run(experiment.variants["norm=ln"][0]).status == "queued"
        other = new_tab(page.context.browser)  # a reload, or after a dashboard restart: the state is in the folder
        other.goto(f"{url}/train")
        other.get_by_text(f"Experiment {experiment.name}").wait_for()
        other.get_by_role("button", name=f"Cancel {experiment.variants['norm=ln'][0].name}").wait_for()
