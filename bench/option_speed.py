"""What a speed option buys: the engine's training step with the option off and on, side by side.

    python bench/option_speed.py --option compile [--norms bn,ln,gn] [--batch-size 128] [--reps 5] [--json]
    python bench/option_speed.py --option precision          # fp32 against bf16 autocast

``--option compile`` compares eager with ``torch.compile``; ``--option precision`` compares
fp32 with bfloat16 autocast. For each norm, two trainers of the real engine
(``Trainer.step`` on ``Trainer.batches``, as ``bench/throughput.py`` times them) are built, one with the
option off and one on. The "on" one's first two steps are timed separately: for compile
that is the one-off compile cost a run pays. Then both are timed alternately ``--reps``
times in one process, and the median of the per-repetition ratios is reported, so
background load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import cifarnet_step, images_per_second, load_data

from cifarnet.config import make_config

# the config value of each option when off and when on
OPTIONS = {"compile": (False, True), "precision": ("fp32", "bf16")}


def measure_norm(norm: str, args: argparse.Namespace, data) -> dict:
    """First-steps time of the "on" side, off and on img/s (medians) and their ratio for one norm."""
    base = {"norm": norm, "batch_size": args.batch_size, "threads": args.threads, "device": "cpu"}
    off_value, on_value = OPTIONS[args.option]
    off = cifarnet_step(data, make_config({**base, args.option: off_value}))
    on = cifarnet_step(data, make_config({**base, args.option: on_value}))
    started = time.perf_counter()
    for _ in range(2):  # a compile happens in the first call; the second settles any recompile
        on()
    first_steps_s = time.perf_counter() - started
    speeds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.reps):
        for name, step in (("off", off), ("on", on)):
            speeds[name].append(images_per_second(step, args.steps, 1, args.batch_size))
    ratios = [b / a for a, b in zip(speeds["off"], speeds["on"])]
    return {
        "norm": norm,
        "option": args.option,
        "off": off_value,
        "on": on_value,
        "first_steps_s": first_steps_s,
        "off_img_s": statistics.median(speeds["off"]),
        "on_img_s": statistics.median(speeds["on"]),
        "ratio": statistics.median(ratios),
        "per_rep_ratios": ratios,
    }


def describe(row: dict) -> str:
    """One norm's figures on one line."""
    per_rep = " ".join(f"{r:.2f}" for r in row["per_rep_ratios"])
    return (
        f"{row['norm']:<3} first two steps {row['first_steps_s']:5.1f} s  "
        f"{row['off']} {row['off_img_s']:6.0f} img/s  {row['on']} {row['on_img_s']:6.0f} img/s  "
        f"ratio {row['ratio']:.2f}x  (per rep {per_rep})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--option", choices=OPTIONS, required=True)
    parser.add_argument("--norms", default="bn,ln,gn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data_dir)
    rows = [measure_norm(norm, args, data) for norm in args.norms.split(",")]
    header = (
        f"{args.option}: torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, "
        f"median of {args.reps} x {args.steps} steps"
    )
    print(json.dumps(rows, indent=1) if args.json else "\n".join([header, *map(describe, rows)]))


if __name__ == "__main__":
    main()
