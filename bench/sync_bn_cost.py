"""What synchronised BatchNorm costs a CPU step beyond its messages: ``CpuSyncBatchNorm`` against ``BatchNorm2d``.

    python bench/sync_bn_cost.py                 # s10, batch 64, fp32, 1 thread: median ms a step, and the ratio

One process, in a gloo group of one (its all-reduces go through gloo but carry nothing to anyone), trains two
copies of the same model, one with each BN, taking turns step by step, so the machine's load weighs on both
alike. What remains is the arithmetic around the statistics; on one CPU the several-process layouts of
``bench/ddp_speed.py`` add the messages and the waits for the slower process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cifarnet.nets.models import build_model  # noqa: E402
from cifarnet.training.distributed import sync_cpu_batchnorm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as store:
        dist.init_process_group("gloo", init_method=f"file://{store}/group", rank=0, world_size=1)
        models = {}
        for name in ("batchnorm", "sync"):
            torch.manual_seed(0)
            models[name] = build_model("s10", "bn").to(memory_format=torch.channels_last)
        sync_cpu_batchnorm(models["sync"])
        optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
        x = torch.rand(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch_size,))

        def step(name: str) -> float:
            started = time.perf_counter()
            loss = F.cross_entropy(models[name](x), y)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            return time.perf_counter() - started

        for name in models:  # warm-up
            step(name)
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.steps):
            for name in models:
                times[name].append(step(name))
        dist.destroy_process_group()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    result = {
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps": args.steps,
        "batchnorm_ms": medians["batchnorm"],
        "sync_ms": medians["sync"],
        "ratio": medians["sync"] / medians["batchnorm"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"s10, batch {args.batch_size}, fp32, {args.threads} thread(s), median of {args.steps} steps; load average "
        f"{load_before[0]:.1f} before, {result['load_average_after'][0]:.1f} after"
    )
    print(
        f"  BatchNorm2d: {medians['batchnorm']:.0f} ms a step; CpuSyncBatchNorm: {medians['sync']:.0f} ms "
        f"({result['ratio']:.2f}x)"
    )


if __name__ == "__main__":
    main()
