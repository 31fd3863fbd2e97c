"""The Streamlit dashboard, page by page, through ``streamlit.testing.v1.AppTest``.

Each test drives the real ``dashboard.py`` (navigation, shared sidebar, page) with a
temporary runs folder; the data folder is the real CIFAR-10 copy when present, else
synthetic files (the ``data_dir`` fixture). The pure helpers behind the pages
(``cifarnet.ui.query``, ``curves``, ``predict``, ``misclassified``, ``tables``) are tested
directly at the end.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CRAFTED_IMAGES,
    PUNCTUATION,
    crafted_images,
    data_with_labels,
    fake_finished_run,
    image_bytes,
    texts,
)
from PIL import Image
from streamlit.testing.v1 import AppTest

from cifarnet.analysis.curves import curves_frame, runs_table, smooth
from cifarnet.analysis.misclassified import filter_mistakes, mistakes
from cifarnet.analysis.predict import prepare
from cifarnet.config import FIELDS, make_config
from cifarnet.data.cifar10 import CLASSES, FOLDER, load_cifar10
from cifarnet.data.images import enlarge_to
from cifarnet.errors import CifarnetError
from cifarnet.nets.models import build_model, count_params
from cifarnet.runs.folders import PRETRAINED_DIR, create_run, list_runs, read_run, request_stop
from cifarnet.runs.launch import resume_run
from cifarnet.runs.monitor import clock, describe, progress_fraction, progress_text, ws_note
from cifarnet.runs.records import write_json
from cifarnet.runs.status import Status
from cifarnet.training.checkpoint import save_checkpoint
from cifarnet.ui.app import PAGES
from cifarnet.ui.query import DASHBOARD_DEFAULTS, parse_query, to_query
from cifarnet.ui.sidebar import auto_key, widget_key, widget_kind


def widget(at: AppTest, name: str):
    """The sidebar widget of config field ``name`` (for a field that may be None, its number box)."""
    return getattr(at.sidebar, widget_kind(FIELDS[name]))(key=widget_key(name))


def is_literal(source: str) -> bool:
    """True when every punctuation mark in the Markdown ``source`` is escaped: it can draw no link, image,
    emphasis, colour, icon or formula, only its own characters."""
    return re.fullmatch(rf"(?:(?!{PUNCTUATION}).|\\{PUNCTUATION})*", source, re.S) is not None


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def fake_failed_run(runs_dir: Path) -> Path:
    path = create_run(make_config({"name": "broken"}), runs_dir)
    write_json(path / "status.json", {"status": "failed", "pid": None, "error": "out of memory; use a smaller batch"})
    (path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{not json\n')
    return path


# -- home and sidebar --------------------------------------------------------------------------


def test_home_shows_the_shipped_runs_and_every_page(app):
    at = app()
    assert at.title[0].value == "cifarnet lab"
    shipped = metric_values(at)
    assert set(shipped) == {"s10 with BatchNorm", "s10 with GroupNorm", "s10 with LayerNorm"}
    for norm, name in (("bn", "BatchNorm"), ("ln", "LayerNorm"), ("gn", "GroupNorm")):  # the records' figures,
        recorded = json.loads((PRETRAINED_DIR / f"s10-{norm}" / "results.json").read_text())["test_acc"]
        assert shipped[f"s10 with {name}"] == f"{100 * recorded:.2f} %"  # two decimals, as README's table has them
    epochs = json.loads((PRETRAINED_DIR / "s10-gn" / "config.json").read_text())["epochs"]
    assert any(f"trained {epochs:g} epochs with the same recipe" in c.value for c in at.caption)
    words = "(LayerNorm and GroupNorm with weight-standardised convs except the depthwise ones, their default)"
    assert any(words in c.value for c in at.caption)
    assert len(at.sidebar.radio) == 2 and at.sidebar.radio[1].value == "bn"


def test_query_string_seeds_the_sidebar_and_follows_changes(app):
    at = app("model", norm="gn", gn_groups="4", lr="0.01", arch="seed")
    assert widget(at, "norm").value == "gn" and widget(at, "gn_groups").value == 4
    assert widget(at, "arch").value == "seed" and widget(at, "lr").value == pytest.approx(0.01)
    assert not at.sidebar.warning and not at.sidebar.error
    widget(at, "epochs").set_value(7.0).run()
    assert at.query_params["epochs"] == "7" and at.query_params["norm"] == "gn"
    assert make_config(parse_query(at.query_params).values).epochs == 7


def test_dropout_is_an_explicit_architecture_default_choice(app):
    def dropout_layers() -> int:
        return int(at.dataframe[1].value["layer"].str.startswith("Dropout").sum())

    at = app("model", dropout="0.15")
    assert not at.sidebar.toggle(key=auto_key("dropout")).value and widget(at, "dropout").value == 0.15
    assert dropout_layers() > 0
    at.sidebar.toggle(key=auto_key("dropout")).set_value(True).run()  # s9's own default: no dropout
    assert widget(at, "dropout").disabled and "dropout" not in at.query_params and dropout_layers() == 0
    at.sidebar.toggle(key=auto_key("dropout")).set_value(False).run()
    widget(at, "dropout").set_value(0.3).run()
    assert at.query_params["dropout"] == "0.3" and dropout_layers() > 0
    next(b for b in at.sidebar.button if b.label == "Reset to defaults").click().run()
    assert at.sidebar.toggle(key=auto_key("dropout")).value and "dropout" not in at.query_params


def test_bad_query_values_are_dropped_with_an_inline_message(app):
    at = app("train", lr="fast", norm="batchnorm", epochs="1e9", bogus="1", seed="3")
    warnings = texts(at.sidebar.warning)
    assert "lr='fast' is not a number" in warnings
    assert "norm='batchnorm' is not known" in warnings and "epochs" in warnings and "'bogus'" in warnings
    assert widget(at, "lr").value == pytest.approx(DASHBOARD_DEFAULTS.lr) and widget(at, "seed").value == 3
    assert not at.sidebar.error  # the remaining settings form a valid config
    assert not next(b for b in at.button if b.label == "Launch run").disabled


def test_link_values_are_echoed_as_short_literal_text(app):
    """Issue 15.11: a shared link cannot draw a link or an image in the app's own warning, nor fill it."""
    at = app(
        "train",
        name="[click here](https://example.com)",
        seed="![x](http://127.0.0.1:9/x)",
        lr="9" * 100_000,
        **{"![k](http://127.0.0.1:9/k)": "1"},
    )
    warnings = [str(w.value) for w in at.sidebar.warning]
    assert len(warnings) == 4 and all(is_literal(w) and len(w) < 400 for w in warnings), warnings
    shown = texts(at.sidebar.warning)
    assert "name='[click here](https://example.com)' is not allowed" in shown
    assert "seed='![x](http://127.0.0.1:9/x)' is not a number" in shown
    assert "unknown setting '![k](http://127.0.0.1:9/k)' in the link" in shown
    assert f"lr='{'9' * 28}…{'9' * 29}' is not a finite number" in shown  # 60 characters with the quotes
    widget(at, "name").set_value("[typed](https://example.com)").run()  # the same from the sidebar itself
    (error,) = at.sidebar.error
    assert error.value.startswith("**Invalid setting.** ") and is_literal(error.value.split("** ", 1)[1])
    assert "name='[typed](https://example.com)' is not allowed" in texts(at.sidebar.error)
    assert is_literal(at.main.error[0].value.split(": ", 1)[1])


