"""The training engine: one run folder in, a trained model and its records out.

Design (after airbench): the data set lives in memory as uint8 tensors (on the GPU when
there is one), each step gathers a batch by index, converts it to float and augments
the whole batch at once. Nothing per-image runs in Python. Everything the run learns is
written to its folder as it happens (see :mod:`cifarnet.runs`), so a dashboard can
follow it and a crash loses nothing already recorded.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from cifarnet.augment import AugmentSpec, augment_batch, to_float
from cifarnet.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from cifarnet.config import TrainConfig
from cifarnet.data import Cifar10, load_cifar10, stratified_subset
from cifarnet.errors import CifarnetError
from cifarnet.models import CifarNet, build_model
from cifarnet.runs import MetricsLog, load_run_config, write_json
from cifarnet.schedule import lr_at, make_optimizer, set_lr

TOP_K = 5
# Images per evaluation forward. On a CPU small batches stay in cache: the 10,000 test images take 1.48 s at
# 128 against 3.48 s at 1,000 (s9 + BN, 2 threads; LN 1.67 against 3.66 s; bench/eval_speed.py). A GPU wants
# large batches.
EVAL_BATCH = {"cpu": 128, "cuda": 1000}
STATUS_EVERY_S = 1.0


class Diverged(Exception):
    """The loss became NaN or infinite."""


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is refused clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CifarnetError("device='cuda' was requested but no CUDA GPU is available; allowed here: auto, cpu")
    return torch.device(name)


@dataclass
class Evaluation:
    loss: float
    acc: float
    probs: torch.Tensor  # [N, 10] on the CPU
    tta_acc: float | None = None


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool = False,
             batch: int | None = None) -> Evaluation:
    """Loss, accuracy and class probabilities of ``model`` on uint8 ``images``.

    With ``tta`` the probabilities of the image and its mirror are averaged and that
    accuracy is reported separately (``tta_acc``); ``acc`` stays the plain one. Always at the
    device's ``auto`` precision, whatever a run trained with, so ``evaluate`` on a saved model
    reproduces the figures its run recorded.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = batch or EVAL_BATCH["cuda" if device.type == "cuda" else "cpu"]
    plain, flipped = [], []
    for start in range(0, len(images), batch):
        x = to_float(images[start:start + batch].to(device, non_blocking=True))
        with _autocast(device):
            plain.append(model(x).float())
            if tta:
                flipped.append(model(x.flip(3)).float())
    model.train(was_training)
    logits = torch.cat(plain)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    tta_acc = None
    if tta:
        both = logits.softmax(1) + torch.cat(flipped).softmax(1)
        tta_acc = (both.argmax(1) == labels).float().mean().item()
    return Evaluation(loss, acc, logits.softmax(1).cpu(), tta_acc)


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 on CUDA (measurably faster there) and fp32 on a CPU, where bf16 is opt-in.

    Opt-in because it changes every run's numerics, and a CPU without native bfloat16 would have to emulate it
    (not measured); with AVX512-BF16 a training step is 1.2-1.3x faster (bench/option_speed.py --option precision; docs/PERFORMANCE.md).
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(device: torch.device, precision: str = "auto"):
    """bfloat16 autocast when the precision resolves to bf16; a no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=resolve_precision(device, precision) == "bf16")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


class Run:
    """One training run bound to its folder. ``execute()`` trains, records and returns the status."""

    def __init__(self, path: Path, data_dir: str | None = None,
                 echo: Callable[[dict], None] | None = None, data: Cifar10 | None = None) -> None:
        self.path = path
        self.cfg: TrainConfig = load_run_config(path)
        self.data_dir, self.echo, self.data = data_dir, echo, data
        self.stop_file = path / "STOP"
        self.started = time.time()
        self.elapsed_before = 0.0
        self.last_status = 0.0
        self.status: dict = {"status": "starting", "pid": os.getpid()}

    # -- records ---------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def write_status(self, status: str, force: bool = False, **fields) -> None:
        """Status and progress, throttled to once a second unless ``force``."""
        self.status.update(status=status, pid=os.getpid(), updated=time.time(), **fields)
        now = time.time()
        if force or now - self.last_status >= STATUS_EVERY_S:
            self.last_status = now
            write_json(self.path / "status.json", self.status)

    # -- setup -----------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = select_device(cfg.device)
        self.precision = resolve_precision(self.device, cfg.precision)
        torch.manual_seed(cfg.seed)
        data = self.data or load_cifar10(self.data_dir)
        self.classes = data.classes
        train_idx = stratified_subset(data.train_y, cfg.subset, cfg.seed) if cfg.subset else None
        self.train_x = (data.train_x if train_idx is None else data.train_x[train_idx]).to(self.device)
        self.train_y = (data.train_y if train_idx is None else data.train_y[train_idx]).to(self.device)
        self.test_x, self.test_y = data.test_x.to(self.device), data.test_y.to(self.device)
        eval_idx = stratified_subset(data.test_y, cfg.eval_subset, cfg.seed) if cfg.eval_subset else None
        self.eval_x = self.test_x if eval_idx is None else self.test_x[eval_idx.to(self.device)]
        self.eval_y = self.test_y if eval_idx is None else self.test_y[eval_idx.to(self.device)]
        # channels-last on every device: faster with cuDNN, and a training step is about 1.25x
        # faster with oneDNN on a CPU too (convolution backward, batch norm; docs/PERFORMANCE.md)
        self.model: CifarNet = build_model(**cfg.model_args).to(
            self.device, memory_format=torch.channels_last)
        # compiled for the training step only: evaluation runs other batch sizes under
        # inference_mode, which would cost a recompile each for a few hundred ms saved
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        if cfg.compile:  # inductor's notice that a CPU-only machine has no CUDA runtime is noise here
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        self.optimizer = make_optimizer(self.model, cfg)
        self.spec = AugmentSpec.from_config(cfg)
        self.step, self.best_acc = 0, -1.0
        self._resume()
        self.metrics = MetricsLog(self.path / "metrics.jsonl")

    def _resume(self) -> None:
        """Continue from ``last.pt`` when the folder has one (a stopped or crashed run)."""
        last = self.path / "last.pt"
        if not last.is_file():
            return
        state = read_checkpoint(last, self.device)
        self.model.load_state_dict(model_from_checkpoint(state, str(last)).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.best_acc = int(state["step"]), float(state["best_acc"])
        self.elapsed_before = float(state["elapsed"])

    def _save_last(self) -> None:
        save_checkpoint(self.path / "last.pt", self.model, optimizer=self.optimizer.state_dict(), step=self.step,
                        best_acc=self.best_acc, elapsed=self.elapsed())

    # -- loop ------------------------------------------------------------------------
    def _batches(self, epoch: int, first: int):
        """Step indices and image indices of ``epoch``, starting at batch ``first``."""
        n, b = len(self.train_x), self.cfg.batch_size
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).to(self.device)
        for i in range(first, self.cfg.steps_per_epoch):
            yield i, order[i * b:(i + 1) * b], gen

    def _train_step(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on batch ``idx``; returns (summed loss, correct count) on the device.

        The ``step.*`` profiler labels cost a few microseconds a step (about 0.01 % on a
        CPU); they let ``bench/throughput.py --profile`` split a step into its phases.
        """
        with record_function("step.gather"):
            x, y = to_float(self.train_x[idx]), self.train_y[idx]
        with record_function("step.augment"):
            x = augment_batch(x, self.spec, gen).contiguous(memory_format=torch.channels_last)
        set_lr(self.optimizer, lr_at(self.step, self.cfg))
        with record_function("step.forward"), _autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        with record_function("step.backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("step.optimizer"):
            self.optimizer.step()
        self.step += 1
        return loss.detach() * len(y), (logits.argmax(1) == y).sum()

    def execute(self) -> str:
        """Train to the end (or a stop request, or divergence) and return the final status."""
        self.write_status("starting", force=True, error=None)
        self._prepare()
        cfg = self.cfg
        spe, total = cfg.steps_per_epoch, cfg.total_steps
        log_every = max(1, min(50, spe // 5))
        window = _Window(self.device)
        self.write_status("running", force=True)
        while self.step < total:
            epoch, first = divmod(self.step, spe)
            for i, idx, gen in self._batches(epoch, first):
                window.add(*self._train_step(idx, gen), len(idx))
                boundary = i == spe - 1 or self.step == total
                if self.step % log_every == 0 or boundary:
                    self._log_train(window.flush_train())
                if boundary or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    self._log_eval(window)
                if self.stop_file.exists():
                    return self._stopped()
                if self.step == total:
                    break
            self._save_last()
        return self._finish()

    def _log_train(self, train: dict) -> None:
        if not math.isfinite(train["loss"]):
            raise Diverged(f"train loss became {train['loss']} at step {self.step}")
        record = {"kind": "train", "step": self.step, "epoch": self.step / self.cfg.steps_per_epoch,
                  "time": round(self.elapsed(), 3), "lr": lr_at(self.step - 1, self.cfg),
                  "train_loss": train["loss"], "train_acc": train["acc"], "img_s": train["img_s"]}
        self.metrics.append(record)
        self._progress(record)

    def _log_eval(self, window: "_Window") -> None:
        train = window.flush_eval()
        started = time.time()
        result = evaluate(self.model, self.eval_x, self.eval_y)
        window.exclude(time.time() - started)
        record = {"kind": "eval", "step": self.step, "epoch": self.step / self.cfg.steps_per_epoch,
                  "time": round(self.elapsed(), 3), "lr": lr_at(self.step - 1, self.cfg),
                  "train_loss": train["loss"], "train_acc": train["acc"], "test_loss": result.loss,
                  "test_acc": result.acc, "img_s": train["img_s"]}
        self.metrics.append(record)
        if result.acc > self.best_acc:
            self.best_acc = result.acc
            save_checkpoint(self.path / "best.pt", self.model, step=self.step, test_acc=result.acc)
        self._progress(record, force=True)

    def _progress(self, record: dict, force: bool = False) -> None:
        cfg = self.cfg
        remaining = (cfg.total_steps - self.step) * cfg.batch_size
        img_s = record.get("img_s") or 0.0
        progress = {"step": self.step, "total_steps": cfg.total_steps, "epoch": round(record["epoch"], 3),
                    "epochs": cfg.epochs, "img_s": img_s, "eta_s": remaining / img_s if img_s else None,
                    "train_loss": record["train_loss"], "train_acc": record["train_acc"],
                    "test_acc": record.get("test_acc", self.status.get("progress", {}).get("test_acc")),
                    "elapsed_s": record["time"]}
        self.write_status("running", force=force, progress=progress)
        if self.echo:
            self.echo(progress)

    def _stopped(self) -> str:
        self._save_last()
        self.stop_file.unlink(missing_ok=True)
        self.write_status("stopped", force=True, finished=time.time())
        return "stopped"

    def _finish(self) -> str:
        """Final full-test evaluation, predictions for the browser, results, ``model.pt``."""
        save_checkpoint(self.path / "model.pt", self.model, step=self.step)
        result = evaluate(self.model, self.test_x, self.test_y, tta=self.cfg.tta)
        labels = self.test_y.cpu().numpy()
        top_p, top_i = result.probs.topk(TOP_K, dim=1)
        predicted = top_i[:, 0].numpy()
        np.savez_compressed(self.path / "predictions.npz", labels=labels.astype(np.uint8),
                            top_classes=top_i.numpy().astype(np.uint8), top_probs=top_p.numpy().astype(np.float16))
        confusion = confusion_matrix(labels, predicted)
        per_class = (confusion.diagonal() / confusion.sum(1).clip(min=1)).tolist()
        results = {"test_acc": result.acc, "test_loss": result.loss, "tta_acc": result.tta_acc,
                   "best_eval_acc": max(self.best_acc, result.acc), "per_class_acc": dict(zip(self.classes, per_class)),
                   "confusion": confusion.tolist(), "classes": list(self.classes), "steps": self.step,
                   "epochs": self.step / self.cfg.steps_per_epoch, "elapsed_s": self.elapsed(),
                   "device": str(self.device), "precision": self.precision}
        write_json(self.path / "results.json", results)
        self.metrics.append({"kind": "final", "step": self.step, "epoch": results["epochs"],
                             "time": round(self.elapsed(), 3), "test_loss": result.loss, "test_acc": result.acc,
                             "tta_acc": result.tta_acc})
        self._save_last()
        self.write_status("finished", force=True, finished=time.time())
        return "finished"


class _Window:
    """Running train loss / accuracy / throughput, kept on the device to avoid a sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.train = self._fresh()
        self.since_eval = self._fresh()

    def _fresh(self) -> dict:
        return {"loss": torch.zeros((), device=self.device), "correct": torch.zeros((), device=self.device),
                "n": 0, "t0": time.time(), "excluded": 0.0}

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        for acc in (self.train, self.since_eval):
            acc["loss"] += loss_sum
            acc["correct"] += correct
            acc["n"] += n

    def exclude(self, seconds: float) -> None:
        """Evaluation time does not count against training throughput."""
        self.train["excluded"] += seconds
        self.since_eval["excluded"] += seconds

    def _read(self, acc: dict) -> dict:
        n = max(acc["n"], 1)
        seconds = max(time.time() - acc["t0"] - acc["excluded"], 1e-9)
        return {"loss": acc["loss"].item() / n, "acc": acc["correct"].item() / n, "img_s": acc["n"] / seconds}

    def flush_train(self) -> dict:
        out, self.train = self._read(self.train), self._fresh()
        return out

    def flush_eval(self) -> dict:
        out, self.since_eval = self._read(self.since_eval), self._fresh()
        return out


def train_run(path: Path, data_dir: str | None = None, echo: Callable[[dict], None] | None = None,
              data: Cifar10 | None = None) -> str:
    """Train the run in ``path``; every ending is recorded in its status (never raises for user errors)."""
    run = Run(path, data_dir, echo, data)

    def on_term(_signum, _frame) -> None:
        run.stop_file.touch()

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        return run.execute()
    except Diverged as exc:
        run.write_status("diverged", force=True, error=f"{exc}; lower the learning rate", finished=time.time())
        return "diverged"
    except KeyboardInterrupt:
        run.write_status("stopped", force=True, error="interrupted", finished=time.time())
        return "stopped"
    except torch.OutOfMemoryError as exc:
        return _failed(run, f"out of memory ({str(exc).splitlines()[0][:120]}); use a smaller batch_size")
    except CifarnetError as exc:
        return _failed(run, str(exc))
    except OSError as exc:
        return _failed(run, f"cannot write to {exc.filename or run.path}: {exc.strerror or exc}")
    except Exception as exc:  # the run's record must say why it ended, whatever happened
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = str(exc).strip().splitlines()[0][:200]
            return _failed(run, f"torch.compile failed ({first}); train again with compile off")
        return _failed(run, f"{type(exc).__name__}: {exc}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _failed(run: Run, reason: str) -> str:
    try:
        run.write_status("failed", force=True, error=reason, finished=time.time())
    except OSError:
        pass  # the folder itself is unwritable; the caller still gets the status and reason
    run.status["error"] = reason
    return "failed"


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

