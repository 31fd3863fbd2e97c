"""The test images a run got wrong: which ones, filtered how, and how to caption them.

Everything comes from a run's ``predictions.npz`` (labels with the top-5 classes and
probabilities for every test image, in test-set order) and ``results.json``, so the
confusion matrix and per-class accuracy need no data set; only the pictures do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from cifarnet.data.images import enlarge, to_hwc
from cifarnet.runs.folders import RunInfo
from cifarnet.runs.records import PREDICTIONS_FILE


def mistakes(predictions: dict[str, np.ndarray], classes: Sequence[str]) -> pd.DataFrame:
    """One row per misclassified test image: index, true and predicted class, top-3 text.

    Sorted by confidence, most confident mistakes first: those are the instructive ones.
    """
    labels = predictions["labels"].astype(int)
    top = predictions["top_classes"].astype(int)
    probs = predictions["top_probs"].astype(float)
    wrong = np.flatnonzero(top[:, 0] != labels)
    frame = pd.DataFrame(
        {
            "index": wrong,
            "true": [classes[i] for i in labels[wrong]],
            "predicted": [classes[i] for i in top[wrong, 0]],
            "confidence": probs[wrong, 0],
            "top3": [[(classes[c], float(p)) for c, p in zip(top[i, :3], probs[i, :3])] for i in wrong],
        }
    )
    return frame.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def filter_mistakes(frame: pd.DataFrame, true: str | None = None, predicted: str | None = None) -> pd.DataFrame:
    """Keep the rows of one true class and/or one predicted class (``None`` = any)."""
    keep = np.ones(len(frame), dtype=bool)
    if true:
        keep &= (frame["true"] == true).to_numpy()
    if predicted:
        keep &= (frame["predicted"] == predicted).to_numpy()
    return frame[keep].reset_index(drop=True)


def page_count(rows: int, per_page: int) -> int:
    """Pages needed for ``rows`` tiles (at least one, so the page picker always has a value)."""
    return max(1, -(-rows // per_page))


def page_of(frame: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of 1-based ``page``."""
    return frame.iloc[(page - 1) * per_page : page * per_page]


def labels_match(predictions: dict[str, np.ndarray], test_labels: torch.Tensor) -> bool:
    """True when the loaded test set is the one the run was evaluated on (same labels in order).

    A different copy (another data folder, the synthetic test set) would put the wrong
    picture next to each prediction, so the page warns instead of misleading.
    """
    labels = predictions["labels"].astype(np.int64)
    return len(labels) == len(test_labels) and bool(np.array_equal(labels, test_labels.numpy()))


def tiles(images: torch.Tensor, frame: pd.DataFrame, scale: int = 4) -> list[np.ndarray]:
    """The enlarged HxWx3 pictures for the rows of ``frame`` (test-set uint8 images)."""
    return [enlarge(to_hwc(images[int(i)]), scale) for i in frame["index"]]


def caption(row: pd.Series, literal: Callable[[str], str]) -> str:
    """Markdown title of a tile: predicted (red) / actual (green), then the top-3 probabilities. Class names come
    from the run's ``results.json``: each goes through ``literal`` (the page's escaping) before it is placed."""
    top3 = " · ".join(f"{literal(name)} {100 * p:.0f}%" for name, p in row["top3"])
    return f":red[**{literal(row['predicted'])}**] / :green[**{literal(row['true'])}**]  \n{top3}"


RESULT_KEYS = ("classes", "confusion", "per_class_acc")


def runs_with_predictions(runs: Sequence[RunInfo]) -> list[RunInfo]:
    """Finished runs with per-image predictions and complete results (shipped ones included).

    A run whose ``results.json`` lacks a field the page draws is left out rather than
    breaking the page; the Runs page reports its damage.
    """
    return [
        info
        for info in runs
        if info.results and all(key in info.results for key in RESULT_KEYS) and (info.path / PREDICTIONS_FILE).is_file()
    ]


def confusion_frame(results: dict) -> pd.DataFrame:
    """Counts with true classes as rows and predicted classes as columns."""
    classes = results["classes"]
    return pd.DataFrame(
        results["confusion"], index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted")
    )


def per_class_frame(results: dict) -> pd.DataFrame:
    """Accuracy of each true class in percent, in class order."""
    accs = results["per_class_acc"]
    return pd.DataFrame({"class": list(accs), "accuracy": [100.0 * float(v) for v in accs.values()]})


def cell_from_selection(selection: dict, classes: Sequence[str]) -> tuple[str, str] | None:
    """(true, predicted) of the confusion-matrix cell a user clicked, from Plotly's event.

    The figure places the classes at positions 0..9 and draws their (escaped) names as tick text, so the event
    holds positions: a class name from a record never has to be matched against the way it was drawn."""
    points = (selection or {}).get("selection", {}).get("points") or []
    for point in points:
        true, predicted = point.get("y"), point.get("x")
        if all(
            isinstance(i, (int, float)) and float(i).is_integer() and 0 <= i < len(classes) for i in (true, predicted)
        ):
            return classes[int(true)], classes[int(predicted)]
    return None
