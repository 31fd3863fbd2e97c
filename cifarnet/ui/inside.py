"""Streamlit pieces of the Inside page and of the Grad-CAM gallery: pickers, links, cached computations.

The page's choice of run and test image lives in the URL (``?run=...&index=...``, next to
the sidebar's settings), so a link opens the same picture of the same model; links from
the Misclassified gallery are built here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from cifarnet.analysis.activation_stats import ActivationStats, compare
from cifarnet.analysis.curves import run_label
from cifarnet.analysis.gradcam import overlays
from cifarnet.analysis.misclassified import labels_match, mistakes, tiles
from cifarnet.analysis.predict import FORMATS, MAX_PIXELS, prepare
from cifarnet.data.cifar10 import Cifar10
from cifarnet.data.images import to_hwc
from cifarnet.errors import CifarnetError, shown
from cifarnet.nets.layers import default_layer
from cifarnet.runs.folders import PRETRAINED_DIR, SHIPPED_TRIO, RunInfo
from cifarnet.runs.records import MODEL_FILE, read_predictions
from cifarnet.ui.common import cached_synthetic, checkpoint, data_ready, dataset, literal, message
from cifarnet.ui.query import PAGE_PARAMS
from cifarnet.wording import with_article

PAGE = "inside"
STATS_IMAGES = 256
SOURCES = ("Test image", "A mistake of this run", "Upload")
ANY_CLASS = "any class"
RUN_KEY, SOURCE_KEY, CLASS_KEY, NUMBER_KEY, MISTAKE_KEY = (
    "inside_run",
    "inside_source",
    "inside_class",
    "inside_number",
    "inside_mistake",
)
LINK_KEY, LINK_INDEX_KEY = "inside_link_seen", "inside_link_index"


@dataclass(frozen=True)
class Picked:
    """The picture the page explains: a 32x32x3 uint8 view, and what is known about it."""

    name: str
    image: np.ndarray
    label: int | None = None
    index: int | None = None  # test-set index (then it goes into the URL)


def run_key(info: RunInfo) -> str:
    """How this page and its links name a run: its id, except a run of yours in a folder named like a shipped run
    (made by hand; such names are refused at launch), which is told apart rather than hidden by the shipped one."""
    clash = not info.pretrained and (PRETRAINED_DIR / info.run_id).is_dir()
    return f"{info.run_id} (yours)" if clash else info.run_id


def runs_with_models(all_runs: Sequence[RunInfo]) -> dict[str, RunInfo]:
    """:func:`run_key` -> run, for the runs with final weights (shipped ones included)."""
    return {run_key(info): info for info in all_runs if (info.path / MODEL_FILE).is_file()}


def model_of(info: RunInfo) -> nn.Module:
    """The run's cached model; a damaged or foreign ``model.pt`` stops the page with its message."""
    try:
        return checkpoint(info.path / MODEL_FILE)
    except CifarnetError as exc:
        st.error(f"**{literal(run_label(info))}:** {message(exc)}", icon=":material/block:")
        st.stop()


def _from_link() -> None:
    """Once per visit of a link: its run and test image become the pickers' values."""
    params = st.query_params.to_dict()
    link = (params.get("run"), params.get("index"))
    if link == st.session_state.get(LINK_KEY):
        return
    st.session_state[LINK_KEY] = link
    if link[0]:
        st.session_state[RUN_KEY] = link[0]
    if link[1] is not None:  # checked against the test set once it is loaded (_number)
        st.session_state[SOURCE_KEY], st.session_state[CLASS_KEY] = SOURCES[0], ANY_CLASS
        st.session_state[LINK_INDEX_KEY] = link[1]


