"""The Inside page and the gallery's Grad-CAM in a real browser: server process + headless Chromium.

First with the shipped runs and no data set (an empty data folder): upload a picture,
see its Grad-CAM and feature maps, the three shipped norms side by side, and the
activation statistics. Then the Misclassified gallery: switch Grad-CAM on and follow a
picture's link to its Inside view in a new tab. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlparse

import pytest
import torch
from conftest import CHROMIUM, fake_finished_run, image_bytes, selected, settle, shot
from PIL import Image

from cifarnet.data.cifar10 import load_cifar10
from cifarnet.runs.folders import PRETRAINED_DIR
from cifarnet.training.checkpoint import load_model
from harness import dashboard_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium"),
]
SLOW = 120_000  # the first visit loads models and measures 3 x 256 pictures on a busy 2-core machine


def test_inside_without_data_upload_three_norms_and_statistics(tmp_path, page):
    empty = tmp_path / "no-data"
    empty.mkdir()
    picture = tmp_path / "plane.png"
    sky = Image.new("RGB", (96, 96), (90, 150, 220))
    sky.paste((235, 235, 235), (20, 40, 76, 56))  # a pale body across a blue sky
    picture.write_bytes(image_bytes(sky))
    with dashboard_server(tmp_path / "runs", empty, tmp_path / "server.log") as url:
        page.goto(f"{url}/inside")
        page.get_by_text("Upload a picture to look inside the network").wait_for(timeout=SLOW)
        page.locator("input[type=file]").set_input_files(str(picture))
        page.get_by_text("Grad-CAM: ", exact=False).first.wait_for(timeout=SLOW)
        page.get_by_text("One scale for all channels").wait_for(timeout=SLOW)
        settle(page, SLOW)
        assert page.get_by_text("plane.png").first.is_visible()
        assert page.get_by_test_id("stImage").count() >= 4  # picture, two Grad-CAMs, the feature maps
        assert "run=s10-bn" in page.url and "index=" not in page.url  # an upload does not travel in a link
        shot(page, "21-inside-upload")

        page.get_by_role("tab", name="All three norms").click()
        captions = page.get_by_text("Grad-CAM for ", exact=False)
        for name in ("s10-bn (shipped)", "s10-ln (shipped)", "s10-gn (shipped)"):
            page.get_by_role("heading", name=name).wait_for()
        assert captions.filter(has_text="at body.c4").count() == 3
        shot(page, "22-inside-three-norms")

        page.get_by_role("tab", name="Activation statistics").click()
        page.get_by_text("synthetic pattern pictures").wait_for(timeout=SLOW)
        charts = page.locator(".js-plotly-plot").filter(has_text="norm layer")
        charts.first.wait_for(timeout=SLOW)
        relu = page.locator(".js-plotly-plot").filter(has_text="After each ReLU")
        relu.first.wait_for(timeout=SLOW)
        norm_points = charts.first.evaluate(
            "el => (el._fullData || []).reduce((n, trace) => n + (trace._length || 0), 0)"
        )
        shipped = load_model(PRETRAINED_DIR / "s10-bn" / "model.pt")
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in shipped.modules())
        assert norms == 11 and norm_points == 3 * 2 * 2 * norms  # 3 models x 2 panels x before/after x each norm layer
        shot(page, "23-inside-statistics")


@pytest.mark.slow
def test_misclassified_gradcam_switch_links_to_inside(tmp_path, data_dir, page):
    runs = tmp_path / "runs"
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    mine = fake_finished_run(runs, labels, wrong_every=7)  # every 7th test image: true class c taken for c+3
    shutil.copy(PRETRAINED_DIR / "s9-gn" / "model.pt", mine / "model.pt")
    with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
        page.goto(f"{url}/misclassified?norm=ln")
        page.get_by_text("Misclassified test images").wait_for(timeout=SLOW)
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Run", exact=True)).click()
        page.get_by_role("option", name="mine", exact=True).click()
        page.get_by_text(f"{len(labels[::7]):,} of {len(labels[::7]):,} mistakes").wait_for(timeout=SLOW)
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("True class", exact=True)).click()
        page.get_by_role("option", name="cat", exact=True).click()
        settle(page, SLOW)
        assert selected(page, "True class") == "cat"
        gallery = page.get_by_test_id("stImage").locator("img")
        plain = gallery.first.get_attribute("src")
        page.get_by_text("Grad-CAM", exact=True).click()
        settle(page, SLOW)
        page.wait_for_function(
            "src => document.querySelector('[data-testid=stImage] img').src.indexOf(src) < 0", arg=plain, timeout=SLOW
        )
        assert gallery.count() == min(32, int((labels[::7] == 3).sum()))
        shot(page, "24-misclassified-gradcam")

        link = page.get_by_test_id("stImage").locator("a").first
        query = parse_qs(urlparse(link.get_attribute("href")).query)
        assert query["run"] == ["mine"] and query["norm"] == ["ln"]
        with page.context.expect_page() as opened:
            link.click()
        inside = opened.value
        inside.set_viewport_size({"width": 1440, "height": 1400})
        this_model = inside.get_by_role("tabpanel", name="This model")
        this_model.get_by_text(f"test image #{query['index'][0]}", exact=True).wait_for(timeout=SLOW)
        settle(inside, SLOW)
        assert "run=mine" in inside.url and f"index={query['index'][0]}" in inside.url
        assert selected(inside, "Run") == "mine"
        assert inside.get_by_text("Grad-CAM: ", exact=False).count() == 2
        shot(inside, "25-inside-from-gallery-link")
