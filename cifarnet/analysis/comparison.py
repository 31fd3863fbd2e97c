"""An experiment's variants side by side: the write-up's table, curves with their seed spread, per-class
accuracy, the confusion difference of two variants and the test images one gets right and the other wrong.

Everything here reads the runs' own records (``results.json``, ``metrics.jsonl``, ``predictions.npz``), so the
comparison needs no data set; only the pictures of the disagreement gallery do. The runs come from
:func:`cifarnet.runs.experiments.experiment_runs`, the one reader of an experiment's runs. Only finished runs with
complete results enter a mean: a run that is still training, queued, stopped, failed, damaged or missing is listed
with what it is (:attr:`Comparison.notes`), never averaged in, so a figure always says over how many seeds it was
taken. The spread over seeds is the sample standard deviation (``ddof=1``, as
:func:`cifarnet.analysis.report.mean_text` prints it): two seeds are a sample of the seeds one could have drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cifarnet.analysis.curves import curves_frame
from cifarnet.analysis.misclassified import RESULT_KEYS
from cifarnet.analysis.report import mean_text
from cifarnet.errors import shorten
from cifarnet.runs.experiments import Experiment, ExperimentRun, experiment_runs, pending
from cifarnet.runs.folders import RunInfo
from cifarnet.runs.records import RESULTS_FILE, read_predictions
from cifarnet.runs.status import LIVE, PENDING, Status

CURVE_METRICS = ("test_acc", "train_loss", "test_loss")
SPREAD = "sample standard deviation over seeds (ddof=1)"
# The table's figures: (column, what it holds); each is a per-seed value averaged over the variant's seeds.
FIGURES = {
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "gap": "train − test",
    "tta_acc": "flip-TTA accuracy",
    "wall_s": "wall time",
}


@dataclass
class Variant:
    """One variant of an experiment: every run it should have, and those finished with complete results."""

    label: str
    runs: list[RunInfo]
    usable: list[RunInfo] = field(default_factory=list)


@dataclass
class Comparison:
    """An experiment as read now: its runs (as :func:`experiment_runs` read them) grouped into variants, and one
    line for each run left out of the figures."""

    experiment: Experiment
    runs: list[ExperimentRun]
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """True while a run of the experiment trains or waits in the queue (the page keeps refreshing)."""
        return pending(self.runs)

    @property
    def labels(self) -> list[str]:
        return [variant.label for variant in self.variants]

    def variant(self, label: str) -> Variant:
        return next(variant for variant in self.variants if variant.label == label)


def _problem(info: RunInfo) -> str | None:
    """Why a run cannot enter the figures (None when it can): its status, error and damage in one line."""
    if (
        info.status == Status.FINISHED
        and info.results
        and all(key in info.results for key in RESULT_KEYS)
        and isinstance(info.results.get("test_acc"), (int, float))
    ):
        return None
    if info.status == Status.FINISHED:
        what = f"finished, but its {RESULTS_FILE} is missing or incomplete"
    else:
        what = info.status
    details = [info.status_record.get("error")] if info.status not in (Status.FINISHED, *PENDING) else []
    return "; ".join(str(part) for part in [what, *details, *info.damage] if part)


def load_comparison(experiment: Experiment) -> Comparison:
    """Read every run of ``experiment`` once, through :func:`experiment_runs` (a missing one is listed as missing),
    and sort them into its variants; a variant left with no run keeps its place."""
    runs, variants, notes = experiment_runs(experiment), [], list(experiment.damage)
    for label in experiment.variants:
        variant = Variant(label, [info for of, info in runs if of == label])
        for info in variant.runs:
            problem = _problem(info)
            if problem is None:
                variant.usable.append(info)
            else:
                notes.append(f"{shorten(label)}, run {info.run_id}: {problem}")
        variants.append(variant)
    return Comparison(experiment, runs, variants, notes)


def _last_train_acc(info: RunInfo) -> float | None:
    """The train accuracy of the last evaluation record: the augmented batches since the evaluation before it
    (the last epoch when a run evaluates once per epoch). The trainer does not re-measure the training set."""
    for record in reversed(info.evals):
        if isinstance(record.get("train_acc"), (int, float)):
            return float(record["train_acc"])
    return None


def run_figures(info: RunInfo) -> dict[str, float | None]:
    """One finished run's figures as the table averages them: accuracies as fractions, wall time in seconds."""
    results = info.results or {}
    test, train = results.get("test_acc"), _last_train_acc(info)
    wall = results.get("elapsed_s")
    return {
        "test_acc": float(test),
        "train_acc": train,
        "gap": None if train is None else train - float(test),
        "tta_acc": results.get("tta_acc") if isinstance(results.get("tta_acc"), (int, float)) else None,
        "wall_s": float(wall) if isinstance(wall, (int, float)) else info.duration_s,
    }


