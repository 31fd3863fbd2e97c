"""Seconds for Grad-CAM of one image and for the activation statistics of 256 images, per model.

    python bench/explain_speed.py [--models s9-bn,s9-ln,s9-gn,seed-bn] [--reps 7] [--threads 2]
                                  [--images 256] [--data-dir DIR] [--cli] [--json]

Grad-CAM: ``cifarnet.analysis.gradcam.grad_cam`` of one test image at the model's last block
(forward pass, one ``autograd.grad``, the map upsampled to 32x32), the model already
loaded and its layers already found (a warm-up call does both). Statistics:
``cifarnet.analysis.activation_stats.activation_stats`` over ``--images`` test images (every ReLU
and norm, one forward pass). ``s9-*`` are the shipped checkpoints; ``seed-*`` is built
untrained (no ``seed`` model ships; speed does not depend on the weights). The pictures are
the first test images when CIFAR-10 is found, else random ones. Models are interleaved
within each repetition so that background load affects them alike; medians are reported.
``--cli`` also times ``python -m cifarnet explain --index 0:64`` end to end (process start,
imports, data loading and the sheet included; median of 3; needs the data set).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifarnet.analysis.activation_stats import activation_stats  # noqa: E402
from cifarnet.analysis.gradcam import grad_cam  # noqa: E402
from cifarnet.data.cifar10 import load_cifar10  # noqa: E402
from cifarnet.errors import CifarnetError  # noqa: E402
from cifarnet.nets.layers import default_layer  # noqa: E402
from cifarnet.nets.models import build_model  # noqa: E402
from cifarnet.runs.folders import PRETRAINED_DIR  # noqa: E402
from cifarnet.runs.records import MODEL_FILE  # noqa: E402
from cifarnet.training.checkpoint import load_model  # noqa: E402

GRADCAM_TARGET_S, STATS_TARGET_S = 0.3, 3.0


def model_named(name: str) -> torch.nn.Module:
    """A shipped checkpoint (``s9-bn``) or an untrained build (``seed-ln``), in eval mode."""
    shipped = PRETRAINED_DIR / name / MODEL_FILE
    if shipped.is_file():
        return load_model(shipped)
    arch, norm = name.split("-")
    return build_model(arch, norm).eval()


def test_images(data_dir: str | None, count: int) -> tuple[torch.Tensor, str]:
    try:
        return load_cifar10(data_dir, allow_download=False).test_x[:count], "CIFAR-10 test images"
    except CifarnetError:
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), "random pictures"


def seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(names: list[str], images: torch.Tensor, reps: int) -> list[dict]:
    """Median seconds per model for Grad-CAM of images[0] and for the statistics of all images."""
    models = {name: model_named(name) for name in names}
    layers = {name: default_layer(model) for name, model in models.items()}
    for name, model in models.items():  # warm-up: layer discovery, allocators, oneDNN primitives
        grad_cam(model, images[:1], layers[name])
        activation_stats(model, images[:8])
    cams: dict[str, list[float]] = {name: [] for name in names}
    stats: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        for name, model in models.items():
            cams[name].append(seconds(lambda m=model, layer=layers[name]: grad_cam(m, images[:1], layer)))
            stats[name].append(seconds(lambda m=model: activation_stats(m, images)))
    return [
        {
            "model": name,
            "layer": layers[name],
            "gradcam_s": statistics.median(cams[name]),
            "stats_s": statistics.median(stats[name]),
            "gradcam_runs_s": cams[name],
            "stats_runs_s": stats[name],
        }
        for name in names
    ]


def cli_seconds(data_dir: str | None, runs: int = 3) -> float:
    """Median wall time of ``explain --index 0:64`` in a fresh process."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "cifarnet",
            "explain",
            "--checkpoint",
            str(PRETRAINED_DIR / "s9-bn" / MODEL_FILE),
            "--index",
            "0:64",
            "--out",
            str(Path(folder) / "sheet.png"),
        ]
        command += ["--data-dir", data_dir] if data_dir else []
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="s9-bn,s9-ln,s9-gn,seed-bn")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--data-dir")
    parser.add_argument("--cli", action="store_true", help="also time the explain command on 64 test images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, source = test_images(args.data_dir, args.images)
    rows = measure(args.models.split(","), images, args.reps)
    result = {
        "images": len(images),
        "source": source,
        "threads": args.threads,
        "reps": args.reps,
        "models": rows,
        "cli_64_s": cli_seconds(args.data_dir) if args.cli else None,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"median of {args.reps}, {args.threads} threads, {len(images)} {source}; "
        f"targets: Grad-CAM < {GRADCAM_TARGET_S} s, statistics < {STATS_TARGET_S} s"
    )
    print(f"{'model':<9} {'layer':<9} {'Grad-CAM (s)':>13} {'statistics (s)':>15}")
    for row in rows:
        print(f"{row['model']:<9} {row['layer']:<9} {row['gradcam_s']:>13.3f} {row['stats_s']:>15.2f}")
    if result["cli_64_s"] is not None:
        print(f"explain --index 0:64 end to end: {result['cli_64_s']:.1f} s")


if __name__ == "__main__":
    main()
