"""The Compare page in a real browser: server process + headless Chromium via Playwright.

A runs folder holds an experiment of fixture runs (two norms, two seeds of one, a failed third variant) whose
predictions are for the data folder's own test set, so the disagreement gallery shows pictures; then the shipped
experiment. Screenshots go to ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CHROMIUM, fixture_run, settle, shot, write_experiment

from cifarnet.data.cifar10 import load_cifar10
from harness import dashboard_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium"),
]


def test_compare_page_shows_table_curves_and_gallery(tmp_path, data_dir, page):
    runs = tmp_path / "runs"
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    some_wrong = np.ones(len(labels), bool)
    some_wrong[::97] = False  # 104 images, every class among them
    fixture_run(runs, "bn-0", "bn", 0, test=0.86, train=0.90, tta=0.87, wall=60.0, labels=labels)
    fixture_run(runs, "bn-1", "bn", 1, test=0.84, train=0.91, tta=0.85, wall=62.0, labels=labels)
    fixture_run(runs, "ln-0", "ln", 0, test=0.80, train=0.88, tta=0.81, wall=70.0, labels=labels, right=some_wrong)
    fixture_run(runs, "gn-0", "gn", 0, test=0.5, train=0.5, tta=0.5, wall=5.0, labels=labels, status="failed")
    write_experiment(runs, "norms", {"norm=bn": ["bn-0", "bn-1"], "norm=ln": ["ln-0"], "norm=gn": ["gn-0"]})
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        page.goto(f"{url}/compare")
        page.get_by_text("1 run(s) not in the figures").wait_for()
        assert "experiment=norms" in page.url  # the newest experiment, kept in the link
        grid = page.get_by_test_id("stDataFrame").first  # the variants' table; the runs' table follows it
        grid.wait_for()
        for text in ("85.00 ± 1.41 %", "80.00 %", "norm=ln"):  # bn: 86 and 84 -> sample std 1.414
            grid.get_by_text(text, exact=True).first.wait_for(state="attached")
        page.get_by_text("Best: norm=bn at 85.00 ± 1.41 % test accuracy.").wait_for()
        charts = page.locator(".js-plotly-plot")
        for title in ("test accuracy (%)", "train loss", "test loss", "Per-class accuracy", "Confusion difference"):
            charts.filter(has_text=title).first.wait_for()
        bands = [
            chart.evaluate("el => el._fullData.filter(t => t.fill === 'toself').length")
            for chart in charts.filter(has_text="test accuracy (%)").all()
        ]  # run by run, then per variant
        assert bands[-1] == 1  # a seed band for bn (two seeds), none for ln (one)
        page.get_by_text("104 test images that norm=bn gets right in every seed and norm=ln gets wrong").wait_for()
        settle(page)
        pictures = page.locator("[data-testid=stImage] img")
        pictures.nth(23).wait_for(state="attached")  # the gallery draws after the text above it, under load later
        assert pictures.count() == 24
        assert page.get_by_text("norm=ln says", exact=False).count() >= 24  # each picture says what ln guessed
        shot(page, "30-compare-experiment")
        charts.filter(has_text="Confusion difference").first.scroll_into_view_if_needed()
        shot(page, "31-compare-pair", full_page=False)
        pictures.nth(23).scroll_into_view_if_needed()
        shot(page, "32-compare-gallery", full_page=False)

        picker = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Experiment", exact=True))
        picker.scroll_into_view_if_needed()
        picker.click()
        page.get_by_role("option", name="shipped: s10 with BN, LN and GN, seeds 0 and 1").click()
        page.get_by_text("Best: norm=bn at 88.20 ± 0.14 % test accuracy.").wait_for()
        assert "experiment=shipped" in page.url
        page.get_by_text("110 test images that norm=bn gets right in every seed").wait_for()
        settle(page)
        shot(page, "33-compare-shipped")
        page.get_by_text("Where they disagree").scroll_into_view_if_needed()
        shot(page, "34-compare-shipped-gallery", full_page=False)
