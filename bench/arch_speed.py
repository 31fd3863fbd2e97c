"""Training img/s of each architecture on this machine, measured side by side in one process.

    python bench/arch_speed.py [--batch-size 128] [--reps 7] [--json]

Each repetition times one step of the training engine (``Trainer.step``: forward, backward,
optimizer update, as a run does them) on a random batch; the median of the repetitions after
a warm-up is reported, and the ratio to ``seed`` is taken from the same run, so background load
affects both alike.
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

from cifarnet.config import make_config
from cifarnet.data.augment import to_float
from cifarnet.data.cifar10 import CLASSES, Cifar10
from cifarnet.nets.models import ARCHS, build_model, count_params
from cifarnet.training.engine import Trainer


def step_seconds(arch: str, norm: str, batch: int, reps: int) -> list[float]:
    images, labels = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (batch,))
    cfg = make_config({"arch": arch, "norm": norm, "batch_size": batch, "device": "cpu"})
    trainer = Trainer(cfg, Cifar10(images, labels, images, labels, CLASSES, "random"))
    x = to_float(images).contiguous(memory_format=torch.channels_last)  # the layout the engine's batches have
    times = []
    for _ in range(reps + 1):  # the first step warms up allocators and kernels
        started = time.perf_counter()
        trainer.step(x, labels)
        times.append(time.perf_counter() - started)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--norms", default="bn,ln,gn")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for norm in args.norms.split(","):
        for arch in ARCHS:
            seconds = statistics.median(step_seconds(arch, norm, args.batch_size, args.reps))
            rows.append(
                {
                    "arch": arch,
                    "norm": norm,
                    "params": count_params(build_model(arch, norm)),
                    "img_s": args.batch_size / seconds,
                }
            )
    for row in rows:
        seed = next(r for r in rows if r["arch"] == "seed" and r["norm"] == row["norm"])
        row["x_seed"] = row["img_s"] / seed["img_s"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"median of {args.reps} steps"
    )
    for row in rows:
        print(
            f"{row['arch']:<5} {row['norm']:<3} {row['params']:>8,} params {row['img_s']:8.0f} img/s "
            f"({row['x_seed']:.1f}x seed)"
        )


if __name__ == "__main__":
    main()