def pick_run(available: dict[str, RunInfo], default: str = SHIPPED_TRIO[0]) -> RunInfo:
    """The run picker, seeded from the link; a run the link names that is not here is reported.

    Without any trained model there is nothing to look into: the page stops with a pointer to Train.
    """
    if not available:
        st.info(
            "No run has a trained model yet: finish one on the Train page first.", icon=":material/hourglass_empty:"
        )
        st.stop()
    _from_link()
    wanted = st.session_state.get(RUN_KEY)
    if wanted not in available:
        if wanted is not None:
            st.warning(
                f"The link asks for run {literal(shown(wanted))}, which is not here (or has no final model); "
                f"showing another run instead.",
                icon=":material/link_off:",
            )
        st.session_state[RUN_KEY] = default if default in available else next(iter(available))
    run_id = st.selectbox(
        "Run",
        list(available),
        key=RUN_KEY,
        format_func=lambda r: run_label(available[r]),
        help="Shipped networks and your runs that finished (model.pt)",
    )
    return available[run_id]


def pick_image(info: RunInfo, classes: Sequence[str]) -> Picked | None:
    """Source, then the picture: a test image (by class and number), one of the run's mistakes, or an upload."""
    st.session_state.setdefault(SOURCE_KEY, SOURCES[0] if data_ready() else SOURCES[2])
    source = st.segmented_control("Picture", SOURCES, key=SOURCE_KEY, required=True)
    if source == SOURCES[2]:
        return _upload()
    data = dataset()
    if data is None:
        return None
    if source == SOURCES[1]:
        return _mistake(info, data, classes)
    first, second = st.columns(2)
    kind = first.selectbox("Class", [ANY_CLASS, *classes], key=CLASS_KEY)
    members = (
        torch.arange(len(data.test_y))
        if kind == ANY_CLASS
        else torch.nonzero(data.test_y == classes.index(kind)).flatten()
    )
    index = int(members[_number(second, kind, len(members))])
    return Picked(f"test image #{index}", to_hwc(data.test_x[index]), int(data.test_y[index]), index)


def _number(column, kind: str, count: int) -> int:
    """The number input for the n-th image of a class (or the test index), seeded by a link's index."""
    raw = st.session_state.pop(LINK_INDEX_KEY, None)
    if raw is not None:
        try:
            st.session_state[NUMBER_KEY] = _index_in_range(raw, count)
        except CifarnetError as exc:
            st.error(f"{message(exc)}. Showing the first one.", icon=":material/link_off:")
            st.session_state[NUMBER_KEY] = 0
    st.session_state[NUMBER_KEY] = min(max(int(st.session_state.get(NUMBER_KEY, 0)), 0), count - 1)
    label = "Test image (index)" if kind == ANY_CLASS else f"Which {kind} (0 to {count - 1})"
    return int(column.number_input(label, min_value=0, max_value=count - 1, step=1, key=NUMBER_KEY))