def test_bad_combination_from_the_link_is_refused_inline(app):
    at = app("train", norm="gn", gn_groups="3")
    assert "gn_groups=3 does not divide" in texts(at.sidebar.error)
    assert "gn_groups=3" in texts(at.main.error)
    assert next(b for b in at.button if b.label == "Launch run").disabled


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 50.0, "lr=50.0 is out of range; allowed: a number from 1e-06 to 10"),
        ("batch_size", 4096, "batch_size=4096 is larger than the training set (2000 images"),
        ("epochs", 0.0, "epochs=0.0 is out of range"),
    ],
)
@pytest.mark.heavy
def test_bad_widget_values_give_an_inline_error_and_no_launch(app, runs_dir, field, value, message):
    at = app("train", subset="200")  # 2,000 training images
    widget(at, field).set_value(value).run()
    assert not at.exception
    assert message in texts(at.sidebar.error)
    assert next(b for b in at.button if b.label == "Launch run").disabled
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- model inspection pages -------------------------------------------------------------------


def test_receptive_field_page_for_both_architectures(app):
    at = app("receptive_field")
    assert metric_values(at)["receptive field before global pooling"] == "59 px"
    layers = at.dataframe[0].value
    assert list(layers.columns[:4]) == ["#", "block", "layer", "type"]
    assert layers["rf"].iloc[-3] == 59 and layers["size"].iloc[0] == 32
    overview = at.dataframe[1].value.set_index("arch")
    assert overview.loc["s9", "rf before pooling (px)"] == 59 and overview.loc["seed", "rf before pooling (px)"] == 97
    assert "each output sees a **59x59** square" in texts(at.markdown)
    at.select_slider[0].set_value(1).run()
    assert "each output sees a **3x3** square" in texts(at.markdown) and "the map is 32x32" in texts(at.markdown)
    widget(at, "arch").set_value("seed").run()
    assert metric_values(at)["receptive field before global pooling"] == "97 px"


