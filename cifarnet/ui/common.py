"""Pieces several pages share: cached models and data, the run picker, the data-set panel, literal text.

Loaded data and models are cached with ``st.cache_resource`` (once per server, not per
session): the test set is 30 MB and a model load takes a moment, and every widget
click reruns the page.
"""

from __future__ import annotations

import re
from html import escape as html_escape
from pathlib import Path

import numpy as np
import streamlit as st
from torch import nn

from cifarnet.data.cifar10 import Cifar10, dataset_present, download, load_cifar10, resolve_data_dir, synthetic_dataset
from cifarnet.data.images import to_hwc
from cifarnet.errors import SHOWN_CHARS, CifarnetError, shorten, shown
from cifarnet.nets.models import build_model
from cifarnet.runs.folders import RunInfo, list_runs, resolve_runs_dir, shipped_runs
from cifarnet.training.checkpoint import load_model
from cifarnet.ui import access

DATA_KEY = "data_dir"
PREVIEW_INDEX = 3  # a test airplane: an object with a clear outline
PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark
# After parsing, GitHub-flavoured Markdown links any text that reads as a web or mail address, and Streamlit draws
# any `:shortcode:` as an emoji, escaped or not; an invisible word joiner after ":" and "@" and inside "www." breaks
# those patterns, and the text still reads the same.
UNLINK = re.compile(r"\\[:@]|www(?=\\\.)", re.IGNORECASE)
WORD_JOINER = "\u2060"


MESSAGE_CHARS = 400  # a whole message: the outside values in it are cut already (shown()); this bounds the rest


def literal(text: object, limit: int = SHOWN_CHARS, html: bool = False) -> str:
    """``text`` cut to ``limit`` characters and escaped so that it shows exactly its characters, however it came
    to hold Markdown or HTML: every text from a record, a link, an upload or the environment reaches a page
    through here.

    Streamlit draws every message, caption, title and widget label as Markdown (links, images, colours, icons,
    maths), so a value from a shared link, a file name or a folder name would otherwise draw a working link in the
    app's own message, or make the visitor's browser fetch an address. CommonMark allows a backslash before any
    ASCII punctuation mark and then shows the mark itself, so escaping them all leaves nothing to interpret but
    bare addresses (see ``UNLINK``). Plotly draws a subset of HTML instead (``<a href>``, ``<b>``, ``<br>``) in
    titles, legends, ticks and hover text: with ``html`` the text is escaped for that (``&lt;`` shows as ``<``).
    A value is cut to :data:`~cifarnet.errors.SHOWN_CHARS`; a whole message (whose values are cut already) to
    :data:`MESSAGE_CHARS`.
    """
    cut = shorten(str(text), limit)
    if html:
        return html_escape(cut, quote=False)  # Plotly decodes &lt; &gt; &amp; (not &quot;; quotes draw nothing)
    escaped = PUNCTUATION.sub(r"\\\1", cut)
    return UNLINK.sub(lambda match: match.group() + WORD_JOINER, escaped)


def message(text: object) -> str:
    """A whole message (a refusal, a damage note) as literal Markdown, cut to :data:`MESSAGE_CHARS`."""
    return literal(text, MESSAGE_CHARS)


# Parameter counts in every table: 189,920 reads at a glance where 189920 does not.
PARAMS_COLUMN = st.column_config.NumberColumn("params", format="%,d")


def header(title: str, intro: str) -> None:
    """Page title with a one-paragraph explanation of what the page shows."""
    st.title(title)
    st.caption(intro)


@st.cache_resource(show_spinner="Building the model...")
def cached_model(arch: str, norm: str, gn_groups: int, dropout: float, ws: str) -> nn.Module:
    return build_model(arch, norm, gn_groups, dropout, ws).eval()


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def cached_checkpoint(path: str, mtime: float) -> nn.Module:
    """A saved model; ``mtime`` in the key reloads it when a run rewrites ``model.pt``."""
    return load_model(path)


