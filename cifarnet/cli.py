"""Command line: ``python -m cifarnet {summary,rf,train,compare,sweep,cancel,queue,evaluate,explain,runs,stop,data}``.

Every user error is one line on stderr and a non-zero exit, never a traceback.
``train`` has a flag for every config field, and ``summary`` / ``rf`` one for every model field,
generated from the fields' declaration (:data:`cifarnet.config.FIELDS`) with their limits and defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from cifarnet.config import AUTO, DEFAULTS, FIELDS, MODEL, TrainConfig, allowed, check_shares, make_config
from cifarnet.data.cifar10 import load_cifar10
from cifarnet.devices import select_device
from cifarnet.errors import CifarnetError
from cifarnet.nets.models import build_model
from cifarnet.nets.receptive_field import format_rf, receptive_field
from cifarnet.nets.summary import format_summary, summarize
from cifarnet.recipes import FIRST_RECIPE, RECIPES, recipe_config
from cifarnet.runs.cluster import cluster_address, serve_cluster
from cifarnet.runs.early_stop import RULES
from cifarnet.runs.experiments import (
    DEFAULT_VARY,
    MAX_RUNS,
    Experiment,
    experiment_runs,
    parse_seeds,
    parse_vary,
    pending,
)
from cifarnet.runs.folders import list_runs, read_run, request_stop
from cifarnet.runs.monitor import throughput_text
from cifarnet.runs.queue import cancel_run, ensure_worker, serve
from cifarnet.runs.records import CONFIG_FILE, load_run_config
from cifarnet.runs.slots import HELD_ENV, Claim, claim, claim_new_run, inherited, max_live_runs
from cifarnet.runs.status import FAILURES, Status
from cifarnet.runs.sweep import MAX_CAP, SCALES, check_cap, parse_random, start_sweep
from cifarnet.training.checkpoint import load_model
from cifarnet.training.distributed import Group, is_main_process, join, launched, relaunch, trainer_pid
from cifarnet.training.engine import StatusFile, confusion_matrix, evaluate, train_run

FOLLOW_S = 0.5  # how often `compare` looks at its runs
MODEL_FIELDS = tuple(name for name, rule in FIELDS.items() if rule.group == MODEL)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _default_text(name: str, base: TrainConfig) -> str:
    value = getattr(base, name)
    if value is None:
        return AUTO
    if isinstance(value, bool):
        return "on" if value else "off"
    return format(value, "g") if isinstance(value, float) else str(value) or "automatic"


def _field_flags(parser: argparse.ArgumentParser, names: Iterable[str], base: TrainConfig = DEFAULTS) -> None:
    """A flag per config field, its help saying what is allowed and the default (``base``'s value, what a run gets
    without the flag or a recipe); unset flags stay None."""
    for name in names:
        rule = FIELDS[name]
        flag = "--" + name.replace("_", "-")
        limits = "" if rule.kind is bool or rule.low is None and not rule.choices else f"; allowed: {allowed(name)}"
        flag_help = f"{rule.help}{limits}; default {_default_text(name, base)}".replace("%", "%%")
        if rule.kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=flag_help)
        else:
            metavar = "{" + ",".join(rule.choices) + "}" if rule.choices else name.upper()
            parser.add_argument(flag, dest=name, default=None, metavar=metavar, help=flag_help)


def _given(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """The field flags the user gave (argparse leaves the others None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _model_flags(parser: argparse.ArgumentParser) -> None:
    _field_flags(parser, MODEL_FIELDS)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def as_flags(values: dict) -> list[str]:
    """``train`` flags for config ``values`` (``{"epochs": 3, "tta": False}`` -> ``--epochs 3 --no-tta``)."""
    flags = []
    for name, value in values.items():
        flag = name.replace("_", "-")
        flags += [f"--{flag}"] if value is True else [f"--no-{flag}"] if value is False else [f"--{flag}", str(value)]
    return flags


def _recipe_help() -> str:
    recipes = "; ".join(
        f"{name} = {' '.join(as_flags(recipe.overrides))}: {recipe.why}" for name, recipe in RECIPES.items()
    )
    return f"start from a named recipe; other flags override it. {recipes}".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cifarnet", description="Small CNNs on CIFAR-10: build, inspect, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _model_flags(sub.add_parser("summary", help="layer table and parameter counts"))
    _model_flags(sub.add_parser("rf", help="receptive field, layer by layer"))
    train = sub.add_parser("train", help="train a model and record the run")
    train.add_argument("--recipe", choices=RECIPES, help=_recipe_help())
    _field_flags(train, FIELDS)
    train.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default $CIFARNET_DATA or ./data)")
    train.add_argument("--runs-dir", help="where runs are written (default $CIFARNET_RUNS or ./runs)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _compare_flags(
        sub.add_parser(
            "compare",
            help="an experiment: runs that differ in the varied settings, queued under the run limit, followed live",
        )
    )
    _sweep_flags(
        sub.add_parser(
            "sweep",
            help="an experiment over several settings: a grid, random draws and seeds, "
            "with optional early stopping; queued and followed like compare",
        )
    )
    cancel = sub.add_parser("cancel", help="cancel a queued run: it never starts")
    cancel.add_argument("run_id")
    cancel.add_argument("--runs-dir")
    queue = sub.add_parser("queue", help="start queued runs as slots free, until none waits (started by itself)")
    queue.add_argument("--runs-dir")
    queue.add_argument("--ray-address", metavar="HOST:PORT", help="serve the runs queued for this Ray cluster")
    evaluate = sub.add_parser("evaluate", help="test-set accuracy of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a model.pt / best.pt / last.pt file")
    evaluate.add_argument("--data-dir")
    _field_flags(evaluate, ["device"])
    evaluate.add_argument("--json", action="store_true")
    _explain_flags(sub.add_parser("explain", help="Grad-CAM pictures (and JSON) for test images or an image file"))
    runs = sub.add_parser("runs", help="list runs with status and accuracy")
    runs.add_argument("--runs-dir")
    runs.add_argument("--json", action="store_true")
    stop = sub.add_parser("stop", help="ask a live run to stop after its current step")
    stop.add_argument("run_id")
    stop.add_argument("--runs-dir")
    data = sub.add_parser("data", help="check (and optionally download) the data set")
    data.add_argument("--data-dir")
    data.add_argument("--download", action="store_true", help="download CIFAR-10 if it is missing")
    return parser


