"""Train a matrix of configurations side by side and report what each reached.

    python bench/run_matrix.py --preset shipped --data-dir DIR --jobs 1
    python bench/run_matrix.py --preset sweep --jobs 12 --device cuda     # recipe search on a GPU

Each configuration is an ordinary ``python -m cifarnet train`` run in ``--runs-dir`` (a
``recipe`` key becomes ``--recipe``: the named recipes of :mod:`cifarnet.recipes`), so
every figure in the report can be opened in the dashboard and re-checked with
``python -m cifarnet evaluate``. With ``--report`` the table is written as Markdown with
the machine and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifarnet.cli import as_flags  # noqa: E402
from cifarnet.runs.folders import first_reaching, read_run  # noqa: E402
from cifarnet.runs.records import CONFIG_FILE  # noqa: E402

# Settings not named here are the TrainConfig defaults. Rows built on a named recipe follow it when it changes;
# a figure in docs/ was measured with the recipe of its date.
SHIPPED = {"recipe": "shipped"}  # s10, 60 epochs at batch 128, peak LR 0.1, compiled: the shipped s10 runs
RECIPE = {"recipe": "s9"}  # s9, 30 epochs at batch 128, peak LR 0.1: the shipped s9 runs and their variants
FAST85 = {"recipe": "fast85"}  # the time-to-85 % recipe: 18 epochs, bf16 autocast, compiled
B128 = {"batch_size": 128, "lr": 0.1}  # the defaults today, pinned where a row is no named recipe
B64 = {"batch_size": 64, "lr": 0.05}  # the same LR-to-batch ratio again: best at 8 epochs, not at 30-40
FIRST = {"batch_size": 256, "lr": 0.2}  # the first recipe: the H100 sweep and the figures measured with it
PLAIN = {"ws": "off"}  # plain convs: every figure measured before weight standardisation existed, and BN today
WS = {"ws": "all"}  # every conv that feeds a norm weight-standardised: the LN and GN runs shipped before WS_X
WS_X = {"ws": "except-depthwise"}  # the same but the depthwise convs stay plain: the shipped LN and GN runs
# LN and GN with weight standardisation sparing the depthwise convs, seeds 0 and 1 (trained together)
WS_X_RUNS = {
    f"s9-{n}-wsx{'-seed1' if seed else ''}": {"arch": "s9", "norm": n, **RECIPE, **WS_X, "seed": seed}
    for seed in (0, 1)
    for n in ("ln", "gn")
}
PRESETS: dict[str, dict[str, dict]] = {
    # the shipped runs in cifarnet/pretrained/ (named as their folders): s10 with each norm and seeds 0 and 1 under
    # one identical budget, each with its default weight standardisation (off for BN; for LN and GN every conv that
    # feeds a norm but the depthwise ones); an hour each on a 2-core CPU
    "shipped": {
        f"s10-{n}{'-seed1' if seed else ''}": {**SHIPPED, "norm": n, "seed": seed}
        for seed in (0, 1)
        for n in ("bn", "ln", "gn")
    },
    # the shipped s9 runs, the same way
    "s9": {
        "s9-bn": {"arch": "s9", "norm": "bn", **RECIPE, **PLAIN},
        **{f"s9-{n}": {"arch": "s9", "norm": n, **RECIPE, **WS_X} for n in ("ln", "gn")},
    },
    "ws-except-dw": WS_X_RUNS,
    # every conv that feeds a norm standardised, depthwise ones included (shipped for LN and GN before WS_X)
    "ws-all": {f"s9-{n}-ws": {"arch": "s9", "norm": n, **RECIPE, **WS} for n in ("ln", "gn")},
    "ws-all-seed1": {f"s9-{n}-ws-seed1": {"arch": "s9", "norm": n, **RECIPE, **WS, "seed": 1} for n in ("ln", "gn")},
    # BN with every conv standardised: why it is off for BN
    "ws-bn": {"s9-bn-ws": {"arch": "s9", "norm": "bn", **RECIPE, **WS}},
    # the three norms before weight standardisation, and LN and GN with seed 1
    "plain": {f"s9-{n}-plain": {"arch": "s9", "norm": n, **RECIPE, **PLAIN} for n in ("bn", "ln", "gn")},
    "plain-seed1": {f"s9-{n}-seed1": {"arch": "s9", "norm": n, **RECIPE, **PLAIN, "seed": 1} for n in ("ln", "gn")},
    # the shipped BN and LN recipes trained in bfloat16 (compiled): what bf16 costs in accuracy on a CPU
    "bf16": {
        "s9-bn-bf16": {"arch": "s9", "norm": "bn", **RECIPE, **PLAIN, "precision": "bf16", "compile": True},
        "s9-ln-wsx-bf16": {"arch": "s9", "norm": "ln", **RECIPE, **WS_X, "precision": "bf16", "compile": True},
    },
    # LN and GN with cutout (8 px) on the plain recipe: does more regularisation move them past 85 %?
    "cutout-probe": {
        f"s9-{n}-cutout": {"arch": "s9", "norm": n, **RECIPE, **PLAIN, "cutout": True} for n in ("ln", "gn")
    },
    # four times the first recipe's steps per epoch and 40 epochs: no better than the plain recipe (docs/RESULTS.md)
    "results-b64-e40": {
        f"s9-{n}-b64-e40": {"arch": "s9", "norm": n, "epochs": 40, **B64, **PLAIN} for n in ("bn", "ln", "gn")
    },
    # the same with the first recipe: LN and GN stopped short of 85 % with it
    "results-b256": {
        f"s9-{n}-b256": {"arch": "s9", "norm": n, "epochs": 30, **FIRST, **PLAIN} for n in ("bn", "ln", "gn")
    },
    # seed against s9 on the same recipe, epoch for epoch (seed is ~10x slower per epoch on a CPU)
    "seed-vs-s9": {
        "e16-bn": {"arch": "s9", "epochs": 16, **FIRST, **PLAIN},
        "seed-e16-bn": {"arch": "seed", "epochs": 16, **FIRST, **PLAIN},
    },
    "sweep": {
        **{
            f"e{e}-{n}": {"arch": "s9", "epochs": e, "norm": n, **FIRST, **PLAIN}
            for e in (8, 12, 16, 24)
            for n in ("bn", "ln", "gn")
        },
        "e12-bn-lr0.1": {"arch": "s9", "epochs": 12, **FIRST, **PLAIN, "lr": 0.1},
        "e12-bn-lr0.4": {"arch": "s9", "epochs": 12, **FIRST, **PLAIN, "lr": 0.4},
        "e16-bn-cutout": {"arch": "s9", "epochs": 16, "cutout": True, **FIRST, **PLAIN},
        "seed-e16-bn": {"arch": "seed", "epochs": 16, **FIRST, **PLAIN},
    },
    # why batch 128: LN at 8 epochs over peak LR and batch size (docs/RESULTS.md)
    "ln-probe": {
        **{
            f"ln-e8-lr{lr}": {"arch": "s9", "norm": "ln", "epochs": 8, "batch_size": 256, "lr": lr, **PLAIN}
            for lr in (0.05, 0.1, 0.2, 0.4)
        },
        "ln-e8-b128-lr0.1": {"arch": "s9", "norm": "ln", "epochs": 8, **B128, **PLAIN},
        "ln-e8-b128-lr0.05": {"arch": "s9", "norm": "ln", "epochs": 8, **B128, **PLAIN, "lr": 0.05},
        "ln-e8-b64-lr0.05": {"arch": "s9", "norm": "ln", "epochs": 8, **B64, **PLAIN},
    },
    "smoke": {"tiny": {"subset": 20, "epochs": 1, "batch_size": 50, "eval_subset": 10}},
    # time to 85 % on a CPU (docs/RESULTS.md): the fast85 recipe with seeds 0 and 1 (named for the values it had
    # when they were measured); shortened to 15 and 16 epochs; in fp32 shortened to 15 epochs (seeds 0 and 1); and
    # the first recipe's 20 epochs
    "cpu85": {
        **{f"cpu85-s9-bn-e18-b128-compile-bf16{'-seed1' if seed else ''}": {**FAST85, "seed": seed} for seed in (0, 1)},
        **{f"cpu85-s9-bn-e{e}-b128-compile-bf16": {**FAST85, "epochs": e} for e in (15, 16)},
        **{
            f"cpu85-s9-bn-e15-b128-compile{'-seed1' if seed else ''}": {
                **FAST85,
                "epochs": 15,
                "precision": "auto",
                "seed": seed,
            }
            for seed in (0, 1)
        },
        "cpu85-s9-bn-e20": {"arch": "s9", "norm": "bn", "epochs": 20, **FIRST, **PLAIN},
    },
}


def command_for(name: str, overrides: dict, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "cifarnet",
        "train",
        "--name",
        name,
        "--runs-dir",
        args.runs_dir,
        "--quiet",
        "--device",
        args.device,
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd + as_flags(overrides)


def run_one(name: str, overrides: dict, args: argparse.Namespace) -> None:
    cmd = command_for(name, overrides, args)
    print("$", shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(f"[{name}] {done.stdout.strip()} {done.stderr.strip()[-300:]}", flush=True)


def report(names: list[str], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d')}  ",
        "Data: CIFAR-10 (offline JPEG copy) — accuracies are on that copy.",
        "",
        "| run | arch | norm | params | epochs | best test acc | final test acc | flip-TTA acc | "
        "epochs to 85 % | wall time to 85 % | total wall time | train img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        info = read_run(Path(args.runs_dir) / name)
        cfg, res = info.config, info.results or {}
        hit = first_reaching(info, 0.85)
        speeds = sorted(m["img_s"] for m in info.evals if m.get("img_s"))
        pct = lambda v: "-" if v is None else f"{100 * v:.2f} %"  # noqa: E731
        lines.append(
            f"| {name} | {cfg.get('arch')} | {cfg.get('norm')} | {cfg.get('params', 0):,} | {cfg.get('epochs')} | "
            f"{pct(info.best_acc)} | {pct(info.final_acc)} | {pct(res.get('tta_acc'))} | "
            f"{'-' if not hit else format(hit['epoch'], 'g')} | "
            f"{'-' if not hit else format(hit['time'], '.0f') + ' s'} | "
            f"{res.get('elapsed_s', 0):.0f} s | {speeds[len(speeds) // 2] if speeds else 0:.0f} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        cpu = platform.processor() or platform.machine()
        return f"{cpu} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    except Exception:  # the report must still be written
        return platform.platform()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="shipped")
    parser.add_argument("--only", nargs="*", help="train only these names of the preset")
    parser.add_argument("--data-dir")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--report", help="write the Markdown table here (e.g. docs/RESULTS.md section)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-train", action="store_true", help="only report on runs already in --runs-dir")
    args = parser.parse_args()
    configs = {k: v for k, v in PRESETS[args.preset].items() if not args.only or k in args.only}
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    if not args.no_train:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda item: run_one(item[0], item[1], args), configs.items()))
    if args.no_train and not args.only:  # report every run in the folder
        configs = {p.name: {} for p in sorted(Path(args.runs_dir).iterdir()) if (p / CONFIG_FILE).is_file()}
    configs = {k: v for k, v in configs.items() if (Path(args.runs_dir) / k).is_dir()}
    text = report(list(configs), args, "python " + shlex.join(sys.argv))
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    if args.json:
        print(json.dumps({n: read_run(Path(args.runs_dir) / n).results for n in configs}, indent=1))


if __name__ == "__main__":
    main()