def test_model_page_totals_follow_the_sidebar(app):
    at = app("model")
    assert metric_values(at)["total params"] == f"{count_params(build_model('s9', 'bn')):,}" == "189,920"
    rules = at.dataframe[0].value  # the write-up's rules, each kept
    assert len(rules) == 7 and set(rules["kept"]) == {"yes"} and "59 px" in set(rules["this model"])
    table = at.dataframe[1].value
    assert table["params"].sum() == 189_920 and table["output shape"].iloc[-1] == "10 x 1 x 1"
    assert "StdConv2d" not in set(table["layer"].str.split("-").str[0])
    widget(at, "norm").set_value("ln").run()  # ws auto: standardised convs, the 4 depthwise ones plain
    kinds = at.dataframe[1].value["layer"].str.split("-").str[0].value_counts()
    assert (kinds["StdConv2d"], kinds["Conv2d"]) == (8, 4 + 1)  # + the 1x1 head
    assert any(
        "weight-standardised convs except the depthwise ones: they show as StdConv2d" in c.value for c in at.caption
    )
    widget(at, "norm").set_value("bn").run()
    widget(at, "arch").set_value("seed").run()
    assert metric_values(at)["total params"] == "192,672"
    widget(at, "norm").set_value("gn").run()
    widget(at, "gn_groups").set_value(16).run()
    assert metric_values(at)["total params"] == "192,672" and not at.sidebar.error


# -- runs -------------------------------------------------------------------------------------------


def test_runs_page_lists_compares_exports_and_deletes(app, runs_dir, data_dir):
    fake_finished_run(runs_dir, np.arange(10_000) % 10)
    fake_failed_run(runs_dir)
    at = app("runs")
    table = at.dataframe[0].value.set_index("run")
    assert {"s9-bn (shipped)", "s9-ln (shipped)", "s9-gn (shipped)", "mine", "broken"} <= set(table.index)
    shipped = json.loads((PRETRAINED_DIR / "s9-bn" / "results.json").read_text())["test_acc"]
    assert table.loc["s9-bn (shipped)", "final_acc"] == pytest.approx(100 * shipped, abs=0.01)
    assert table.loc["broken", "status"] == "failed"
    notes = texts(at.markdown)
    assert "out of memory; use a smaller batch" in notes and "1 damaged line(s)" in notes
    assert {b.label for b in at.get("download_button")} >= {"Download table (CSV)", "Download these curves (CSV)"}
    assert at.multiselect[0].value == ["s10-bn (shipped)", "s10-gn (shipped)", "s10-ln (shipped)"]  # the trio
    at.multiselect[0].set_value(["mine", "s9-gn (shipped)"]).run()
    at.slider[0].set_value(0.6).run()
    assert not at.exception
    victim = at.selectbox[0]
    assert sorted(victim.options) == ["broken", "mine"]  # shipped runs are never offered for deletion
    victim.set_value("broken").run()
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not (runs_dir / "broken").exists() and (runs_dir / "mine").exists()


def test_runs_page_shows_a_killed_trainer_as_failed(app, runs_dir):
    """A status file still saying 'running' whose process is gone (SIGKILL) reads as failed, with its curve."""
    path = create_run(make_config({"name": "killed"}), runs_dir)
    write_json(path / "status.json", {"status": "running", "pid": 2**22 + 12345, "progress": {"step": 3}})
    (path / "metrics.jsonl").write_text(
        json.dumps(
            {
                "kind": "train",
                "step": 3,
                "epoch": 0.1,
                "time": 1.0,
                "lr": 0.1,
                "train_loss": 2.2,
                "train_acc": 0.2,
                "img_s": 50.0,
            }
        )
        + "\n"
    )
    at = app("runs")
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["killed", "status"] == "failed"
    assert "ended without reporting" in texts(at.markdown)


# -- misclassified ----------------------------------------------------------------------------------


