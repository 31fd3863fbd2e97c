"""The Compare page's run-by-run views in a real browser (server process + headless Chromium via Playwright): the
filters are the parallel-coordinates brushes and filter the table; smoothing and log-x change the curves; the best
value is right on a hand-made run."""

from __future__ import annotations

import pytest
from conftest import CHROMIUM, hand_made_sweep, settle, shot

from harness import dashboard_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium"),
]
CURVES = "el => el._fullData.map(t => ({name: t.name, y: Array.from(t.y || [])}))"


def test_filters_brush_the_parallel_coordinates_and_filter_table_and_curves(tmp_path, data_dir, page):
    runs = tmp_path / "runs"
    runs.mkdir()
    hand_made_sweep(runs)
    page.set_default_timeout(60_000)
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        page.goto(f"{url}/compare?experiment=sw")
        page.get_by_text("Run by run").wait_for()
        settle(page)
        grid = page.get_by_test_id("stDataFrame").filter(has_text="best at step")
        for text in ("bn-slow", "gn-slow", "70", "median rule: x"):  # cells as the grid keeps them, unformatted
            grid.get_by_text(text, exact=True).first.wait_for(state="attached")
        parallel = page.locator(".js-plotly-plot").filter(has=page.locator(".parcoords"))
        assert parallel.evaluate("el => el._fullData[0].dimensions.map(d => d.label)") == [
            "norm",
            "lr (log)",
            "best test acc",
            "final test acc",
        ]
        assert page.get_by_text("4 of 4 runs.").count() == 1
        shot(page, "40-sweep-views")

        norm = page.get_by_test_id("stMultiSelect").filter(has_text="norm")
        norm.locator("input").click()
        norm.locator("input").press("Backspace")  # removes the last value chosen, gn
        page.keyboard.press("Escape")
        page.get_by_text("2 of 4 runs.").wait_for()
        settle(page)
        grid.get_by_text("bn-fast", exact=True).first.wait_for(state="attached")
        assert grid.get_by_text("gn-slow", exact=True).count() == 0
        ranges = parallel.evaluate("el => el._fullData[0].dimensions[0].constraintrange")
        assert ranges is not None  # the filter is drawn as the norm axis' brush

        curves = page.locator(".js-plotly-plot").filter(has_text="test accuracy (%)").last
        before = curves.evaluate(CURVES)
        assert {t["name"] for t in before} == {"bn-slow", "bn-slow (raw)", "bn-fast", "bn-fast (raw)"}
        smoothed = next(t["y"] for t in before if t["name"] == "bn-slow")
        raw = next(t["y"] for t in before if t["name"] == "bn-slow (raw)")
        assert smoothed != raw  # smoothing 0.6 by default, the raw curve kept as the shadow
        slider = page.get_by_test_id("stSlider").filter(has_text="Smoothing").get_by_role("slider")
        slider.focus()
        slider.press("Home")
        settle(page)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')].some(el => el._fullData && "
            "el._fullData.length === 4 && JSON.stringify(el._fullData[1].y) === "
            "JSON.stringify(el._fullData[0].y))"
        )
        assert curves.evaluate("el => el._fullLayout.xaxis.type") == "linear"
        page.get_by_text("log x", exact=True).click()
        settle(page)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')].some(el => el._fullLayout && "
            "el._fullLayout.xaxis && el._fullLayout.xaxis.type === 'log')"
        )
        shot(page, "41-sweep-filtered-logx")
