"""Seconds to evaluate the 10,000 test images with ``cifarnet.training.engine.evaluate`` at several batch sizes.

    python bench/eval_speed.py [--norms bn,ln,gn] [--batches 64,128,256,1000] [--reps 5] [--threads 2] [--json]

Every run evaluates once per epoch, so this is part of every epoch's wall time (and of the
time to 85 %). The model is built as training holds it (channels-last ``s9``); the images
are random uint8 tensors, since speed does not depend on what they show. Batch sizes are
interleaved within each repetition so that background load affects them alike; the
median of the repetitions is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifarnet.nets.models import build_model
from cifarnet.training.engine import evaluate


def measure(norm: str, batches: list[int], reps: int) -> dict[int, float]:
    """Median seconds per full test-set evaluation for each batch size."""
    model = build_model("s9", norm).to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (10_000,))
    evaluate(model, images[:1000], labels[:1000])  # warm-up: allocators and oneDNN primitives
    times: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(reps):
        for b in batches:
            started = time.perf_counter()
            evaluate(model, images, labels, batch=b)
            times[b].append(time.perf_counter() - started)
    return {b: statistics.median(t) for b, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norms", default="bn,ln,gn")
    parser.add_argument("--batches", default="64,128,256,1000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows = [{"norm": n, "seconds": measure(n, batches, args.reps)} for n in args.norms.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"seconds for 10,000 test images (median of {args.reps}, {args.threads} threads), by batch size")
    print("norm  " + "  ".join(f"{b:>6}" for b in batches))
    for row in rows:
        print(f"{row['norm']:<4}  " + "  ".join(f"{row['seconds'][b]:6.2f}" for b in batches))


if __name__ == "__main__":
    main()