def test_misclassified_grid_filters_and_confusion(app, runs_dir, data_dir):
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    fake_finished_run(runs_dir, labels, wrong_every=7)  # every 7th image: true class c predicted as c+3
    wrong = labels[::7]
    at = app("misclassified")
    at.selectbox[0].set_value("mine").run()
    assert f"{len(wrong):,} of {len(wrong):,} mistakes on 10,000 test images" in texts(at.caption)
    assert len(at.get("image")) == 32  # one full page of the grid
    next(s for s in at.selectbox if s.label == "True class").set_value("cat").run()
    cats = int((wrong == 3).sum())
    assert f"{cats:,} of {len(wrong):,} mistakes" in texts(at.caption)
    assert ":red[**frog**] / :green[**cat**]  \nfrog 60% · cat 25%" in texts(at.caption)
    assert len(at.get("image")) == min(cats, 32)
    next(s for s in at.selectbox if s.label == "Predicted class").set_value("cat").run()
    assert "No mistakes for this filter (a diagonal cell" in texts(at.info)


def test_misclassified_refuses_a_test_set_that_does_not_match(app, runs_dir):
    fake_finished_run(runs_dir, (np.arange(10_000) + 1) % 10, name="elsewhere")  # neither real nor synthetic order
    at = app("misclassified")
    at.selectbox[0].set_value("elsewhere").run()
    assert "is not the one this run was evaluated on" in texts(at.markdown)
    assert not at.get("image") and any(t.label == "Data folder" for t in at.text_input)


def test_misclassified_survives_damaged_run_files(app, runs_dir):
    fake_finished_run(runs_dir, np.arange(10_000) % 10, name="torn")
    (runs_dir / "torn" / "predictions.npz").write_bytes(b"PK\x03\x04 truncated")
    incomplete = fake_finished_run(runs_dir, np.arange(10_000) % 10, name="partial")
    write_json(incomplete / "results.json", {"test_acc": 0.5})
    at = app("misclassified")
    assert "partial" not in at.selectbox[0].options
    at.selectbox[0].set_value("torn").run()
    assert not at.exception and "predictions file of torn is unreadable" in texts(at.warning)


@pytest.mark.slow
def test_without_data_pages_say_how_to_provide_it(app, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "nowhere"))
    at = app("misclassified")
    assert at.selectbox[0].value == "s10-bn (shipped)"
    assert "The CIFAR-10 data set is needed here" in texts(at.markdown)
    assert "Download CIFAR-10" in [b.label for b in at.button]
    assert any(t.label == "Data folder" for t in at.text_input)
    charts = list(at.get("plotly_chart"))
    assert len(charts) == 2  # confusion matrix and per-class accuracy
    assert "bird" in json.dumps(json.loads(charts[0].proto.spec)["layout"]["yaxis"]["ticktext"])  # cells at 0-9
    at = app("train")
    assert "The CIFAR-10 data set is needed here" in texts(at.markdown)
    assert next(b for b in at.button if b.label == "Launch run").disabled
    assert len(at.get("image")) == 1  # the augmentation preview falls back to synthetic pictures


def test_typed_data_folder_is_echoed_short_and_literal(app, monkeypatch, tmp_path):
    """Issue 15.11: a folder typed into the data panel comes back as literal text, shortened."""
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "nowhere"))
    at = app("misclassified")
    typed = "/nowhere/![x](http://127.0.0.1:9/x)/" + "d" * 100_000  # "//" also reads as one "/" (no rerun loop)
    next(t for t in at.text_input if t.label == "Data folder").set_value(typed).run()
    assert not at.exception
    (problem,) = [m for m in at.markdown if "cannot be used" in texts([m])]
    assert is_literal(problem.value) and len(problem.value) < 400
    assert texts([problem]).startswith("data folder /nowhere/![x](http:/127.0.0.1:9/x)/dddd")


@pytest.mark.parametrize("page", ["train", "receptive_field", "misclassified"])
@pytest.mark.heavy
def test_malformed_labels_give_one_message_not_a_traceback(app, monkeypatch, tmp_path, data_dir, page):
    """Issue 15.7: a batch file whose labels are strings; the pages that load the data set stay up."""
    folder = data_with_labels(tmp_path / "data", data_dir, ["cat"] * 10_000)
    monkeypatch.setenv("CIFARNET_DATA", str(folder))
    at = app(page)  # no exception
    if page == "receptive_field":  # its picture falls back to a pattern; the other pages explain
        assert metric_values(at)["receptive field before global pooling"] == "59 px" and at.get("plotly_chart")
        return
    assert (
        f"CIFAR-10 file {folder / FOLDER / 'data_batch_1'} has a label that is not a whole number at position 0 "
        "('cat', a str); allowed: a list of 10000 whole numbers from 0 to 9"
    ) in texts(at.markdown)