def _compare_flags(parser: argparse.ArgumentParser, *vary: str) -> None:
    parser.add_argument(
        *(vary or ("--vary",)),
        dest="vary",
        action="append",
        metavar="FIELD=V1,V2,...",
        help=f"a setting and its values, one run each (repeat for a grid); default norm=bn,ln,gn; "
        f"at most {MAX_RUNS} runs in all unless --max-runs raises the cap",
    )
    parser.add_argument("--seeds", nargs="+", metavar="SEED", help="train every variant with each seed")
    parser.add_argument(
        "--max-runs",
        default=str(MAX_RUNS),
        help=f"the cap on the experiment's runs, variants x seeds (default {MAX_RUNS}, at most "
        f"{MAX_CAP}): raise it deliberately for a big sweep",
    )
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default=FIRST_RECIPE,
        help=f"start from a named recipe (default {FIRST_RECIPE}: minutes a run on a CPU); other flags override it",
    )
    _field_flags(parser, FIELDS, recipe_config(FIRST_RECIPE))
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default $CIFARNET_DATA or ./data)")
    parser.add_argument("--runs-dir", help="where runs are written (default $CIFARNET_RUNS or ./runs)")
    parser.add_argument(
        "--cluster",
        choices=("local", "ray"),
        default="local",
        help="where the runs train: this machine's queue (default) or a Ray cluster "
        "(docs/SWEEPS.md; the runs folder must be shared with its nodes)",
    )
    parser.add_argument("--ray-address", metavar="HOST:PORT", help="the Ray cluster's head (default $RAY_ADDRESS)")