def checkpoint(path: Path) -> nn.Module:
    return cached_checkpoint(str(path), path.stat().st_mtime)


@st.cache_resource(show_spinner="Loading CIFAR-10...", max_entries=2)
def cached_dataset(folder: str) -> Cifar10:
    """The data set in ``folder``; never downloads (the download is an explicit button)."""
    return load_cifar10(folder, allow_download=False)


@st.cache_resource(show_spinner="Making stand-in pictures...")
def cached_synthetic() -> Cifar10:
    """Pattern images for previews while no data set is available (60,000 take a few seconds)."""
    return synthetic_dataset()


def preview_image() -> np.ndarray:
    """One 32x32x3 picture for illustrations: a real test image when the data is there."""
    try:
        data = cached_dataset(str(data_dir())) if data_ready() else cached_synthetic()
    except CifarnetError:  # files present but damaged: the Train and Misclassified pages explain
        data = cached_synthetic()
    return to_hwc(data.test_x[PREVIEW_INDEX])


def runs() -> list[RunInfo]:
    """Every run (the user's, newest first, then the shipped ones); re-read on each rerun.

    Only the shipped ones while the runs folder cannot be used (:func:`runs_notice` says why).
    """
    folder = runs_dir()
    return shipped_runs() if folder is None else list_runs(folder)


def runs_dir() -> Path | None:
    """The runs folder (``CIFARNET_RUNS``, else ``./runs``), or None when it cannot be used."""
    return _runs_folder()[0]


def runs_notice() -> None:
    """One message above every page when the runs folder cannot be used; the pages go on without it."""
    problem = _runs_folder()[1]
    if problem:
        st.error(
            f"**Your runs are unavailable.** {message(problem)}. Until then only the shipped runs are shown "
            "and no run can be started.",
            icon=":material/folder_off:",
        )


def _runs_folder() -> tuple[Path | None, str | None]:
    try:
        return resolve_runs_dir(), None
    except CifarnetError as exc:
        return None, str(exc)


def data_dir() -> Path:
    """The data folder this session uses: the one typed on a page, else CIFARNET_DATA / ./data."""
    return Path(st.session_state.get(DATA_KEY) or resolve_data_dir())


def dataset() -> Cifar10 | None:
    """The loaded data set, or ``None`` after drawing how to provide it (see :func:`data_panel`)."""
    try:
        return cached_dataset(str(data_dir()))
    except CifarnetError as exc:
        data_panel(str(exc))
        return None


def data_panel(problem: str | None = None) -> None:
    """Say plainly where the data set is expected and offer the two ways to provide it.

    ``problem`` is plain text (it often quotes a folder the user typed): it is shown literally.
    """
    folder = data_dir()
    offered = access.allowed()  # else the notice above the page says why there is no download button
    how = "with the button below" if offered else "with `python -m cifarnet data --download` on the dashboard's machine"
    with st.container(border=True):
        st.markdown("##### The CIFAR-10 data set is needed here")
        st.markdown(message(problem or f"No CIFAR-10 data set in {shown(folder)}."))
        st.markdown(
            "Provide it in one of two ways:\n"
            f"1. **Download** the official archive (170 MB) into {message(shown(folder))} {how}, or\n"
            "2. **Point to a folder** that already holds `cifar-10-batches-py` (or its parent) in the box "
            "below, or start the app with `CIFARNET_DATA=/path/to/folder`."
        )
        typed = st.text_input("Data folder", value=str(folder), key="data_dir_input")
        if typed and Path(typed) != folder:  # as paths: "/data/" is "/data", or this would rerun forever
            st.session_state[DATA_KEY] = typed
            st.rerun()
        if offered and st.button("Download CIFAR-10", icon=":material/download:"):
            with st.spinner("Downloading and unpacking CIFAR-10..."):
                try:
                    access.require()
                    download(folder)
                except CifarnetError as exc:
                    st.error(message(exc))
                else:
                    st.rerun()


def data_ready() -> bool:
    """True when the chosen folder has every batch file (cheap: no loading)."""
    return dataset_present(data_dir())
