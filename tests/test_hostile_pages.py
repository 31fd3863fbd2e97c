"""No page renders anything it did not write (issue 25, section 3).

Every record field a page shows (run folder names, status errors, class names in ``results.json``, experiment names
and variant labels), every link parameter and an upload's file name is set to hostile text: Markdown images and
links, raw HTML (``<img>``, ``<a href>``, ``<b>``), Streamlit's ``:red[...]`` and 100 KB strings. Each payload
carries a sentinel (``pwn`` + a letter for where it came from + a digit for the payload) and points at 127.0.0.2, a
loopback address no page uses: were a payload interpreted, an element holding only its sentinel, an element with a
sentinel id or a 127.0.0.2 address, or a request to a host other than 127.0.0.1 would appear. A real server and a
real browser (Chromium, with a listener on every request) visit every page. The charts are checked as data too:
Plotly draws a subset of HTML in titles, legends, ticks and hover text.
"""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlencode, urlparse

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, fake_finished_run, image_bytes, settle, shot
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

from cifarnet.config import make_config
from cifarnet.data.cifar10 import load_cifar10
from cifarnet.errors import CifarnetError
from cifarnet.runs.experiments import plan_experiment
from cifarnet.runs.folders import PRETRAINED_DIR, create_run
from cifarnet.runs.records import read_results, write_json
from cifarnet.ui import charts
from harness import dashboard_server

SENTINEL = re.compile(r"pwn[a-z]\d")
BIG = "x" * 100_000  # a value: shown cut to 60 characters
LONG_MESSAGE = "y" * 100_000  # in a message (a run's error): shown cut to 400
SLOW = 60_000  # one page


def payloads(where: str) -> list[str]:
    """The hostile texts for one source (``where``: one letter), each with its own sentinel."""
    tag = f"pwn{where}"
    return [
        f"![{tag}1](http://127.0.0.2/{tag}1.png)",
        f"[{tag}2](http://127.0.0.2/{tag}2)",
        f"<img src=http://127.0.0.2/{tag}3.png>",
        f'<a href="http://127.0.0.2/{tag}4">{tag}4</a>',
        f"<b id={tag}5>{tag}5</b>",
        f"__{tag}6__",
        f":red[{tag}7]",
    ]


HOSTILE_CLASSES = [*payloads("c"), "cls8", "cls9", "cls10"]  # ten distinct names of at most 60 characters
# Folder names cannot hold "/": links and images written the way Markdown also accepts (http:host).
HOSTILE_FOLDERS = ["![pwnr1](http:127.0.0.2) __pwnr6__ <b id=pwnr5>pwnr5", "[pwnf2](http:127.0.0.2) :red[pwnf7]"]
HOSTILE_VARIANTS = [payloads("v")[3], payloads("v")[0], "__pwnv6__ <b id=pwnv5>pwnv5</b> " + BIG]
QUEUED = "q-__pwnq6__"  # a valid run id that reads as emphasis
EXPERIMENT = "x-__pwnx6__"


def hostile_results(path) -> None:
    """The run's results.json with hostile class names (valid ones: short and distinct)."""
    results, _ = read_results(path)
    results["classes"] = HOSTILE_CLASSES
    results["per_class_acc"] = dict(zip(HOSTILE_CLASSES, results["per_class_acc"].values()))
    write_json(path / "results.json", results)


def hostile_runs(runs_dir, labels: np.ndarray) -> None:
    """Finished runs with hostile class names, one in a hostile folder (the newest, so pages pick it first), a
    failed one with a 100 KB error, a queued run of a pending experiment with hostile labels, a folder named like
    a shipped run."""
    for name, wrong in (("fin-a", 7), ("fin-b", 3)):
        hostile_results(fake_finished_run(runs_dir, labels, name=name, wrong_every=wrong))
    failed = create_run(make_config({"name": "failed-run"}), runs_dir)
    error = " ".join(payloads("e")) + LONG_MESSAGE
    write_json(failed / "status.json", {"status": "failed", "pid": None, "error": error})
    failed.rename(runs_dir / HOSTILE_FOLDERS[1])
    queued = create_run(
        make_config({"name": QUEUED}), runs_dir, status={"status": "queued", "data_dir": str(runs_dir / "no-data")}
    )
    (runs_dir / ".experiments").mkdir()
    write_json(
        runs_dir / ".experiments" / f"{EXPERIMENT}.json",
        {
            "name": EXPERIMENT,
            "vary": {"norm": ["bn", "gn"]},
            "seeds": [0],
            "variants": dict(zip(HOSTILE_VARIANTS, [["fin-a"], ["fin-b"], [queued.name]])),
        },
    )
    shutil.copytree(PRETRAINED_DIR / "s10-bn", runs_dir / "s10-bn")  # made by hand: a shipped run's name
    newest = fake_finished_run(runs_dir, labels, name="newest")
    hostile_results(newest)
    shutil.copy(PRETRAINED_DIR / "s10-bn" / "model.pt", newest / "model.pt")
    newest.rename(runs_dir / HOSTILE_FOLDERS[0])