def _seconds_text(values: list[float]) -> str:
    """``335 s`` for one value, ``335 ± 4 s`` for several (sample standard deviation)."""
    if len(values) < 2:
        return f"{values[0]:.0f} s"
    return f"{np.mean(values):.0f} ± {np.std(values, ddof=1):.0f} s"


def summary_table(comparison: Comparison) -> pd.DataFrame:
    """One row per variant: every figure as ``mean ± std`` text (``*_text``) and as numbers (``*_mean``,
    ``*_std``; std is NaN with one seed), the seeds counted, parameters, and ``best`` on the variant with the
    highest mean test accuracy. A variant with no finished run keeps its row, with empty figures."""
    rows = []
    for variant in comparison.variants:
        figures = [run_figures(info) for info in variant.usable]
        params = sorted({info.config.get("params") for info in variant.usable} - {None})
        row = {
            "variant": variant.label,
            "seeds": f"{len(variant.usable)} of {len(variant.runs)}",
            "params": params[0] if len(params) == 1 else None,
            "best": False,
        }
        for name in FIGURES:
            values = [f[name] for f in figures if f[name] is not None]
            row[f"{name}_mean"] = float(np.mean(values)) if values else np.nan
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
            text = _seconds_text if name == "wall_s" else mean_text
            row[f"{name}_text"] = text(values) if values else "–"
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty and table["test_acc_mean"].notna().any():
        table.loc[table["test_acc_mean"].idxmax(), "best"] = True
    return table


def spread_curves(comparison: Comparison, metrics: tuple[str, ...] = CURVE_METRICS) -> pd.DataFrame:
    """Per variant, metric and step: the mean over seeds and the lowest and highest seed (the band), with the
    epoch and time averaged; ``seeds`` counts the runs that reached the step. Finished and still-training runs
    are drawn (a live experiment fills in); stopped, failed and damaged ones are not."""
    parts = []
    for variant in comparison.variants:
        drawn = [info for info in variant.runs if info in variant.usable or info.status in LIVE]
        frame = curves_frame(drawn, metrics)
        if not frame.empty:
            parts.append(frame.assign(variant=variant.label))
    columns = ["variant", "metric", "step", "epoch", "time", "mean", "low", "high", "seeds"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    # A run logs its last evaluation twice (at the epoch's end and as the final record): one value per run and step.
    frame = frame.drop_duplicates(["variant", "run", "metric", "step"], keep="last")
    grouped = frame.groupby(["variant", "metric", "step"], sort=False)
    out = grouped.agg(
        epoch=("epoch", "mean"),
        time=("time", "mean"),
        mean=("value", "mean"),
        low=("value", "min"),
        high=("value", "max"),
        seeds=("run", "nunique"),
    ).reset_index()
    return out.sort_values(["variant", "metric", "step"], kind="stable")[columns].reset_index(drop=True)


def per_class_table(comparison: Comparison) -> pd.DataFrame:
    """Per variant and class: accuracy in percent, mean and sample standard deviation over its finished seeds."""
    rows = []
    for variant in comparison.variants:
        for info in variant.usable:
            for name, value in info.results["per_class_acc"].items():
                rows.append((variant.label, name, 100.0 * float(value)))
    frame = pd.DataFrame(rows, columns=["variant", "class", "accuracy"])
    grouped = frame.groupby(["variant", "class"], sort=False)["accuracy"]
    return grouped.agg(mean="mean", std=lambda s: s.std(ddof=1)).reset_index()


def mean_confusion(variant: Variant) -> pd.DataFrame | None:
    """The variant's confusion matrix averaged over its finished seeds (rows true, columns predicted)."""
    if not variant.usable:
        return None
    classes = variant.usable[0].results["classes"]
    counts = np.mean([np.asarray(info.results["confusion"], dtype=float) for info in variant.usable], axis=0)
    return pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))


