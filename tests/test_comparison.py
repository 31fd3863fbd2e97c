"""The comparison of an experiment's variants (``cifarnet.analysis.comparison``) and the Compare page.

Fixture runs are real run folders in a temporary runs folder, in the current record format (``config.json``
through :func:`cifarnet.runs.folders.create_run`, ``metrics.jsonl``, ``results.json``, ``predictions.npz``,
``status.json``), grouped by a real experiment record; the figures they should give are worked out by hand in the
tests. The page is driven through ``AppTest`` on the shipped experiment and on such a fixture experiment with a
failed, a damaged and a missing run, and reads an experiment once per refresh.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import LABELS, fixture_run, real_data_present, texts, write_experiment

from cifarnet.analysis.comparison import (
    caption,
    confusion_difference,
    disagreement,
    load_comparison,
    per_class_table,
    spread_curves,
    summary_table,
)
from cifarnet.analysis.report import mean_text
from cifarnet.config import make_config
from cifarnet.data.cifar10 import CLASSES, load_cifar10
from cifarnet.nets.models import build_model, count_params
from cifarnet.runs import experiments
from cifarnet.runs.experiments import (
    experiment_runs,
    list_experiments,
    load_experiment,
    shipped_experiment,
)
from cifarnet.runs.records import EXPERIMENTS_FOLDER, write_json
from cifarnet.runs.status import Status


@pytest.fixture
def norms_experiment(runs_dir):
    """bn: two seeds; ln: three; gn: one finished, one failed, one with a damaged results.json, one missing.

    bn gets images 0-9 right in both seeds, ln gets them wrong in every seed, so images 0-9 are exactly the set
    "bn right, ln wrong"; image 10 is wrong for one bn seed only and must not count.
    """
    right = np.ones(len(LABELS), bool)
    bn_miss = right.copy()
    bn_miss[10] = False
    ln_right = right.copy()
    ln_right[:11] = False
    fixture_run(runs_dir, "bn0", "bn", 0, test=0.80, train=0.90, tta=0.81, wall=100.0)
    fixture_run(runs_dir, "bn1", "bn", 1, test=0.84, train=0.95, tta=0.86, wall=110.0, right=bn_miss)
    for seed, test in enumerate((0.70, 0.72, 0.77)):
        fixture_run(
            runs_dir, f"ln{seed}", "ln", seed, test=test, train=0.80, tta=test + 0.01, wall=120.0, right=ln_right
        )
    fixture_run(runs_dir, "gn0", "gn", 0, test=0.75, train=0.85, tta=0.76, wall=130.0)
    fixture_run(runs_dir, "gn1", "gn", 1, test=0.99, train=0.99, tta=0.99, wall=1.0, status="failed")
    damaged = fixture_run(runs_dir, "gn2", "gn", 2, test=0.99, train=0.99, tta=0.99, wall=1.0)
    (damaged / "results.json").write_text('{"test_acc": 0.9')
    write_experiment(
        runs_dir,
        "norms",
        {"norm=bn": ["bn0", "bn1"], "norm=ln": ["ln0", "ln1", "ln2"], "norm=gn": ["gn0", "gn1", "gn2", "gn-gone"]},
    )
    (experiment,) = [e for e in list_experiments(runs_dir) if e.name == "norms"]
    return experiment


def test_table_means_and_sample_std_by_hand(norms_experiment):
    comparison = load_comparison(norms_experiment)
    table = summary_table(comparison).set_index("variant")
    # bn: test 80, 84 -> mean 82, sample std sqrt((2^2 + 2^2) / 1) = 2.828; train 90, 95 -> 92.5 ± 3.536;
    # gap 10, 11 -> 10.5 ± 0.707; flip-TTA 81, 86 -> 83.5 ± 3.536; wall 100, 110 s -> 105 ± 7.07 s
    bn = table.loc["norm=bn"]
    assert bn["test_acc_text"] == "82.00 ± 2.83 %" and bn["train_acc_text"] == "92.50 ± 3.54 %"
    assert bn["gap_text"] == "10.50 ± 0.71 %" and bn["tta_acc_text"] == "83.50 ± 3.54 %"
    assert bn["wall_s_text"] == "105 ± 7 s" and bn["seeds"] == "2 of 2"
    assert bn["test_acc_mean"] == pytest.approx(0.82) and bn["test_acc_std"] == pytest.approx(0.0283, abs=1e-4)
    # ln: 70, 72, 77 -> mean 73, deviations -3, -1, 4: sqrt(26 / 2) = 3.606
    assert table.loc["norm=ln", "test_acc_text"] == "73.00 ± 3.61 %"
    assert table.loc["norm=ln", "test_acc_std"] == pytest.approx(np.sqrt(13) / 100)
    # gn: one usable seed of four -> no ±
    gn = table.loc["norm=gn"]
    assert gn["test_acc_text"] == "75.00 %" and np.isnan(gn["test_acc_std"]) and gn["seeds"] == "1 of 4"
    assert table["best"].tolist() == [True, False, False]
    assert set(table["params"]) == {count_params(build_model(**make_config({"norm": "bn"}).model_args))}


def test_unusable_runs_are_named_not_averaged(norms_experiment):
    comparison = load_comparison(norms_experiment)
    assert comparison.notes == [
        "norm=gn, run gn1: failed; out of memory",
        "norm=gn, run gn2: finished, but its results.json is missing or incomplete; "
        "results.json is damaged (JSONDecodeError)",
        "norm=gn, run gn-gone: missing; its run folder is missing",
    ]
    # the comparison is the one reader's runs, the missing one kept as missing, and it waits for none of them
    assert comparison.runs == experiment_runs(norms_experiment) and not comparison.pending
    assert [info.run_id for info in comparison.variant("norm=gn").runs] == ["gn0", "gn1", "gn2", "gn-gone"]
    assert comparison.variant("norm=gn").runs[-1].status == Status.MISSING


def test_live_run_is_drawn_and_pending_but_not_averaged(norms_experiment, runs_dir):
    live = fixture_run(runs_dir, "bn2", "bn", 2, test=0.10, train=0.30, tta=0.10, wall=5.0, status="running")
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cifarnet"])
    try:
        write_json(live / "status.json", {"status": "running", "pid": trainer.pid})
        write_experiment(runs_dir, "norms", {"norm=bn": ["bn0", "bn1", "bn2"], "norm=ln": ["ln0"]})
        (experiment,) = [e for e in list_experiments(runs_dir) if e.name == "norms"]
        comparison = load_comparison(experiment)
        assert comparison.pending and "norm=bn, run bn2: running" in comparison.notes
        assert summary_table(comparison).set_index("variant").loc["norm=bn", "test_acc_text"] == "82.00 ± 2.83 %"
        curves = spread_curves(comparison)
        first = curves[(curves["variant"] == "norm=bn") & (curves["metric"] == "test_acc") & (curves["step"] == 10)]
        assert first[["low", "high", "seeds"]].values.tolist() == [[0.0, 74.0, 3]]  # 0.10 - 0.1 .. 0.84 - 0.1
    finally:
        trainer.kill()
        trainer.wait()
    comparison = load_comparison(experiment)
    assert not comparison.pending and any(note.startswith("norm=bn, run bn2: failed") for note in comparison.notes)


def test_curves_per_class_confusion_and_disagreement(norms_experiment):
    comparison = load_comparison(norms_experiment)
    curves = spread_curves(comparison)
    final = curves[(curves["variant"] == "norm=bn") & (curves["metric"] == "test_acc") & (curves["step"] == 20)]
    assert final[["mean", "low", "high", "seeds"]].values.tolist() == [
        [pytest.approx(82.0), pytest.approx(80.0), pytest.approx(84.0), 2]
    ]  # the final twin once
    loss = curves[(curves["variant"] == "norm=ln") & (curves["metric"] == "train_loss")]
    assert loss["step"].tolist() == [5, 15] and loss["mean"].tolist() == pytest.approx([1.65, 1.15])  # 2 - s/20 - 0.1
    assert set(curves["variant"]) == {"norm=bn", "norm=ln", "norm=gn"}  # failed runs drawn by no one

    per_class = per_class_table(comparison).set_index(["variant", "class"])
    # airplane = images 0, 10, 20, 30; bn seed 1 misses image 10 -> 100 and 75 %; ln misses 0 and 10 -> 50 %
    assert per_class.loc[("norm=bn", "airplane"), "mean"] == pytest.approx(87.5)
    assert per_class.loc[("norm=bn", "airplane"), "std"] == pytest.approx(np.std([100, 75], ddof=1))
    assert per_class.loc[("norm=ln", "airplane"), "mean"] == pytest.approx(50.0)

    diff = confusion_difference(comparison, "norm=bn", "norm=ln")
    # airplane right: bn 4 and 3 -> 3.5, ln 2 -> +1.5; bird right: bn 4, ln 3 -> +1
    assert diff.loc["airplane", "airplane"] == pytest.approx(1.5) and diff.loc["bird", "bird"] == pytest.approx(1.0)
    assert diff.loc["airplane", "automobile"] == pytest.approx(-1.5) and diff.to_numpy().sum() == pytest.approx(0)

    found = disagreement(comparison, "norm=bn", "norm=ln")
    assert found.problem is None and sorted(found.images["index"]) == list(range(10))  # not image 10
    row = found.images.iloc[0]
    wrong = CLASSES[(CLASSES.index(row["true"]) + 1) % 10]
    assert row["a"] == [(row["true"], pytest.approx(0.7, abs=1e-3))]  # each model's own confidence
    assert row["b"] == [(wrong, pytest.approx(0.7, abs=1e-3))]
    assert caption(row, "A", "B", str).startswith(f"**{row['true']}**  \nA says :green[{row['true']} (70% sure)]")
    assert disagreement(comparison, "norm=ln", "norm=bn").images.empty


def test_disagreement_says_why_it_cannot_be_drawn(norms_experiment, runs_dir):
    (runs_dir / "bn1" / "predictions.npz").write_bytes(b"PK\x03\x04 cut short")
    found = disagreement(load_comparison(norms_experiment), "norm=bn", "norm=ln")
    assert found.problem == "run bn1 of norm=bn has no readable predictions.npz" and found.images.empty


def test_chart_titles_and_legends_show_labels_as_text(norms_experiment):
    """Plotly draws a subset of HTML (links too): a label from an experiment record is escaped."""
    from cifarnet.ui.charts import confusion_difference_figure, spread_figure

    comparison = load_comparison(norms_experiment)
    hostile = '<a href="http://127.0.0.1:9/">x</a>'
    frame = confusion_difference(comparison, "norm=bn", "norm=ln")
    title = confusion_difference_figure(frame, hostile, "norm=ln").layout.title.text
    assert "<a" not in title and '&lt;a href="http://127.0.0.1:9/"&gt;x&lt;/a&gt;' in title  # Plotly shows &lt; as <
    curves = spread_curves(comparison).replace({"variant": {"norm=bn": hostile}})
    names = {trace.name for trace in spread_figure(curves[curves["metric"] == "test_acc"], "epoch", "t", "y", {}).data}
    assert not any("<" in str(name) for name in names) and len(names - {None}) == 3


def test_shipped_experiment_table_is_the_records(monkeypatch, tmp_path):
    comparison = load_comparison(shipped_experiment())
    assert not comparison.notes and not comparison.pending
    table = summary_table(comparison).set_index("variant")
    for variant in comparison.variants:
        assert len(variant.usable) == 2
        accs = [info.results["test_acc"] for info in variant.usable]
        assert table.loc[variant.label, "test_acc_text"] == mean_text(accs)
    assert table["best"].idxmax() == "norm=bn"


# -- the page --------------------------------------------------------------------------------------


@pytest.fixture
def compare_page(app):
    """The Compare page in a fresh AppTest session (a query string picks the experiment)."""
    return lambda **query: app("compare", **query)


def test_page_on_the_shipped_experiment(compare_page):
    at = compare_page()
    assert at.selectbox[0].value == "shipped"
    table = at.dataframe[0].value
    assert table["variant"].tolist() == ["norm=bn", "norm=ln", "norm=gn"] and table["best"].tolist()[0]
    assert table.loc[0, "test_acc_text"] == "88.20 ± 0.14 %"  # README's results table says the same
    assert "Best: **norm=bn** at 88.20 ± 0.14 % test accuracy." in texts(at.caption)
    # the runs' parallel coordinates and curves, three curves, per-class bars, confusion difference
    assert len(at.get("plotly_chart")) == 7
    assert "110 test images that norm=bn gets right in every seed and norm=ln gets wrong" in texts(at.caption)
    if real_data_present():
        assert len(at.get("image")) == 24
    else:
        assert "is not the one these runs were evaluated on" in texts(at.markdown)
    assert not at.main.expander and at.query_params["experiment"] == "shipped"


def test_page_without_a_data_set_shows_all_but_the_pictures(compare_page, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "no-data"))
    at = compare_page()
    assert len(at.dataframe) == 2 and len(at.get("plotly_chart")) == 7 and not at.get("image")  # + the runs views
    assert "The CIFAR-10 data set is needed here" in texts(at.markdown)
    assert "The table, curves and classes above need no data set; only these pictures do." in texts(at.caption)


@pytest.mark.heavy
def test_page_on_an_experiment_with_failed_damaged_and_missing_runs(compare_page, norms_experiment, runs_dir, data_dir):
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    right = np.ones(len(labels), bool)
    right[:50] = False
    fixture_run(runs_dir, "big-bn", "bn", 0, test=0.9, train=0.9, tta=0.9, wall=9.0, labels=labels)
    fixture_run(runs_dir, "big-ln", "ln", 0, test=0.8, train=0.9, tta=0.8, wall=9.0, labels=labels, right=right)
    write_experiment(runs_dir, "big", {"norm=ln": ["big-ln"], "norm=bn": ["big-bn"]})
    at = compare_page(experiment="norms")
    assert at.selectbox[0].value == "norms"
    assert at.selectbox[0].options == ["big", "norms", "shipped: s10 with BN, LN and GN, seeds 0 and 1"]
    assert at.dataframe[0].value["test_acc_text"].tolist() == ["82.00 ± 2.83 %", "73.00 ± 3.61 %", "75.00 %"]
    assert "3 run(s) not in the figures" in at.main.expander[0].label
    assert "norm=gn, run gn1: failed; out of memory" in texts(at.markdown)
    assert "in every seed" in texts(at.caption) and not at.get("image")  # 40-image fixture runs: not this test set

    at.selectbox[0].select("big").run()
    assert "there is nothing to set it against" not in texts(at.info)
    assert at.query_params["experiment"] == "big" and not at.main.expander
    at.selectbox(key="compare_a_big").select("norm=bn").run()
    at.selectbox(key="compare_b_big").select("norm=ln").run()
    assert "50 test images that norm=bn gets right in every seed" in texts(at.caption)
    assert len(at.get("image")) == 24


def test_page_refuses_an_experiment_record_that_is_damaged(compare_page, runs_dir):
    folder = runs_dir / EXPERIMENTS_FOLDER
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    at = compare_page(experiment="broken")
    assert "broken.json is damaged (JSONDecodeError)" in texts(at.markdown)
    assert "Experiment broken names no runs." in texts(at.error)


@pytest.mark.heavy
def test_page_reads_the_experiment_once_per_refresh(compare_page, norms_experiment, runs_dir, monkeypatch):
    """Each run of the experiment shown, the missing one included, is read once per run of the page (it was read
    twice: once to decide the refresh timer, once to draw), and a queued run keeps the page refreshing."""
    fixture_run(runs_dir, "bn-q", "bn", 3, test=0.1, train=0.1, tta=0.1, wall=1.0, status="queued")
    record = load_experiment("norms", runs_dir)
    write_experiment(
        runs_dir,
        "norms",
        {label: [p.name for p in paths] + ["bn-q"] * (label == "norm=bn") for label, paths in record.variants.items()},
    )
    reads = Counter()
    cached, missing = experiments.read_run_cached, experiments.missing_run
    monkeypatch.setattr(
        experiments,
        "read_run_cached",
        lambda path, pretrained=False: reads.update([path.name]) or cached(path, pretrained),
    )
    monkeypatch.setattr(experiments, "missing_run", lambda path: reads.update([path.name]) or missing(path))
    names = {"bn0", "bn1", "bn-q", "ln0", "ln1", "ln2", "gn0", "gn1", "gn2", "gn-gone"}
    at = compare_page(experiment="norms")
    assert {name: reads[name] for name in names} == dict.fromkeys(names, 1)
    assert "refreshes every" in texts(at.caption)  # the queued run: pending, the page keeps refreshing
    runs = next(frame for frame in at.dataframe if "best at step" in frame.value.columns).value.set_index("run")
    assert runs.loc["gn-gone", "status"] == Status.MISSING and runs.loc["bn-q", "status"] == "queued"
    at.run()
    assert {name: reads[name] for name in names} == dict.fromkeys(names, 2)