RUNS_FILE_CHECKS = {  # each page still does its work with the shipped runs
    "home": lambda at: len(at.metric) == 3,
    "train": lambda at: (
        next(b for b in at.button if b.label == "Launch run").disabled and "No run yet" in texts(at.info)
    ),
    "runs": lambda at: {f"{p.name} (shipped)" for p in PRETRAINED_DIR.iterdir()} == set(at.dataframe[0].value["run"]),
    "compare": lambda at: at.dataframe[0].value["variant"].tolist() == ["norm=bn", "norm=ln", "norm=gn"],
    "receptive_field": lambda at: metric_values(at)["receptive field before global pooling"] == "59 px",
    "model": lambda at: metric_values(at)["total params"] == "189,920",
    "misclassified": lambda at: at.selectbox[0].value == "s10-bn (shipped)" and at.get("plotly_chart"),
    "predict": lambda at: at.selectbox[0].value == "s10-bn (shipped)",
    "inside": lambda at: at.selectbox(key="inside_run").value == "s10-bn",
}


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_says_once_that_the_runs_path_is_a_file(app, monkeypatch, tmp_path, page):
    """Issue 15.8: CIFARNET_RUNS naming a regular file: one message on every page, which goes on without it."""
    assert set(RUNS_FILE_CHECKS) == set(PAGES)
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("a file")
    monkeypatch.setenv("CIFARNET_RUNS", str(not_a_folder))
    at = app(None if page == "home" else page)
    (notice,) = [e for e in at.error if "is a file, not a folder" in texts([e])]
    assert texts([notice]) == (
        f"**Your runs are unavailable.** runs folder {not_a_folder} is a file, not a folder; "
        "set --runs-dir or CIFARNET_RUNS to a folder (it is created when missing). Until then "
        "only the shipped runs are shown and no run can be started."
    )
    assert RUNS_FILE_CHECKS[page](at)
    assert not_a_folder.read_text() == "a file"


# -- predict ----------------------------------------------------------------------------------------


def test_predict_top_k_for_an_upload(app):
    at = app("predict")
    assert at.selectbox[0].value == "s10-bn (shipped)"
    at.slider[0].set_value(3).run()
    picture = Image.new("RGB", (300, 200), (40, 90, 200))
    at.get("file_uploader")[0].set_value(("sky.png", image_bytes(picture), "image/png"))
    at.run()
    assert not at.exception and not at.error
    prediction = metric_values(at)["prediction"]
    assert prediction in CLASSES
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert len(bars["y"]) == 3 and bars["y"][-1] == prediction and set(bars["y"]) <= set(CLASSES)
    assert len(at.get("image")) == 2  # the upload and the 32x32 view


def test_predict_a_random_test_image(app):
    at = app("predict")
    next(b for b in at.button if b.label == "Or try a random CIFAR-10 test image").click().run()
    assert not at.exception and not at.error
    assert "**test image #" in texts(at.markdown)
    assert metric_values(at)["prediction"] in CLASSES
    assert len(at.get("image")) == 2


def test_enlarge_to_keeps_pixels_crisp():
    tiny = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = enlarge_to(tiny, 256)
    assert big.shape == (170, 255, 3) and (big[:85, :85] == tiny[0, 0]).all()
    assert max(enlarge_to(np.zeros((600, 300, 3), np.uint8), 256).shape[:2]) == 256


def test_predict_random_test_image_replaces_an_upload_until_the_next_upload(app, data_dir):
    at = app("predict")
    picture = image_bytes(Image.new("RGB", (60, 40), (40, 90, 200)))
    at.get("file_uploader")[0].set_value(("sky.png", picture, "image/png"))
    at.run()
    assert "**sky.png**" in texts(at.markdown).split("\n")
    next(b for b in at.button if b.label == "Or try a random CIFAR-10 test image").click().run()
    assert not at.exception and "**test image #" in texts(at.markdown)
    assert "**sky.png**" not in texts(at.markdown).split("\n")
    picture = image_bytes(Image.new("RGB", (60, 40), (40, 200, 90)))
    at.get("file_uploader")[0].set_value(("grass.png", picture, "image/png"))
    at.run()
    assert "**grass.png**" in texts(at.markdown).split("\n")