def confusion_difference(comparison: Comparison, a: str, b: str) -> pd.DataFrame | None:
    """``a``'s mean confusion minus ``b``'s: on the diagonal, how many more images of a class ``a`` gets right;
    off it, how many more of one mistake ``a`` makes. None when either has no finished run."""
    first, second = mean_confusion(comparison.variant(a)), mean_confusion(comparison.variant(b))
    if first is None or second is None or list(first.index) != list(second.index):
        return None
    return first - second


@dataclass
class Disagreement:
    """Test images variant ``a`` gets right in every finished seed and ``b`` gets wrong in every one."""

    a: str
    b: str
    images: pd.DataFrame  # index, true, a (its prediction and confidence), b (idem), b_confidence
    labels: np.ndarray | None  # the test labels the runs were evaluated on (to check a data set against)
    problem: str | None = None  # why there is no set (a run without readable predictions, different test sets)


def _predictions(variant: Variant) -> tuple[list[dict[str, np.ndarray]], str | None]:
    """The predictions of the variant's finished runs, or why they cannot be used."""
    packs = []
    for info in variant.usable:
        pack = read_predictions(info.path)
        if pack is None:  # read_predictions checks every array the gallery needs
            return [], f"run {info.run_id} of {variant.label} has no readable predictions.npz"
        packs.append(pack)
    if not packs:
        return [], f"{variant.label} has no finished run yet"
    return packs, None


def _votes(packs: list[dict[str, np.ndarray]], classes: list[str], rows: np.ndarray) -> list[list[tuple[str, float]]]:
    """Each image's top-1 classes over the seeds with the variant's own mean confidence in each,
    ``[("dog", 0.81), ("cat", 0.4)]`` (the same class once): a confidence per model, so two variants' figures
    need not sum to 100%."""
    votes = []
    for i in rows:
        seen: dict[int, list[float]] = {}
        for pack in packs:
            seen.setdefault(int(pack["top_classes"][i, 0]), []).append(float(pack["top_probs"][i, 0]))
        votes.append([(classes[c], float(np.mean(p))) for c, p in seen.items()])
    return votes


def disagreement(comparison: Comparison, a: str, b: str) -> Disagreement:
    """The images ``a`` gets right and ``b`` wrong, in every seed of each (so seed noise does not count), sorted
    with ``b``'s most confident mistakes first."""
    empty = pd.DataFrame(columns=["index", "true", "a", "b", "b_confidence"])
    packs_a, problem = _predictions(comparison.variant(a))
    packs_b, problem_b = _predictions(comparison.variant(b))
    if problem or problem_b:
        return Disagreement(a, b, empty, None, problem or problem_b)
    labels = packs_a[0]["labels"].astype(np.int64)
    if any(not np.array_equal(pack["labels"], labels) for pack in packs_a + packs_b):
        return Disagreement(a, b, empty, None, "the runs were evaluated on different test sets")
    right_a = np.all([pack["top_classes"][:, 0] == labels for pack in packs_a], axis=0)
    wrong_b = np.all([pack["top_classes"][:, 0] != labels for pack in packs_b], axis=0)
    rows = np.flatnonzero(right_a & wrong_b)
    classes = comparison.variant(a).usable[0].results["classes"]
    confidence = np.mean([pack["top_probs"][rows, 0].astype(float) for pack in packs_b], axis=0)
    images = pd.DataFrame(
        {
            "index": rows,
            "true": [classes[c] for c in labels[rows]],
            "a": _votes(packs_a, classes, rows),
            "b": _votes(packs_b, classes, rows),
            "b_confidence": confidence,
        }
    )
    images = images.sort_values("b_confidence", ascending=False, kind="stable").reset_index(drop=True)
    return Disagreement(a, b, images, labels)


def caption(row: pd.Series, a: str, b: str, literal: Callable[[str], str]) -> str:
    """Markdown title of a gallery tile: the true class, then what each variant says, with its own confidence
    (right green, wrong red). Variant and class names come from records: each goes through ``literal``."""

    def votes(column: str) -> str:
        return " · ".join(f"{literal(name)} ({100 * p:.0f}% sure)" for name, p in row[column])

    return (
        f"**{literal(row['true'])}**  \n{literal(a)} says :green[{votes('a')}]  \n{literal(b)} says :red[{votes('b')}]"
    )
