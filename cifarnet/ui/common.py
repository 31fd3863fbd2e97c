"""Pieces several pages share: cached models and data, the run picker, the data-set panel.

Loaded data and models are cached with ``st.cache_resource`` (once per server, not per
session): the test set is 30 MB and a model load takes a moment, and every widget
click reruns the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st
from torch import nn

from cifarnet.checkpoint import load_model
from cifarnet.data import Cifar10, dataset_present, download, load_cifar10, resolve_data_dir, synthetic_dataset
from cifarnet.errors import CifarnetError
from cifarnet.images import to_hwc
from cifarnet.models import build_model
from cifarnet.runs import RunInfo, list_runs, resolve_runs_dir

DATA_KEY = "data_dir"
PREVIEW_INDEX = 3  # a test airplane: an object with a clear outline


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
    """Every run (the user's, newest first, then the shipped ones); re-read on each rerun."""
    return list_runs(resolve_runs_dir())


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
    """Say plainly where the data set is expected and offer the two ways to provide it."""
    folder = data_dir()
    with st.container(border=True):
        st.markdown("##### The CIFAR-10 data set is needed here")
        st.write(problem or f"No CIFAR-10 data set in `{folder}`.")
        st.markdown(
            "Provide it in one of two ways:\n"
            f"1. **Download** the official archive (170 MB) into `{folder}` with the button below, or\n"
            "2. **Point to a folder** that already holds `cifar-10-batches-py` (or its parent) in the box "
            "below, or start the app with `CIFARNET_DATA=/path/to/folder`.")
        typed = st.text_input("Data folder", value=str(folder), key="data_dir_input")
        if typed and typed != str(folder):
            st.session_state[DATA_KEY] = typed
            st.rerun()
        if st.button("Download CIFAR-10", icon=":material/download:"):
            with st.spinner("Downloading and unpacking CIFAR-10..."):
                try:
                    download(folder)
                except CifarnetError as exc:
                    st.error(str(exc))
                else:
                    st.rerun()


def data_ready() -> bool:
    """True when the chosen folder has every batch file (cheap: no loading)."""
    return dataset_present(data_dir())