def test_predict_with_a_users_model(app, runs_dir):
    path = fake_finished_run(runs_dir, np.arange(10_000) % 10)
    save_checkpoint(path / "model.pt", build_model("s9", "gn", 2, 0.0))
    at = app("predict")
    assert "mine" in at.selectbox[0].options and "s9-ln (shipped)" in at.selectbox[0].options
    at.selectbox[0].set_value("mine").run()
    grey = Image.new("L", (64, 48), 90)  # greyscale, not square
    at.get("file_uploader")[0].set_value(("grey.png", image_bytes(grey), "image/png"))
    at.run()
    assert not at.exception and not at.error
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert len(bars["y"]) == 5 and sum(bars["x"]) <= 100.01


BAD_FILES = [
    ("empty.png", b"", "the file is empty (0 bytes)"),
    ("notes.png", b"this is not an image at all", "not an image this app can read"),
    *[
        (name, CRAFTED_IMAGES[name], "not an image this app can read")
        for name in ("bmp-header-size.bmp", "ppm-maxval.ppm", "photoshop.png")
    ],
    (
        "[x](http://127.0.0.1:9/x).png",
        CRAFTED_IMAGES["bmp-compression.bmp"],
        "[x](http://127.0.0.1:9/x).png:** the file is not an image",
    ),
    ("bomb.png", None, "megapixel limit"),
    ("cut.png", None, "damaged or truncated"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES, ids=[name for name, _, _ in BAD_FILES])
@pytest.mark.heavy
def test_predict_refuses_bad_files_clearly(app, name, content, message):
    if name == "bomb.png":
        content = image_bytes(Image.new("1", (9000, 9000)))
    if name == "cut.png":
        content = image_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))[:300]
    at = app("predict")
    at.get("file_uploader")[0].set_value((name, content, "image/png"))
    at.run()
    assert not at.exception
    assert message in texts(at.error)
    assert is_literal(at.error[0].value.split(":** ", 1)[1]) and is_literal(at.error[0].value[2:].split(":** ")[0])


# -- train ------------------------------------------------------------------------------------------


def test_train_page_refuses_a_bad_varied_value_before_anything_starts(app, runs_dir):
    at = app("train", subset="20", epochs="1", batch_size="50")
    next(box for box in at.selectbox if box.label == "Setting").set_value("lr")
    next(box for box in at.text_input if box.label == "Values, comma-separated").set_value("0.05,fast")
    next(b for b in at.button if b.label == "Launch experiment").click().run()
    assert not at.exception and "--vary 'lr=0.05,fast': lr='fast' is not a number" in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.heavy
def test_train_page_launches_shows_and_stops_a_run(app, runs_dir):
    at = app("train", subset="20", epochs="20", batch_size="16", eval_every="2", eval_subset="10")
    assert "No run yet" in texts(at.info)
    assert len(at.get("image")) == 1  # the augmentation preview
    widget(at, "norm").set_value("gn").run()
    next(b for b in at.button if b.label == "Launch run").click().run()
    assert not at.error, texts(at.error)
    (run_dir,) = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]  # .slots: the run limit's locks
    assert json.loads((run_dir / "config.json").read_text())["norm"] == "gn"
    deadline = time.time() + 120
    while read_run(run_dir).status != "running" or not read_run(run_dir).evals:
        assert time.time() < deadline, read_run(run_dir).status_record
        time.sleep(0.5)
    at.run()
    assert f"Run {run_dir.name} · running" in texts(at.subheader)
    other_tab = app("train")  # a new session (reload, second tab) finds the live run in the runs folder
    assert f"Run {run_dir.name} · running" in texts(other_tab.subheader)
    runs_page = app("runs")
    assert "A run is training" in texts(runs_page.caption)
    assert runs_page.dataframe[0].value.set_index("run").loc[run_dir.name, "status"] == "running"
    assert "epoch" in at.get("progress")[0].proto.text
    assert len(at.get("plotly_chart")) == 3  # LR schedule, loss, accuracy
    next(b for b in at.button if b.label == "Stop run").click().run()
    while read_run(run_dir).status == "running":
        assert time.time() < deadline
        time.sleep(0.5)
    assert read_run(run_dir).status == "stopped"
    at.run()
    assert "Stopped on request" in texts(at.warning)
    steps, logged = read_run(run_dir).progress["step"], len(read_run(run_dir).metrics)
    next(b for b in at.button if b.label == "Resume run").click().run()
    while read_run(run_dir).progress.get("step", 0) <= steps or read_run(run_dir).status != "running":
        assert time.time() < deadline, read_run(run_dir).status_record
        time.sleep(0.5)
    assert all(record["step"] > steps for record in read_run(run_dir).metrics[logged:])  # from its checkpoint
    request_stop(run_dir.name)
    while read_run(run_dir).status == "running":
        assert time.time() < deadline
        time.sleep(0.5)