def _sweep_flags(parser: argparse.ArgumentParser) -> None:
    """``compare``'s flags (``--grid`` is its ``--vary``), with random draws, the run cap and early stopping."""
    _compare_flags(parser, "--grid", "--vary")
    parser.add_argument(
        "--random",
        nargs="+",
        metavar="N FIELD=SCALE:LOW:HIGH",
        help=f"N random draws of each listed setting, scale {' or '.join(SCALES)} (e.g. --random 8 "
        "lr=log:0.01:0.5); every draw is combined with every grid point",
    )
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the random draws (default 0)")
    parser.add_argument(
        "--early-stop",
        choices=RULES,
        default="off",
        help="stop runs clearly behind the others at the same step: median = the median stopping "
        "rule, asha = successive halving (default off)",
    )


def _explain_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a model.pt / best.pt / last.pt file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", help="a test image N, or a range A:B (B excluded)")
    which.add_argument("--image", help="an image file (any size; centre-cropped and shrunk to 32x32)")
    parser.add_argument("--layer", help="conv or block to explain at (default: the last block, body.c4)")
    parser.add_argument("--target", help="class to explain, by name or number (default: each image's prediction)")
    parser.add_argument("--out", required=True, help="the picture to write (.png)")
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (for --index)")
    parser.add_argument("--json", action="store_true", help="print index, label, top-k and the 32x32 heatmap")


def _built(args: argparse.Namespace):
    return build_model(**make_config(_given(args, MODEL_FIELDS)).model_args)


def cmd_summary(args: argparse.Namespace) -> None:
    summary = summarize(_built(args))
    print(json.dumps(summary.to_dict(), indent=1) if args.json else format_summary(summary))


def cmd_rf(args: argparse.Namespace) -> None:
    report = receptive_field(_built(args))
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_rf(report))


def _bar(progress: dict) -> None:
    """One self-overwriting progress line: epoch, step, loss, accuracy, img/s, ETA."""
    done = progress["step"] / max(progress["total_steps"], 1)
    bar = "#" * int(done * 24)
    eta = progress.get("eta_s")
    eta_text = time.strftime("%M:%S", time.gmtime(eta)) if eta is not None else "--:--"
    test = progress.get("test_acc")
    line = (
        f"\r[{bar:<24}] epoch {progress['epoch']:.2f}/{progress['epochs']:g} "
        f"step {progress['step']}/{progress['total_steps']} loss {progress['train_loss']:.3f} "
        f"acc {100 * progress['train_acc']:.1f}% test {'--' if test is None else f'{100 * test:.1f}%'} "
        f"{throughput_text(progress)} ETA {eta_text} "
    )
    sys.stderr.write(line)
    sys.stderr.flush()


def _run_folder(args: argparse.Namespace, group: Group) -> tuple[Path, TrainConfig, Claim | None]:
    """The run to train, its config and the locks that let it train (a slot under the run limit and the run's
    own lock, :mod:`cifarnet.runs.slots`): ``--resume``'s folder, or a new one from the flags (rank 0 only).

    ``processes`` is how many processes a start without torchrun launches (``--resume`` takes it too: a run may
    continue with another world size); under torchrun, torchrun has chosen, and ``config.json``'s
    ``world_size`` records how many trained it.
    """
    values = _given(args, FIELDS)
    if launched() and values.get("processes", group.local_world_size) != group.local_world_size:
        raise CifarnetError(
            f"processes={values['processes']} under torchrun, which started {group.local_world_size} "
            "per machine; drop --processes (torchrun's --nproc_per_node sets it)"
        )
    if args.resume:
        path = Path(args.resume)
        if not (path / CONFIG_FILE).is_file():
            raise CifarnetError(f"--resume {path}: not a run folder (no {CONFIG_FILE})")
        processes = values.pop("processes", None)
        if values or args.recipe:
            raise CifarnetError(
                "--resume continues a run with its saved config; drop the other config flags (--processes may change)"
            )
        cfg = load_run_config(path)
        if processes is not None:
            cfg = make_config({"processes": processes}, base=cfg)
        check_shares(cfg.batch_size, group.world_size)
        # the processes of a relaunch train under the claim their torchrun parent keeps (see cmd_train)
        held = None if os.environ.get(HELD_ENV) else (inherited(path) or claim(path))
        return path, cfg, held
    recipe = RECIPES[args.recipe].overrides if args.recipe else {}
    cfg = make_config({**recipe, **values})
    select_device(cfg.device)  # everything that can be refused is checked before a run folder exists
    load_cifar10(args.data_dir)  # (the decoded cache makes the trainer's second load cheap)
    check_shares(cfg.batch_size, group.world_size)
    path, held = claim_new_run(cfg, args.runs_dir, trainer_pid())  # (this process may become torchrun)
    return path, cfg, held


