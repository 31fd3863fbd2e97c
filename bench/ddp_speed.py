"""Data-parallel training speed on one machine: 1 process x T threads against T processes x 1 thread.

    python bench/ddp_speed.py                      # s10 with BN, batch 128: median img/s of each layout, ratios
    python bench/ddp_speed.py --norm gn --json     # one JSON object

Every layout runs the training engine's own step (``Trainer.batches`` and ``Trainer.step``) on the same global
batch; the several-process layouts are launched by ``torchrun`` (gloo on a CPU, DDP as ``cifarnet train`` under
torchrun). With BN there are two of them: BatchNorm synchronised over the group (``sync_bn``) and per process.
Each measurement is a fresh launch that warms up, then times ``--steps`` steps; the layouts take turns ``--reps``
times and the medians (and the medians of the per-repetition ratios) are reported: on a shared machine only
numbers measured side by side compare. The report gives the load average, since other work on the machine weighs
on the layouts, unequally.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifarnet.data.cifar10 import Cifar10, dataset_present, load_cifar10, synthetic_dataset  # noqa: E402
from cifarnet.training.distributed import exit_with  # noqa: E402


def load_data(data_dir: str | None) -> Cifar10:
    """The real CIFAR-10 when present, otherwise the synthetic stand-in (same shapes and types)."""
    return load_cifar10(data_dir, allow_download=False) if dataset_present(data_dir) else synthetic_dataset()


def worker(args: argparse.Namespace) -> None:
    """One process of a layout: warm up, time ``--steps`` steps; rank 0 prints the group's img/s as JSON."""
    import torch
    import torch.distributed as dist

    from cifarnet.config import make_config
    from cifarnet.training.distributed import join
    from cifarnet.training.engine import Trainer

    group = join()
    cfg = make_config(
        {
            "norm": args.norm,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "epochs": 1,
            "precision": args.precision,
            "sync_bn": args.sync_bn,
        }
    )
    trainer = Trainer(cfg, load_data(args.data_dir), group)
    batches = trainer.batches(0)
    for _ in range(args.warmup):
        trainer.step(*next(batches)[1:])
    if group.parallel:
        dist.barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = trainer.step(*next(batches)[1:])
    loss.item()  # the last step has finished (a no-op on a CPU, a sync on a GPU)
    seconds = time.perf_counter() - started
    if group.parallel:
        slowest = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        seconds = slowest.item()
    if group.is_main:
        print(json.dumps({"img_s": args.steps * args.batch_size / seconds}))
    group.leave()


def measure(processes: int, threads: int, args: argparse.Namespace, sync_bn: bool = True) -> float:
    """Global img/s of ``processes`` x ``threads``, one fresh launch."""
    options = [
        "--worker",
        "--norm",
        args.norm,
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(threads),
        "--sync-bn" if sync_bn else "--no-sync-bn",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--precision",
        args.precision,
        *(["--data-dir", args.data_dir] if args.data_dir else []),
    ]
    script = str(Path(__file__).resolve())
    command = (
        [sys.executable, script, *options]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            script,
            *options,
        ]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["img_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--norm", default="bn", choices=("bn", "ln", "gn"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--cores", type=int, default=2, help="T: the threads of the one process, the processes of the other layout"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (synthetic data when absent)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    layouts = {"one_process": (1, args.cores, True), "processes": (args.cores, 1, True)}
    if args.norm == "bn":  # BatchNorm per process: no collective inside the forward and backward passes
        layouts["per_process_bn"] = (args.cores, 1, False)
    speeds: dict[str, list[float]] = {name: [] for name in layouts}
    for rep in range(args.reps):
        for name, (processes, threads, sync_bn) in layouts.items():
            speeds[name].append(measure(processes, threads, args, sync_bn))
        print(
            f"repetition {rep + 1}/{args.reps}: "
            + ", ".join(f"{name} {s[-1]:.0f}" for name, s in speeds.items())
            + " img/s",
            file=sys.stderr,
        )
    result = {
        "norm": args.norm,
        "batch_size": args.batch_size,
        "cores": args.cores,
        "steps": args.steps,
        "reps": args.reps,
        "precision": args.precision,
    }
    for name, values in speeds.items():
        result[f"{name}_img_s"] = statistics.median(values)
        if name != "one_process":
            ratios = [m / o for o, m in zip(speeds["one_process"], values)]
            prefix = "" if name == "processes" else f"{name}_"
            result[f"{prefix}ratio"], result[f"{prefix}per_rep_ratios"] = statistics.median(ratios), ratios
    result.update(load_average_before=load_before, load_average_after=os.getloadavg(), date=time.strftime("%Y-%m-%d"))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"s10 {args.norm}, batch {args.batch_size}, {args.precision}, median of {args.reps} x {args.steps} steps; "
        f"load average {load_before[0]:.1f} before, {result['load_average_after'][0]:.1f} after"
    )
    print(f"  1 process x {args.cores} threads: {result['one_process_img_s']:.0f} img/s")
    synced = " (BatchNorm synchronised)" if args.norm == "bn" else ""
    print(
        f"  {args.cores} processes x 1 thread{synced}: {result['processes_img_s']:.0f} img/s, ratio "
        f"{result['ratio']:.2f} (per repetition: " + ", ".join(f"{r:.2f}" for r in result["per_rep_ratios"]) + ")"
    )
    if "per_process_bn_img_s" in result:
        print(
            f"  {args.cores} processes x 1 thread (BatchNorm per process): {result['per_process_bn_img_s']:.0f} "
            f"img/s, ratio {result['per_process_bn_ratio']:.2f} (per repetition: "
            + ", ".join(f"{r:.2f}" for r in result["per_process_bn_per_rep_ratios"])
            + ")"
        )


if __name__ == "__main__":
    exit_with(main)  # a process of a torchrun launch ends as the trainer's do