FIND_FOREIGN = """() => {
  const found = [];
  for (const el of document.querySelectorAll('*')) {
    const text = el.children.length === 0 ? el.textContent.trim() : '';
    if (/^pwn[a-z]\\d$/.test(text)) found.push(`${el.tagName}: ${text}`);
    for (const name of ['href', 'src', 'xlink:href', 'srcset', 'data']) {
      const value = el.getAttribute(name) || '';
      const anchor = name === 'href' && value.startsWith('#');  // Streamlit's own link to a header of this page
      // the app's own link to one of its pages, the hostile text percent-encoded in its query (a run's Inside link)
      const own = name === 'href' && /^[a-z_]+\\?[A-Za-z0-9_.~%&=+-]*$/.test(value);
      if (!own && (/127\\.0\\.0\\.2/.test(value) || (!anchor && /pwn/.test(value)))) {
        found.push(`${el.tagName} ${name}=${value}`);
      }
    }
    if (/^pwn[a-z]\\d$/.test(el.id)) found.push(`${el.tagName} id=${el.id}`);
  }
  for (const img of document.images) {
    if (!/^(data:|blob:|http:\\/\\/127\\.0\\.0\\.1[:/])/.test(img.src)) found.push(`IMG src=${img.src}`);
  }
  if (/x{61}/.test(document.body.innerText)) found.push('a value of more than 60 characters');
  if (/y{401}/.test(document.body.innerText)) found.push('a message of more than 400 characters');
  return found;
}"""


def foreign_elements(tab) -> list[str]:
    return tab.evaluate(FIND_FOREIGN)


# Streamlit's own icon font (st.info's and page links' icons): the one outside address a page asks for itself.
STREAMLIT_ICONS = "https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/"