def _relaunch_args(args: argparse.Namespace, path: Path) -> list[str]:
    """The ``train`` arguments each process of a relaunch gets: the run's folder, and the data and output options."""
    return [
        "train",
        "--resume",
        str(path),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
        *(["--quiet"] if args.quiet else []),
    ]


def cmd_train(args: argparse.Namespace) -> int:
    group = join()  # the processes torchrun started, or this one alone
    try:
        path, cfg, held = group.from_main(lambda: _run_folder(args, group))
        # ``held`` stays open until this process ends: a slot frees when its trainer is gone, not while it exits
        if not launched() and cfg.processes > 1:  # the run asks for several processes: torchrun starts them,
            for fd in held.fds:  # and keeps the locks for as long as it lives
                os.set_inheritable(fd, True)
            os.environ[HELD_ENV] = "1"
            # starting, with this process as its trainer: torchrun in a moment, the pid rank 0 records too
            StatusFile(path).write(Status.STARTING, force=True, error=None)
            relaunch(cfg.processes, _relaunch_args(args, path))
        if group.is_main and not args.quiet:
            print(
                f"run {path.name} -> {path}" + (f" ({group.world_size} processes)" if group.parallel else ""),
                file=sys.stderr,
            )
        status = train_run(path, args.data_dir, echo=None if args.quiet or not group.is_main else _bar, group=group)
    finally:
        group.leave()
    if group.is_main:
        keep_queue_moving(str(path.parent))  # its slot frees now: a queue whose worker died goes on
        if not args.quiet:
            sys.stderr.write("\n")
        info = read_run(path)
        error = info.status_record.get("error")
        final = info.final_acc
        print(
            f"{path.name}: {status}"
            + (f", test accuracy {100 * final:.2f}%" if final is not None else "")
            + (f" ({error})" if error else "")
        )
    return 1 if status in FAILURES else 0  # a stop, by request or by a sweep's rule, is no error


def cmd_compare(args: argparse.Namespace) -> int:
    """Plan (every check first), queue, then print each run's events until all have ended."""
    values = _given(args, FIELDS)
    name = values.pop("name", None)  # --name names the experiment; its runs are named after it
    vary = parse_vary(args.vary) if args.vary else None
    clash = sorted(set(vary or ({} if getattr(args, "random", None) else DEFAULT_VARY)) & set(values))
    if clash:
        raise CifarnetError(f"{clash[0]} is both set (--{clash[0].replace('_', '-')}) and varied; give it one way")
    if args.seeds and "seed" in values:
        raise CifarnetError("give --seeds or --seed, not both")
    count, ranges = parse_random(getattr(args, "random", None))
    clash = sorted({r.name for r in ranges} & set(values))
    if clash:
        raise CifarnetError(f"{clash[0]} is both set (--{clash[0].replace('_', '-')}) and drawn; give it one way")
    base = make_config({**RECIPES[args.recipe].overrides, **values})
    seeds = parse_seeds(args.seeds) if args.seeds else None
    cap = check_cap(args.max_runs)
    if args.ray_address and args.cluster != "ray":
        raise CifarnetError("--ray-address is the address of a Ray cluster; add --cluster ray to train there")
    cluster = (args.ray_address or "") if args.cluster == "ray" else None
    experiment = start_sweep(
        base,
        vary,
        ranges,
        count,
        seeds,
        name,
        args.runs_dir,
        args.data_dir,
        cap,
        getattr(args, "sample_seed", 0),
        getattr(args, "early_stop", "off"),
        cluster,
    )
    where = (
        f"on the Ray cluster at {cluster_address(cluster)}"
        if cluster is not None
        else f"at most {max_live_runs()} at a time"
    )
    print(
        f"experiment {experiment.name}: {sum(map(len, experiment.variants.values()))} run(s), {where}", file=sys.stderr
    )
    try:
        return _follow(experiment, args.runs_dir)
    except KeyboardInterrupt:
        print(
            "cifarnet: its runs go on in the background (`cifarnet runs`; `cancel ID` or `stop ID` to end one)",
            file=sys.stderr,
        )
        return 130


