"""Smoke tests of the bench scripts: with tiny settings they run end to end and report well-formed JSON.

Their figures are not checked here (a loaded test machine would make any bound flaky); the benchmarks
themselves, with their real settings, are run by hand and their figures written to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REAL_DATA, ROOT

from cifarnet.devices import native_bf16_cpu

pytestmark = pytest.mark.slow  # each runs a benchmark script end to end in a subprocess
# bfloat16 where the CPU has no native support runs on emulated kernels: a benchmark's warm-up alone takes minutes
EMULATED_BF16 = pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bfloat16 (emulated: minutes)")


@pytest.mark.parametrize("precision", ["auto", pytest.param("bf16", marks=EMULATED_BF16)])
def test_throughput_json_reports_both_pipelines(precision):
    """Tiny settings keep it to seconds; without the real data the bench falls back to synthetic images."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "throughput.py"),
        "--json",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--reps",
        "1",
        "--batch-size",
        "32",
        "--workers",
        "1",
        "--threads",
        "1",
        "--data-dir",
        str(REAL_DATA),
        "--precision",
        precision,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for key in (
        "cifarnet_img_s",
        "baseline_img_s",
        "ratio",
        "gflop_per_step",
        "cifarnet_gflops",
        "peak_gflops",
        "gemm_gflops",
        "conv1x1_gflops",
    ):
        assert result[key] > 0, key
    assert result["ratio"] == result["cifarnet_img_s"] / result["baseline_img_s"]
    assert result["batch_size"] == 32 and result["workers"] == 1 and result["precision"] == precision
    fp32_peak = result["cpu"]["peak_gflops"]
    assert result["peak_gflops"] == (fp32_peak * result["cpu"]["bf16_per_lane"] if precision == "bf16" else fp32_peak)


@pytest.mark.parametrize(
    "option, off, on", [("compile", False, True), pytest.param("precision", "fp32", "bf16", marks=EMULATED_BF16)]
)
def test_option_speed_json_compares_off_and_on(option, off, on):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "option_speed.py"),
        "--json",
        "--option",
        option,
        "--norms",
        "bn",
        "--steps",
        "1",
        "--reps",
        "1",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--data-dir",
        str(REAL_DATA),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)
    assert (row["norm"], row["option"], row["off"], row["on"]) == ("bn", option, off, on)
    assert row["first_steps_s"] > 0 and row["off_img_s"] > 0 and row["on_img_s"] > 0
    assert row["ratio"] == row["per_rep_ratios"][0] == row["on_img_s"] / row["off_img_s"]


def test_eval_speed_json_times_each_batch_size():
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "eval_speed.py"),
        "--json",
        "--norms",
        "ln",
        "--batches",
        "500,1000",
        "--reps",
        "1",
        "--threads",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)
    assert row["norm"] == "ln" and set(row["seconds"]) == {"500", "1000"}
    assert all(0 < s < 60 for s in row["seconds"].values())


def test_trainer_start_times_real_trainers(data_dir):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "trainer_start.py"),
        "--json",
        "--reps",
        "1",
        "--data-dir",
        str(data_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["reps"] == 1 and result["interpreter_s"] > 0 and 0 < result["running_s"] <= result["first_record_s"]
    assert result["beyond_interpreter_s"] == pytest.approx(result["first_record_s"] - result["interpreter_s"], abs=0.02)


@pytest.mark.ddp
def test_ddp_speed_json_compares_one_process_with_several():
    """One repetition of 1 x 2 threads against 2 processes (torchrun) x 1 thread, two tiny steps each."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "ddp_speed.py"),
        "--json",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--reps",
        "1",
        "--batch-size",
        "16",
        "--norm",
        "gn",
        "--data-dir",
        str(REAL_DATA),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["one_process_img_s"] > 0 and result["processes_img_s"] > 0 and result["cores"] == 2
    assert result["ratio"] == result["per_rep_ratios"][0] == result["processes_img_s"] / result["one_process_img_s"]
    assert len(result["load_average_before"]) == 3


def test_comparison_time_json_reports_every_run(data_dir):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "comparison_time.py"),
        "--json",
        "--data-dir",
        str(data_dir),
        "--",
        "--vary",
        "norm=bn,gn",
        "--subset",
        "10",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--eval-subset",
        "10",
        "--no-tta",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "CIFARNET_MAX_RUNS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads(done.stdout)["results"]
    assert result["wall_s"] > 0 and len(result["runs"]) == 2
    for row in result["runs"]:
        assert row["status"] == "finished" and 0 <= row["test_acc"] <= 1 and row["median_img_s"] > 0
        assert row["threads"] and all(t >= 1 for t in row["threads"])