def stay_local(route, foreign: list[str]) -> None:
    """Let requests to the server through; note and abort any other, so no test traffic leaves the machine."""
    url = route.request.url
    if urlparse(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
        route.continue_()
        return
    if not url.startswith(STREAMLIT_ICONS):
        foreign.append(url)
    route.abort()


def link_query(where: str) -> dict[str, str]:
    """Hostile values for every parameter a page reads from its address, and a hostile parameter name."""
    hostile = payloads(where)
    return {
        "run": hostile[0],
        "index": hostile[2],
        "experiment": hostile[3],
        "name": hostile[4],
        "seed": hostile[1],
        hostile[5]: hostile[6],
        "lr": "9" * 10_000,
    }


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")
def test_no_page_renders_what_it_did_not_write(tmp_path, data_dir, browser):
    runs_dir = tmp_path / "runs"
    hostile_runs(runs_dir, load_cifar10(data_dir, allow_download=False).test_y.numpy())
    foreign_requests: list[str] = []
    tab = browser.new_context(viewport={"width": 1440, "height": 1400}).new_page()
    tab.set_default_timeout(SLOW)
    tab.route("**/*", lambda route: stay_local(route, foreign_requests))
    upload = {
        "name": "![pwnu1](http:127.0.0.2) __pwnu6__ <b id=pwnu5>pwnu5.png",
        "mimeType": "image/png",
        "buffer": image_bytes(Image.new("RGB", (40, 40), (200, 40, 40))),
    }

    def visit(page: str, query: dict[str, str], wait_for: str, name: str) -> None:
        tab.goto(f"{url}/{page}?{urlencode(query)}")
        try:  # the first visit imports torch in the server: minutes on this shared machine
            tab.get_by_text(wait_for, exact=False).first.wait_for(timeout=3 * SLOW if page == "" else SLOW)
        except PlaywrightError:
            shot(tab, f"hostile-{name}", full_page=False)  # what the page showed instead, for a person
            raise
        settle(tab, SLOW)
        assert foreign_elements(tab) == [], name
        assert foreign_requests == [], name

    with dashboard_server(runs_dir, data_dir, tmp_path / "server.log") as url:
        visit("", link_query("l"), "Where to start", "home")
        visit("train", link_query("l"), "pwnq6", "train")
        visit("runs", {}, "run(s) with errors or damaged files", "runs")
        # the hostile folder and its error, as text (the table's copy for screen readers is hidden: not that one)
        tab.get_by_text("pwnf2", exact=False).filter(visible=True).first.wait_for()
        visit("compare", {"experiment": EXPERIMENT}, "Where they disagree", "compare")
        # as written, but for the invisible word joiner that keeps a bare address from becoming a link
        tab.get_by_text(re.compile(r"!\[pwnv1\]\(http:\u2060?//127\.0\.0\.2/pwnv1\.png\)")).first.wait_for(
            state="attached"
        )  # the first is the table's cell, drawn on a canvas
        visit("misclassified", {}, "Misclassified test images", "misclassified")
        # class names in the captions, as text
        tab.get_by_text("__pwnc6__", exact=False).filter(visible=True).first.wait_for()
        visit("inside", link_query("l"), "The link asks for run", "inside-link")
        visit("inside", {"run": HOSTILE_FOLDERS[0], "index": "3"}, "Feature maps", "inside-run")
        tab.get_by_text("Upload", exact=True).click()  # the picture source, a segmented control
        tab.locator("input[type=file]").set_input_files(files=[upload])
        tab.get_by_text("__pwnu6__", exact=False).filter(visible=True).first.wait_for()
        settle(tab, SLOW)
        assert foreign_elements(tab) == [] and foreign_requests == [], "inside-upload"
        visit("predict", {}, "Upload an image", "predict")
        tab.locator("input[type=file]").set_input_files(files=[upload])
        tab.get_by_text("What the model sees", exact=False).wait_for()
        settle(tab, SLOW)
        assert foreign_elements(tab) == [] and foreign_requests == [], "predict-upload"
        for page in ("receptive_field", "model"):
            visit(page, link_query("l"), "Layer by layer" if page == "receptive_field" else "total params", page)


def texts_of(figure) -> list[str]:
    """Every string in a figure's JSON (titles, legends, ticks, hover text and templates)."""
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, np.ndarray):
            walk(value.tolist())

    walk(figure.to_plotly_json())
    return found


def test_every_chart_draws_record_names_as_text():
    names = [*payloads("c"), BIG]
    classes = HOSTILE_CLASSES
    curves = pd.DataFrame({"run": names, "metric": "test_acc", "step": 1, "epoch": 1.0, "time": 1.0, "value": 50.0})
    spread = pd.DataFrame(
        {
            "variant": names,
            "metric": "test_acc",
            "step": 1,
            "epoch": 1.0,
            "time": 1.0,
            "mean": 50.0,
            "low": 40.0,
            "high": 60.0,
            "seeds": 2,
        }
    )
    matrix = pd.DataFrame(np.eye(10), index=classes, columns=classes)
    stats = pd.DataFrame(
        {
            "model": names,
            "#": 1,
            "layer": "body.c1",
            "mean": 0.1,
            "std": 0.2,
            "zeros": 0.3,
            "channel_before": 1.0,
            "channel_after": 0.1,
            "image_before": 1.0,
            "image_after": 0.1,
        }
    )
    figures = [
        charts.curve_figure(curves, "step", "run", "t", "y"),
        charts.spread_figure(spread, "epoch", "t", "y", {}),
        charts.confusion_figure(matrix),
        charts.confusion_difference_figure(matrix, names[3], BIG),
        charts.per_class_figure(pd.DataFrame({"class": classes, "accuracy": 50.0})),
        charts.per_class_bars_figure(
            pd.DataFrame({"variant": names[0], "class": classes, "mean": 50.0, "std": 1.0}), {}
        ),
        charts.topk_figure([(name, 0.1) for name in names]),
        charts.relu_stats_figure(stats, {}),
        charts.norm_spread_figure(stats, {}),
    ]
    ours = re.compile(r"</?(br|extra)>")
    for figure in figures:
        for text in texts_of(figure):
            assert "<" not in ours.sub("", text) and "x" * 61 not in text, text


def test_shipped_names_are_refused_for_new_runs_and_experiments(runs_dir):
    with pytest.raises(CifarnetError, match="is a shipped run's"):
        create_run(make_config({"name": "s10-bn"}), runs_dir)
    with pytest.raises(CifarnetError, match="is the shipped experiment's"):
        plan_experiment(make_config({}), None, None, "shipped", runs_dir)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