def keep_queue_moving(runs_dir: str | None, quiet: bool = False) -> None:
    """Replace the queue worker if it died (``kill -9``) while runs wait; why it cannot is said on stderr (unless
    ``quiet``), never fatal to the command that looked."""
    try:
        ensure_worker(runs_dir)
    except CifarnetError as exc:
        if not quiet:
            print(f"cifarnet: queued runs cannot start: {exc}", file=sys.stderr)


def _follow(experiment: Experiment, runs_dir: str | None) -> int:
    """One line per run event (a status change, an evaluation) until every run has ended (a run whose folder is
    gone says ``missing`` once and counts as ended); 1 if any failed. Each look also replaces a queue worker that
    died, so the experiment never stalls while it is followed."""
    seen: dict[str, tuple[str, int]] = {}
    while True:
        keep_queue_moving(runs_dir, quiet=bool(seen))
        runs = experiment_runs(experiment)
        for label, info in runs:
            status, evals = seen.get(info.run_id, ("", 0))
            for record in info.evals[evals:]:
                print(f"{info.run_id}: epoch {record.get('epoch', 0):.2f} test {_fmt_pct(record.get('test_acc'))}")
            if info.status != status:
                error = (
                    info.status_record.get("error")
                    if info.status in (*FAILURES, Status.MISSING)
                    else info.status_record.get("reason")
                )
                final = f", test accuracy {_fmt_pct(info.final_acc)}" if info.status == Status.FINISHED else ""
                print(f"{info.run_id} ({label}): {info.status}{final}" + (f" ({error})" if error else ""))
            seen[info.run_id] = (info.status, len(info.evals))
        if not pending(runs):
            return 1 if any(info.status in FAILURES for _, info in runs) else 0
        time.sleep(FOLLOW_S)


def cmd_cancel(args: argparse.Namespace) -> None:
    cancel_run(args.run_id, args.runs_dir)
    print(f"cancelled {args.run_id}; it will not start")


def cmd_queue(args: argparse.Namespace) -> None:
    if args.ray_address:
        serve_cluster(args.runs_dir, args.ray_address)
    else:
        serve(args.runs_dir)