def _index_in_range(raw: str, count: int) -> int:
    """A test index from a link, or why not."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise CifarnetError(f"The link's test image {shown(raw)} is not a number") from None
    if not 0 <= value < count:
        raise CifarnetError(
            f"The link's test image {value} does not exist: the test set has {count:,} images (0 to {count - 1})"
        )
    return value


def _mistake(info: RunInfo, data, classes: Sequence[str]) -> Picked | None:
    predictions = read_predictions(info.path)
    if predictions is None:
        st.info(
            f"{literal(run_label(info))} has no readable test-set predictions, so its mistakes are unknown.",
            icon=":material/hourglass_empty:",
        )
        return None
    if not labels_match(predictions, data.test_y):
        st.warning(
            f"The test set in {message(shown(Path(data.source)))} is not the one {literal(run_label(info))} "
            "was evaluated on, so its mistakes cannot be shown.",
            icon=":material/warning:",
        )
        return None
    wrong = mistakes(predictions, classes)
    options = {
        int(row["index"]): f"#{row['index']}: {with_article(row['true'])} taken for "
        f"{with_article(row['predicted'])} ({100 * row['confidence']:.0f}%)"
        for _, row in wrong.iterrows()
    }
    if not options:
        st.info("This run makes no mistakes on the test set.", icon=":material/done_all:")
        return None
    index = st.selectbox(
        f"Mistake ({len(options):,}, most confident first)",
        list(options),
        format_func=options.get,
        key=f"{MISTAKE_KEY}_{info.run_id}",
    )
    return Picked(f"test image #{index}", to_hwc(data.test_x[index]), int(data.test_y[index]), index)


def _upload() -> Picked | None:
    upload = st.file_uploader(
        "Image",
        type=list(FORMATS),
        key="inside_upload",
        help=f"Any size up to {MAX_PIXELS // 1_000_000} megapixels; it is centre-cropped "
        "to a square and shrunk to 32x32, as on the Predict page.",
    )
    if upload is None:
        st.info("Upload a picture to look inside the network with it.", icon=":material/upload:")
        return None
    try:
        return Picked(upload.name, prepare(upload.getvalue()).view)
    except CifarnetError as exc:
        st.error(f"**{literal(upload.name)}:** {message(exc)}", icon=":material/block:")
        return None


def keep_in_link(info: RunInfo, picked: Picked | None) -> None:
    """Write the run and test image into the URL (an upload cannot travel in a link)."""
    st.query_params["run"] = run_key(info)
    if picked is not None and picked.index is not None:
        st.query_params["index"] = str(picked.index)
    elif "index" in st.query_params:
        del st.query_params["index"]
    st.session_state[LINK_KEY] = (st.query_params.get("run"), st.query_params.get("index"))


def inside_link(info: RunInfo, index: int) -> str:
    """A relative link to the Inside page for one test image of one run, keeping the sidebar's settings."""
    settings = {k: v for k, v in st.query_params.to_dict().items() if k not in PAGE_PARAMS}
    return f"{PAGE}?{urlencode({**settings, 'run': run_key(info), 'index': index})}"


@st.cache_data(show_spinner="Computing Grad-CAM for this page...", max_entries=32)
def _gallery_overlays(
    model_path: str,
    mtime: float,
    data_source: str,
    indices: tuple[int, ...],
    targets: tuple[int, ...],
    scale: int,
    _images: torch.Tensor,
) -> list[np.ndarray]:
    """Grad-CAM pictures at the model's last block (cached per model file, data set, images and classes)."""
    model = checkpoint(Path(model_path))
    return overlays(model, _images, default_layer(model), list(targets), scale)


def gallery_overlays(
    info: RunInfo, data: Cifar10, rows: pd.DataFrame, classes: Sequence[str], scale: int
) -> list[np.ndarray]:
    """The Misclassified gallery's pictures with Grad-CAM for the predicted class (what made it wrong);
    the plain pictures, with the reason, when the run's model cannot be loaded."""
    indices = tuple(int(i) for i in rows["index"])
    targets = tuple(classes.index(name) for name in rows["predicted"])
    path = info.path / MODEL_FILE
    try:
        if not path.is_file():
            raise CifarnetError("the run has no final model (model.pt)")
        return _gallery_overlays(
            str(path), path.stat().st_mtime, data.source, indices, targets, scale, data.test_x[list(indices)]
        )
    except CifarnetError as exc:
        st.warning(f"No Grad-CAM for {literal(run_label(info))}: {message(exc)}", icon=":material/warning:")
        return tiles(data.test_x, rows, scale=scale)


@st.cache_data(show_spinner="Measuring activations on 256 images...", max_entries=8)
def norm_stats(
    models: tuple[tuple[str, str, float], ...], data_source: str, batch_statistics: bool, _images: torch.Tensor
) -> ActivationStats:
    """Activation statistics of (label, model.pt, mtime) models on the same pictures, cached."""
    return compare({label: checkpoint(Path(path)) for label, path, _ in models}, _images, batch_statistics)


def stats_images() -> tuple[torch.Tensor, str]:
    """The first 256 test images, or pattern pictures (and a note) while no data set is available."""
    if data_ready():
        data = dataset()
        if data is not None:
            return data.test_x[:STATS_IMAGES], data.source
    return cached_synthetic().test_x[:STATS_IMAGES], "synthetic"
