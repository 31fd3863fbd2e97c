"""Training throughput: cifarnet's batch pipeline against the conventional per-image one.

    python bench/throughput.py                     # median img/s of both, and their ratio
    python bench/throughput.py --json              # the same as one JSON object
    python bench/throughput.py --profile           # where a step's time goes, per pipeline
    python bench/throughput.py --precision bf16 --compile   # cifarnet's step with its speed options on

Both pipelines train the same model (``build_model("s9", "bn")``) with the same batch
size, optimizer, learning-rate schedule and torch threads; only the way a batch is made
differs:

- cifarnet: the data set sits in memory as uint8 tensors; each step gathers a batch by
  index and augments it whole (:mod:`cifarnet.data.augment`). The step is the training
  engine's own (``Trainer.step`` on ``Trainer.batches``), not a copy of it.
- conventional: what a typical user writes with ``torchvision.datasets.CIFAR10``: a
  ``Dataset`` that returns one PIL image at a time, per-image ``RandomCrop(32, padding=4,
  padding_mode="reflect")``, ``RandomHorizontalFlip`` and ``ToTensor``, batched by a
  ``DataLoader`` with worker processes.

``--precision`` and ``--compile`` are the engine's own options (``TrainConfig``) and apply
to cifarnet's side only; the conventional step stays what a typical user writes (fp32, eager).

The two are timed alternately in one process, ``--reps`` times, and the medians are
compared: on a shared machine only numbers measured side by side are comparable. The
report also gives the FLOPs of one step (counted, not estimated) and the GFLOP/s they
imply against the CPU's theoretical peak.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count
from torchvision import transforms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifarnet.config import PRECISIONS, TrainConfig, make_config  # noqa: E402
from cifarnet.data.cifar10 import Cifar10, dataset_present, load_cifar10, synthetic_dataset  # noqa: E402
from cifarnet.nets.models import build_model  # noqa: E402
from cifarnet.training.engine import Trainer  # noqa: E402
from cifarnet.training.schedule import lr_at, make_optimizer, set_lr  # noqa: E402

# Two full-width FMA units per core: AMD Zen 5 (this machine: cpu family 26) and Intel Xeon Gold/Platinum.
# Zen 4 splits AVX-512 over two 256-bit halves, so there the peak printed here is twice the real one.
FMA_PIPES = 2
# AVX512-BF16's dot product (vdpbf16ps) does two bfloat16 multiply-adds per fp32 lane. AMX is not counted.
BF16_PER_LANE = 2
PHASES = ("step.gather", "step.augment", "step.forward", "step.backward", "step.optimizer", "loader.next")

Step = Callable[[], None]


# -- the conventional pipeline ----------------------------------------------------------
class TorchvisionStyleCifar(Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: HWC uint8 array → PIL → transform.

    torchvision's own class refuses the offline copy's md5 sums, so this re-creates its
    ``__getitem__`` over the same in-memory arrays; the per-image work is identical.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # torchvision keeps NHWC
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def conventional_loader(data: Cifar10, batch_size: int, workers: int) -> DataLoader:
    """The usual CIFAR-10 recipe with the same augmentations cifarnet's defaults apply."""
    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    dataset = TorchvisionStyleCifar(data.train_x, data.train_y, augment)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def endless(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches across epoch boundaries, as a multi-epoch training loop sees them."""
    for _ in itertools.count():
        yield from loader


def conventional_step(loader: DataLoader, cfg: TrainConfig, channels_last: bool = False) -> Step:
    """A typical user's training step: next batch from the loader, forward, backward, step.

    Labelled like ``Trainer.step`` so ``--profile`` splits both steps the same way.
    ``channels_last`` gives the baseline cifarnet's memory layout too, which isolates
    what the data pipeline alone is worth.
    """
    torch.manual_seed(cfg.seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.arch, cfg.norm).to(memory_format=layout)
    optimizer = make_optimizer(model, cfg)
    batches = endless(loader)
    step = itertools.count()

    def run_step() -> None:
        with record_function("loader.next"):
            x, y = next(batches)
            x = x.contiguous(memory_format=layout)
        set_lr(optimizer, lr_at(next(step), cfg))
        with record_function("step.forward"):
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        with record_function("step.backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("step.optimizer"):
            optimizer.step()

    return run_step


# -- cifarnet's pipeline ---------------------------------------------------------------
def cifarnet_step(data: Cifar10, cfg: TrainConfig) -> Step:
    """The training engine's own batches and step (no copy of its code), epoch after epoch."""
    trainer = Trainer(cfg, data)
    batches = itertools.chain.from_iterable(trainer.batches(epoch) for epoch in itertools.count())

    def run_step() -> None:
        _, x, y = next(batches)
        trainer.step(x, y)

    return run_step


# -- measuring -------------------------------------------------------------------------
def images_per_second(step: Step, steps: int, warmup: int, batch_size: int) -> float:
    """Steady-state img/s: ``warmup`` untimed steps (allocator, worker queues), then ``steps``."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def phase_fractions(step: Step, steps: int) -> dict[str, float]:
    """Share of wall time in each labelled phase of ``steps`` profiled steps (rest: "other").

    The labels are ``record_function`` scopes: ``step.*`` inside ``Trainer.batches`` and ``Trainer.step`` and
    :func:`conventional_step`, ``loader.next`` around the conventional step's wait for a batch.
    """
    step()  # keep one-off costs out of the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall_us = (time.perf_counter() - start) * 1e6
    totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PHASES}
    shares = {name: totals[name] / wall_us for name in PHASES if name in totals}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed: bool,
    _output_padding,
    _groups,
    output_mask: list[bool],
    out_shape: list,
    **_kwargs,
) -> int:
    """FLOPs of ``aten.convolution_backward``, right for grouped convolutions too.

    torch 2.14's own formula ignores ``groups`` in the weight gradient and so counts a
    depthwise conv's backward ``channels`` times over (65x its forward for 64 channels).
    The weight gradient does exactly the forward's multiply-adds, so count it as such.
    """
    flops = 0
    if output_mask[0]:  # input gradient: a transposed conv of grad_out with the weights
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


def step_gflop(cfg: TrainConfig, batch_size: int) -> float:
    """FLOPs of forward + backward of one batch, counted by torch (convolutions and matmuls).

    Normalisation, ReLU and the optimizer's element-wise work are not counted; they are
    a small share of the arithmetic but not of the time (they are memory-bound).
    """
    model = build_model(cfg.arch, cfg.norm)
    x = torch.rand(batch_size, 3, 32, 32)
    with FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}
    ) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 1e9


def cpu_facts() -> dict:
    """Model, clock, vector width and core count as the OS reports them, and the peak they imply.

    Peak FP32 FLOP/s = cores x clock x FMA pipes x lanes x 2 (an FMA is two FLOPs).
    Lanes: 16 with AVX-512, 8 with AVX2. The clock is the one /proc/cpuinfo reports
    (a VM shows its nominal clock; a boost clock would raise the peak). With AVX512-BF16 the
    bfloat16 peak is ``BF16_PER_LANE`` times that; without it bf16 work runs at fp32 rate at best.
    """
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = float(fields.get("cpu MHz", "0") or 0) / 1000
    cores = os.cpu_count() or 1
    return {
        "model": fields.get("model name", platform.processor()),
        "family": fields.get("cpu family"),
        "ghz": ghz,
        "cores": cores,
        "fp32_lanes": lanes,
        "fma_pipes": FMA_PIPES,
        "peak_gflops": cores * ghz * FMA_PIPES * lanes * 2,
        "bf16_per_lane": BF16_PER_LANE if "avx512_bf16" in flags else 1,
    }


def ceiling_gflops(dtype: torch.dtype = torch.float32, reps: int = 5) -> dict[str, float]:
    """The rates this CPU sustains in ``dtype`` on the friendliest kernels (median of ``reps``, same threads).

    They show how much of the theoretical peak is reachable at all (a VM's real clock is
    not visible): a 2048x2048 matrix multiply (MKL for fp32) and a large 1x1 convolution,
    channels-last, through oneDNN — the library that runs the model's own convolutions.
    On this AMD CPU the two differ: MKL's fp32 GEMM stops far below the peak oneDNN reaches.
    """
    a, b = torch.rand(2048, 2048, dtype=dtype), torch.rand(2048, 2048, dtype=dtype)
    x = torch.rand(64, 512, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.rand(512, 512, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return {
        "gemm_gflops": _median_rate(lambda: a @ b, 2 * 2048**3, reps),
        "conv1x1_gflops": _median_rate(lambda: F.conv2d(x, w), 2 * 64 * 32 * 32 * 512 * 512, reps),
    }


def _median_rate(kernel: Callable[[], object], flop: int, reps: int) -> float:
    """GFLOP/s of ``kernel`` (``flop`` FLOPs a call): median of ``reps`` timed calls after one untimed."""
    kernel()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        kernel()
        times.append(time.perf_counter() - start)
    return flop / statistics.median(times) / 1e9


def load_data(data_dir: str | None) -> Cifar10:
    """The real CIFAR-10 when present, otherwise the synthetic stand-in (same shapes and types)."""
    return load_cifar10(data_dir, allow_download=False) if dataset_present(data_dir) else synthetic_dataset()


# -- the report ------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    """Time both pipelines alternately ``args.reps`` times and summarise."""
    torch.set_num_threads(args.threads)
    cfg = make_config(
        {
            "batch_size": args.batch_size,
            "threads": args.threads,
            "device": "cpu",
            "precision": args.precision,
            "compile": args.compile,
        }
    )
    data = load_data(args.data_dir)
    pipelines = {
        "cifarnet": cifarnet_step(data, cfg),
        "baseline": conventional_step(
            conventional_loader(data, args.batch_size, args.workers), cfg, args.baseline_channels_last
        ),
    }
    speeds: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.reps):
        for name, step in pipelines.items():
            speeds[name].append(images_per_second(step, args.steps, args.warmup, args.batch_size))
    profiles = {}
    if args.profile:
        profiles = {name: phase_fractions(step, args.steps) for name, step in pipelines.items()}
    return summarise(speeds, profiles, cfg, args, data.source)


def summarise(
    speeds: dict[str, list[float]], profiles: dict, cfg: TrainConfig, args: argparse.Namespace, source: str
) -> dict:
    """Medians, their ratio, the per-repetition figures, and the FLOP rate against the CPU's peak."""
    cifarnet, baseline = statistics.median(speeds["cifarnet"]), statistics.median(speeds["baseline"])
    gflop = step_gflop(cfg, args.batch_size)
    cpu = cpu_facts()
    achieved = gflop * cifarnet / args.batch_size
    peak = cpu["peak_gflops"] * (cpu["bf16_per_lane"] if cfg.precision == "bf16" else 1)
    return {
        "cifarnet_img_s": cifarnet,
        "baseline_img_s": baseline,
        "ratio": cifarnet / baseline,
        "rep_ratios": [c / b for c, b in zip(speeds["cifarnet"], speeds["baseline"])],
        "cifarnet_runs": speeds["cifarnet"],
        "baseline_runs": speeds["baseline"],
        "gflop_per_step": gflop,
        "cifarnet_gflops": achieved,
        "peak_gflops": peak,
        "peak_fraction": achieved / peak if peak else None,
        **ceiling_gflops(torch.bfloat16 if cfg.precision == "bf16" else torch.float32),
        "cpu": cpu,
        "profile": profiles,
        "model": f"{cfg.arch}-{cfg.norm}",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "workers": args.workers,
        "precision": cfg.precision,
        "compile": cfg.compile,
        "baseline_layout": "channels_last" if args.baseline_channels_last else "nchw",
        "steps": args.steps,
        "reps": args.reps,
        "data": source,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_report(r: dict) -> None:
    """The JSON's figures as a few readable lines, with the peak arithmetic spelt out."""
    runs = lambda values: ", ".join(f"{v:.0f}" for v in values)  # noqa: E731
    cpu = r["cpu"]
    print(
        f"model {r['model']}, batch {r['batch_size']}, {r['threads']} threads, cifarnet precision "
        f"{r['precision']}{' compiled' if r['compile'] else ''}, baseline {r['workers']} workers "
        f"({r['baseline_layout']}), {r['reps']} reps x {r['steps']} steps, data {r['data']}, {r['date']}"
    )
    print(f"cifarnet  {r['cifarnet_img_s']:8.0f} img/s (median of {runs(r['cifarnet_runs'])})")
    print(f"baseline  {r['baseline_img_s']:8.0f} img/s (median of {runs(r['baseline_runs'])})")
    print(f"ratio     {r['ratio']:8.2f}x (per rep: {', '.join(f'{v:.2f}' for v in r['rep_ratios'])})")
    bf16 = r["precision"] == "bf16"
    per_lane = f" x {cpu['bf16_per_lane']} bf16 per lane" if bf16 else ""
    print(
        f"FLOPs     {r['gflop_per_step']:.2f} GFLOP per step (fwd+bwd) -> {r['cifarnet_gflops']:.1f} GFLOP/s; "
        f"{'bf16' if bf16 else 'fp32'} peak {cpu['cores']} cores x {cpu['ghz']:.3f} GHz x {cpu['fma_pipes']} FMA x "
        f"{cpu['fp32_lanes']} lanes x 2{per_lane} = {r['peak_gflops']:.0f} GFLOP/s "
        f"({100 * (r['peak_fraction'] or 0):.1f} % of peak); "
        f"in {'bf16' if bf16 else 'fp32'} a 2048x2048 GEMM reaches {r['gemm_gflops']:.0f} GFLOP/s, "
        f"a large 1x1 conv {r['conv1x1_gflops']:.0f} GFLOP/s"
    )
    for name, shares in r["profile"].items():
        print(f"profile {name}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (synthetic data when absent)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per pipeline per repetition")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each timing")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (the median is reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both pipelines")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (baseline)")
    parser.add_argument(
        "--baseline-channels-last",
        action="store_true",
        help="give the baseline cifarnet's channels-last layout (isolates the data pipeline)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=TrainConfig.precision,
        help="cifarnet's training precision (the baseline stays fp32)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile cifarnet's step (not the baseline's)")
    parser.add_argument("--profile", action="store_true", help="also profile --steps steps of each pipeline")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