def cmd_evaluate(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, select_device(make_config(_given(args, ["device"])).device))
    data = load_cifar10(args.data_dir)
    result = evaluate(model, data.test_x, data.test_y, tta=True)
    confusion = confusion_matrix(data.test_y.numpy(), result.probs.argmax(1).numpy())
    per_class = dict(zip(data.classes, (confusion.diagonal() / confusion.sum(1)).tolist()))
    out = {
        "checkpoint": str(args.checkpoint),
        "model": model.config,
        "test_acc": result.acc,
        "test_loss": result.loss,
        "tta_acc": result.tta_acc,
        "per_class_acc": per_class,
        "data": data.source,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(
        f"{args.checkpoint}: {model.config['arch']}/{model.config['norm']}  accuracy {100 * result.acc:.2f}%  "
        f"loss {result.loss:.4f}  flip-TTA {100 * result.tta_acc:.2f}%"
    )
    for name, acc in per_class.items():
        print(f"  {name:<11} {100 * acc:6.2f}%")


def cmd_explain(args: argparse.Namespace) -> None:
    from cifarnet.analysis.explain import explain, parse_indices, parse_target, read_picture, save_png, sheet, to_json
    from cifarnet.data.cifar10 import CLASSES, load_cifar10
    from cifarnet.nets.layers import default_layer, find_layer
    from cifarnet.training.checkpoint import load_model

    model = load_model(args.checkpoint)
    layer = find_layer(model, args.layer).name if args.layer else default_layer(model)
    target = parse_target(args.target, CLASSES)
    if args.image:
        found = explain(model, read_picture(args.image), layer, target, names=[Path(args.image).name])
    else:
        data = load_cifar10(args.data_dir, allow_download=False)
        indices = parse_indices(args.index, len(data.test_x))
        found = explain(
            model,
            data.test_x[indices.start : indices.stop],
            layer,
            target,
            names=[f"#{i}" for i in indices],
            indices=list(indices),
            labels=data.test_y[indices.start : indices.stop].tolist(),
        )
    config = model.config
    out = save_png(
        sheet(found, CLASSES, f"{args.checkpoint} ({config['arch']}/{config['norm']}), Grad-CAM at {layer}"), args.out
    )
    if args.json:
        print(
            json.dumps(
                {"checkpoint": str(args.checkpoint), "layer": layer, "out": str(out), "images": to_json(found, CLASSES)}
            )
        )
        return
    for e in found:
        truth = "" if e.label is None else f" (true: {CLASSES[e.label]})"
        print(
            f"{e.name}{truth}: {' · '.join(f'{CLASSES[c]} {100 * p:.1f}%' for c, p in e.top)}; "
            f"Grad-CAM for {CLASSES[e.target]}"
        )
    print(f"wrote {out}")


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def cmd_runs(args: argparse.Namespace) -> None:
    keep_queue_moving(args.runs_dir)
    runs = list_runs(args.runs_dir)
    rows = [
        {
            "id": r.run_id,
            "status": r.status,
            "arch": r.config.get("arch"),
            "norm": r.config.get("norm"),
            "params": r.config.get("params"),
            "epochs": r.config.get("epochs"),
            "best_acc": r.best_acc,
            "final_acc": r.final_acc,
            "duration_s": r.duration_s,
            "pretrained": r.pretrained,
            "error": r.status_record.get("error"),
            "damage": r.damage,
        }
        for r in runs
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'run':<40} {'status':<9} {'arch':<5} {'norm':<4} {'epochs':>6} {'best':>7} {'final':>7} {'time':>7}")
    for row in rows:
        duration = "-" if row["duration_s"] is None else f"{row['duration_s'] / 60:.1f}m"
        label = row["id"] + (" (shipped)" if row["pretrained"] else "")
        print(
            f"{label:<40} {row['status']:<9} {row['arch'] or '?':<5} {row['norm'] or '?':<4} "
            f"{row['epochs'] if row['epochs'] is not None else '?':>6} {_fmt_pct(row['best_acc']):>7} "
            f"{_fmt_pct(row['final_acc']):>7} {duration:>7}"
        )
        for note in ([row["error"]] if row["error"] and row["status"] != Status.FINISHED else []) + row["damage"]:
            print(f"    ! {note}")


def cmd_stop(args: argparse.Namespace) -> None:
    request_stop(args.run_id, args.runs_dir)
    print(f"stop requested for {args.run_id}; it ends after its current step")


def cmd_data(args: argparse.Namespace) -> None:
    data = load_cifar10(args.data_dir, allow_download=args.download)
    print(f"CIFAR-10 from {data.source}: {len(data.train_x)} train, {len(data.test_x)} test images")


COMMANDS = {
    "summary": cmd_summary,
    "rf": cmd_rf,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "runs": cmd_runs,
    "stop": cmd_stop,
    "data": cmd_data,
    "compare": cmd_compare,
    "sweep": cmd_compare,
    "cancel": cmd_cancel,
    "queue": cmd_queue,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except CifarnetError as exc:
        if is_main_process():  # the other processes of a data-parallel run share rank 0's refusal
            print(f"cifarnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifarnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