@pytest.mark.heavy
def test_train_page_without_a_live_run_shows_the_newest_or_the_linked_run(app, runs_dir):
    fake_finished_run(runs_dir, np.arange(10_000) % 10, name="older")
    time.sleep(0.01)
    fake_finished_run(runs_dir, np.arange(10_000) % 10, name="newer")
    at = app("train")
    assert "Run newer · finished" in texts(at.subheader) and not at.info
    assert "Shown because it is the newest run; none is training." in texts(at.caption)
    assert at.query_params["run"] == "newer"  # a reload keeps it
    assert at.get("page_link")[-1].proto.label == "All runs"
    linked = app("train", run="older")
    assert "Run older · finished" in texts(linked.subheader)
    assert "Shown because the page's address names it." in texts(linked.caption)
    assert not linked.sidebar.warning  # the run key is the page's, not an unknown setting
    gone = app("train", run="deleted-meanwhile")
    assert "Run newer · finished" in texts(gone.subheader)


def test_train_page_offers_resume_for_a_run_stopped_early_and_not_for_a_diverged_one(app, runs_dir):
    """A run a sweep's rule stopped is resumable (the page says why it stopped); a diverged one is not, and a
    resume of it is refused in one line: it would repeat its steps at the learning rate that diverged."""
    for name, record in (
        ("behind", {"status": Status.STOPPED_EARLY, "pid": None, "reason": "median rule: __pwn__ x"}),
        ("blew-up", {"status": Status.DIVERGED, "pid": None, "error": "loss is nan at step 3"}),
    ):
        run = create_run(make_config({"name": name}), runs_dir)
        write_json(run / "status.json", record)
        at = app("train", run=run.name)
        offered = [b.label for b in at.button if b.label == "Resume run"]
        assert offered == (["Resume run"] if name == "behind" else []), (name, offered)
    assert "median rule: __pwn__ x" in texts(app("train", run="behind").warning)  # the reason, literally
    with pytest.raises(CifarnetError, match="diverged: resuming would repeat its steps"):
        resume_run("blew-up", runs_dir)
    assert read_run(runs_dir / "blew-up").status == Status.DIVERGED


# -- helpers behind the pages -------------------------------------------------------------------------


def test_query_round_trip_and_partial_rejection():
    cfg = make_config({"norm": "gn", "gn_groups": 4, "lr": 0.0123456789, "cutout": True}, base=DASHBOARD_DEFAULTS)
    query = to_query(cfg)
    assert query == {"norm": "gn", "gn_groups": "4", "lr": "0.0123456789", "cutout": "true"}
    assert make_config(parse_query(query).values, base=DASHBOARD_DEFAULTS) == cfg
    parsed = parse_query({"lr": ["0.1", "0.2"], "flip": "maybe", "name": "../x"})
    assert parsed.values == {"lr": 0.2}
    assert len(parsed.problems) == 2 and "flip='maybe' is not a switch" in parsed.problems[0]


def test_curves_smoothing_and_table():
    shipped = [info for info in list_runs("/nonexistent") if info.pretrained]
    frame = curves_frame(shipped, ("test_acc", "train_loss"))
    assert set(frame["metric"]) == {"test_acc", "train_loss"} and frame["value"].max() > 80  # percent
    smoothed = smooth(frame, 0.9)
    assert len(smoothed) == len(frame) and smoothed["value"].iloc[0] == frame["value"].iloc[0]
    assert smoothed["value"].diff().abs().sum() < frame["value"].diff().abs().sum()
    table = runs_table(shipped)
    assert list(table["params"]) == [184_544] * 6 + [189_920] * 3 and table["notes"].eq("").all()  # s10, then s9
    assert dict(zip(table["norm"], table["ws"])) == {"bn": "off", "ln": "except-depthwise", "gn": "except-depthwise"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (50, 80), (255, 0, 0, 0)),
        lambda: Image.new("L", (33, 31), 128),
        lambda: Image.new("P", (40, 40), 3),
        lambda: Image.new("I;16", (40, 40), 4000),
        lambda: Image.new("CMYK", (40, 40), (0, 255, 0, 0)),
    ],
)
def test_prepare_handles_every_mode(make):
    upload = prepare(image_bytes(make(), "TIFF" if make().mode == "CMYK" else "PNG"))
    assert upload.view.shape == (32, 32, 3) and upload.view.dtype == np.uint8


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about what it skips in damaged files
def test_prepare_turns_every_crafted_file_into_an_image_or_one_message():
    """Issue 15.10, fuzz-style: whatever the bytes, ``prepare`` gives a 32x32 view or a CifarnetError."""
    outcomes = Counter()
    for name, data in crafted_images().items():
        try:
            upload = prepare(data)
        except CifarnetError as exc:
            outcomes[str(exc).split(" (")[0]] += 1
            assert "\n" not in str(exc)
            if name in CRAFTED_IMAGES:
                assert str(exc).startswith("the file is not an image this app can read"), name
        except Exception as exc:
            pytest.fail(f"{name}: {type(exc).__name__}: {exc}")
        else:
            assert upload.view.shape == (32, 32, 3) and upload.view.dtype == np.uint8, name
            outcomes["decoded"] += 1
    assert (
        min(
            outcomes["decoded"],
            outcomes["the file is not an image this app can read"],
            outcomes["the image data is damaged or truncated"],
        )
        > 20
    ), outcomes


def test_prepare_takes_the_first_frame_of_an_animation():
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    upload = prepare(data)
    assert tuple(upload.view[16, 16]) == pytest.approx((255, 0, 0), abs=8)
    transparent = prepare(image_bytes(Image.new("RGBA", (40, 40), (0, 0, 0, 0))))
    assert transparent.view.min() == 255  # composited onto white, not black
    with pytest.raises(CifarnetError, match="empty"):
        prepare(b"")


def test_mistakes_sorted_and_filtered():
    labels = np.array([0, 1, 2, 3])
    predictions = {
        "labels": labels,
        "top_classes": np.array([[0, 1, 2], [2, 1, 0], [2, 0, 1], [5, 3, 1]]),
        "top_probs": np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]),
    }
    frame = mistakes(predictions, CLASSES)
    assert list(frame["index"]) == [3, 1] and frame["top3"].iloc[0] == [("dog", 0.7), ("cat", 0.2), ("automobile", 0.1)]
    assert list(filter_mistakes(frame, true="automobile")["predicted"]) == ["bird"]
    assert filter_mistakes(frame, true="cat", predicted="bird").empty


def test_progress_words_and_config_summary():
    assert (clock(None), clock(65), clock(3723)) == ("--:--", "1:05", "1:02:03")
    progress = {"step": 30, "total_steps": 120, "epoch": 1.25, "epochs": 5, "img_s": 812.4, "eta_s": 95}
    assert progress_text(progress) == "epoch 1.25 / 5 · step 30 / 120 · 812 img/s · ETA 1:35"
    assert progress_fraction(progress) == 0.25 and progress_fraction({}) == 0.0
    assert progress_text({}).startswith("starting")
    text = describe(make_config({"norm": "gn", "gn_groups": 4, "cutout": True}, base=DASHBOARD_DEFAULTS))
    assert "GN (4 groups), weight-standardised convs except the depthwise ones ·" in text
    assert "2 epochs of 390 steps (780 in all)" in text
    assert "crop, flip, cutout" in text
    assert "BN ·" in describe(make_config({"norm": "bn"}, base=DASHBOARD_DEFAULTS))
    every_conv = make_config({"norm": "ln", "ws": "all"}, base=DASHBOARD_DEFAULTS)
    assert "LN, weight-standardised convs ·" in describe(every_conv)
    # the short recipe's tricks, then nothing for the default precision and no compile
    assert text.endswith("crop, flip, cutout · norm biases at 16x lr · norm scales frozen")
    fast = make_config({"precision": "bf16", "compile": True}, base=DASHBOARD_DEFAULTS)
    assert describe(fast).endswith("norm scales frozen · bfloat16 autocast · torch.compile")


def test_ws_note_groups_runs_by_their_standardisation(runs_dir):
    infos = [
        read_run(create_run(make_config({"norm": norm, "ws": ws, "name": f"{norm}-{ws}"}), runs_dir))
        for norm, ws in (("bn", "off"), ("ln", "all"), ("gn", "except-depthwise"))
    ]
    assert ws_note(infos) == (
        " (LayerNorm with weight-standardised convs; GroupNorm with weight-standardised convs "
        "except the depthwise ones, their default)"
    )
    assert ws_note(infos[:1]) == ""  # BN alone, plain convs: nothing to say
