"""The training engine: one run folder in, a trained model and its records out.

Design (after airbench): the data set lives in memory as uint8 tensors (on the GPU when
there is one), each step gathers a batch by index, converts it to float and augments
the whole batch at once. Nothing per-image runs in Python.

Two parts, kept apart so each can change alone:

- :class:`Trainer` holds a config's model, optimizer and data on the device and knows the batch
  order (:meth:`Trainer.epoch_order`, a pure function of seed and epoch), the batches
  (:meth:`Trainer.batches`) and the training step (:meth:`Trainer.step`). It writes nothing;
  ``bench/`` times it directly.
- :class:`Run` drives a Trainer to the end of its config and writes everything it learns to the
  run folder as it happens (see :mod:`cifarnet.runs.folders`), so a dashboard can follow it and a crash
  loses nothing already recorded.

Several processes can train one run (:mod:`cifarnet.training.distributed`, launched by ``torchrun``): the Trainer
takes its process :class:`~cifarnet.training.distributed.Group` and, through it, its share of each batch and the
group's sums; the Run records only in rank 0.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from cifarnet.config import LOOKAHEAD_EVERY, TrainConfig
from cifarnet.data.augment import Rows, alternating_flips, augment_batch, first_flips, mix_batch, to_float
from cifarnet.data.cifar10 import Cifar10, load_cifar10, stratified_subset
from cifarnet.devices import resolve_precision, select_device
from cifarnet.errors import CifarnetError, WriteError, shown
from cifarnet.nets.models import CifarNet, build_model
from cifarnet.runs.early_stop import stop_if_behind, stop_reason
from cifarnet.runs.folders import trainer_identity, where_trained
from cifarnet.runs.records import (
    BEST_FILE,
    LAST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    STOP_FILE,
    MetricsLog,
    cut_metrics,
    load_run_config,
    record_world_size,
    recorded_status,
    status_record,
    write_json,
    write_predictions,
    write_status,
)
from cifarnet.runs.status import Status
from cifarnet.training.averaging import WeightAverage
from cifarnet.training.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from cifarnet.training.cpu_share import CpuShare
from cifarnet.training.distributed import SINGLE, Group, on_terminate, trainer_pid
from cifarnet.training.schedule import freeze_norm_scales, lr_at, make_optimizer, set_lr
from cifarnet.training.whitening import fit_whitening

TOP_K = 5
# Images per evaluation forward. On a CPU small batches stay in cache and are faster (bench/eval_speed.py,
# docs/PERFORMANCE.md); a GPU wants large batches.
EVAL_BATCH = {"cpu": 128, "cuda": 1000}
STATUS_EVERY_S = 1.0
# torch.compile's mode per device: on a GPU a small network's step is a few hundred tiny kernels, and
# CUDA graphs ("reduce-overhead") replay them without a launch each; a CPU has no graphs to replay.
COMPILE_MODE = {"cpu": None, "cuda": "reduce-overhead"}
# Each epoch's order comes from its own generator, seeded seed * EPOCH_SEED_STRIDE + epoch: a stride above any
# epoch count, so no two (seed, epoch) pairs share a stream.
EPOCH_SEED_STRIDE = 100_003
# A train record (the losses since the previous one) at least every LOG_EVERY_MAX steps, and at least
# LOGS_PER_EPOCH times an epoch when epochs are short; by time as well, so that the live view moves when steps are
# slow (a busy CPU): after a trainer's first step, then whenever RECORD_EVERY_S have passed since the last record.
# A data-parallel run records by steps alone: its processes would need one more exchange a step to agree on a time.
LOG_EVERY_MAX = 50
LOGS_PER_EPOCH = 5
RECORD_EVERY_S = 1.0


class Diverged(Exception):
    """The loss became NaN or infinite."""


@dataclass
class Evaluation:
    loss: float
    acc: float
    probs: torch.Tensor  # [N, 10] on the CPU
    tta_acc: float | None = None


def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    tta: bool = False,
    batch: int | None = None,
    translate: bool = False,
) -> Evaluation:
    """Loss, accuracy and class probabilities of ``model`` on uint8 ``images``.

    With ``tta`` the probabilities of the image and its mirror are averaged (with ``translate`` also those of
    the pair shifted a pixel each way: :func:`logits_of`) and that accuracy is reported separately
    (``tta_acc``); ``acc`` stays the plain one. Always in full
    fp32 (no autocast, no TF32 on a GPU), whatever a run trained with and wherever it ran, so
    ``evaluate`` of a saved model on a CPU reproduces the figures a GPU run recorded.
    """
    return summarise(*logits_of(model, images, tta, batch, translate), labels)


def _mirrored_probs(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
    """The mean class probabilities of images ``x`` (their ``logits`` when already computed) and of their mirrors."""
    logits = model(x).float() if logits is None else logits
    return (logits.softmax(1) + model(x.flip(3)).float().softmax(1)) / 2


def _tta_probs(model: torch.nn.Module, x: torch.Tensor, plain: torch.Tensor, translate: bool) -> torch.Tensor:
    """Test-time augmentation: the image's and its mirror's probabilities (``plain``: the image's logits, already
    computed); with ``translate`` they weigh half, and the same pair shifted one pixel up-left and one down-right
    (edges reflected) the other half: airbench's ``tta_level`` 2."""
    mirrored = _mirrored_probs(model, x, plain)
    if not translate:
        return mirrored
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[2:]
    shifted = [_mirrored_probs(model, padded[:, :, dy : dy + h, dy : dy + w]) for dy in (0, 2)]
    return mirrored / 2 + (shifted[0] + shifted[1]) / 4


@torch.inference_mode()
def logits_of(
    model: torch.nn.Module, images: torch.Tensor, tta: bool = False, batch: int | None = None, translate: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's logits for uint8 ``images`` and, with ``tta``, its test-time-augmented class probabilities
    (:func:`_tta_probs`), in fp32: see :func:`evaluate`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = batch or EVAL_BATCH["cuda" if device.type == "cuda" else "cpu"]
    plain, augmented = [], []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for start in range(0, len(images), batch):
            x = to_float(images[start : start + batch].to(device, non_blocking=True))
            plain.append(model(x).float())
            if tta:
                augmented.append(_tta_probs(model, x, plain[-1], translate))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    model.train(was_training)
    return torch.cat(plain), torch.cat(augmented) if tta else None


def summarise(logits: torch.Tensor, tta_probs: torch.Tensor | None, labels: torch.Tensor) -> Evaluation:
    """Loss, accuracy and probabilities from the logits (and test-time-augmented probabilities) of
    :func:`logits_of`."""
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    tta_acc = None if tta_probs is None else (tta_probs.argmax(1) == labels).float().mean().item()
    return Evaluation(loss, acc, logits.softmax(1).cpu(), tta_acc)


def _autocast(device: torch.device, precision: str):
    """bfloat16 autocast when the precision resolves to bf16; a no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(device, precision) == "bf16")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def _on_device(
    images: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of each class (all of them for 0), moved to ``device``."""
    if per_class:
        index = stratified_subset(labels, per_class, seed)
        images, labels = images[index], labels[index]
    return images.to(device), labels.to(device)


class Trainer:
    """A config's model, optimizer and data on its device: the batch order, the batches and the training step.

    It writes no files (:class:`Run` records what it does). The batch order is a pure function of the seed
    and the epoch (:meth:`epoch_order`), so a resumed run sees the batches it would have seen, and each
    process of a data-parallel ``group`` takes its share of the same global batches.
    """

    def __init__(self, cfg: TrainConfig, data: Cifar10, group: Group = SINGLE) -> None:
        threads = group.threads(cfg.threads)
        if threads:
            torch.set_num_threads(threads)
        self.cfg, self.group = cfg, group
        self.device = group.device(select_device(cfg.device))
        self.precision = resolve_precision(self.device, cfg.precision)
        torch.manual_seed(cfg.seed)
        self.classes = data.classes
        self.train_x, self.train_y = _on_device(data.train_x, data.train_y, cfg.subset, cfg.seed, self.device)
        self.test_x, self.test_y = data.test_x.to(self.device), data.test_y.to(self.device)
        self.eval_x, self.eval_y = _on_device(self.test_x, self.test_y, cfg.eval_subset, cfg.seed, self.device)
        # channels-last on every device: faster with cuDNN, and with oneDNN on a CPU too (convolution backward,
        # batch norm; docs/PERFORMANCE.md)
        self.model: CifarNet = build_model(**cfg.model_args).to(self.device, memory_format=torch.channels_last)
        if cfg.freeze_norm_scales:
            freeze_norm_scales(self.model)
        if cfg.whiten != "off":
            fit_whitening(self.model, self.train_x, cfg.seed)
        # the weights evaluated and saved: an average of the trained ones (``ema``), or those themselves
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        self.slow = WeightAverage(self.model, cfg.lookahead) if cfg.lookahead else None  # lookahead's slow weights
        # alternating flip: each training image's mirroring in epoch 0, by its place in the (subset) training set
        self.first_flips = (
            first_flips(len(self.train_x), cfg.seed).to(self.device)
            if cfg.flip and cfg.flip_mode == "alternate"
            else None
        )
        replica = group.replicate(self.model, cfg.sync_bn)  # the model itself, or DDP around it
        # compiled for the training step only: evaluation runs other batch sizes under
        # inference_mode, which would cost a recompile each for little saved
        self.forward = torch.compile(replica, mode=COMPILE_MODE[self.device.type]) if cfg.compile else replica
        if cfg.compile:  # inductor's notice that a CPU-only machine has no CUDA runtime is noise here
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        self.optimizer = make_optimizer(self.model, cfg)
        self.steps_done = 0

    @property
    def final_model(self) -> CifarNet:
        """The model evaluated during training and at the end, and saved: the weight average when there is one."""
        return (self.average or self.slow or self).model

    def restore(
        self,
        model: CifarNet,
        optimizer_state: dict,
        steps_done: int,
        average: dict | None = None,
        slow: dict | None = None,
    ) -> None:
        """Continue from a saved state: the weights of ``model``, the optimizer's state, the step reached, and the
        weight average's and lookahead's slow weights (either missing: restarted from ``model``)."""
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(optimizer_state)
        self.steps_done = steps_done
        for kept, state in ((self.average, average), (self.slow, slow)):
            if kept:
                kept.load(state or model.state_dict())

    def flips(self, index: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """Alternating flip: which of the training images at ``index`` are mirrored in ``epoch`` (None: at random)."""
        return None if self.first_flips is None else alternating_flips(self.first_flips[index], epoch)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """The order of the training images in ``epoch``, and the generator that goes on to draw its augmentations."""
        gen = torch.Generator().manual_seed(self.cfg.seed * EPOCH_SEED_STRIDE + epoch)
        return torch.randperm(len(self.train_x), generator=gen).to(self.device), gen

    def batches(self, epoch: int, first: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(batch number, augmented images, labels) of ``epoch`` from batch ``first``, each made when asked for;
        with mixup or cutmix the labels are class-probability targets [N, 10]
        (:func:`~cifarnet.data.augment.mix_batch`).

        The ``step.*`` profiler labels here and in :meth:`step` cost a few microseconds a step; they
        let ``bench/throughput.py --profile`` split a step into its phases.
        """
        order, gen = self.epoch_order(epoch)
        size = self.cfg.batch_size
        share = self.group.share(size)  # this process's rows of every batch
        rows = Rows(share.start, share.stop, size)
        for _ in range(first):  # a resumed epoch: the skipped batches' draws, so each later image gets its own
            one = to_float(self.train_x[:1])
            mix_batch(
                augment_batch(one, self.cfg, gen, Rows(0, 1, size), self.flips(order[:1], epoch)),
                self.train_y[:1],
                self.cfg,
                gen,
            )
        for i in range(first, self.cfg.steps_per_epoch):
            idx = order[i * size : (i + 1) * size][share]
            with record_function("step.gather"):
                x, y = to_float(self.train_x[idx]), self.train_y[idx]
            with record_function("step.augment"):
                x = augment_batch(x, self.cfg, gen, rows, self.flips(idx, epoch))
                x, y = mix_batch(x, y, self.cfg, gen)
                x = x.contiguous(memory_format=torch.channels_last)
            yield i, x, y

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the batch; returns (summed loss, correct count), left on the device.

        ``y`` holds labels, or class-probability targets (mixup, cutmix) whose label smoothing is already in
        them; an image counts as correct when the top class is its target's top one.
        """
        set_lr(self.optimizer, lr_at(self.steps_done, self.cfg))
        soft = y.ndim == 2
        with record_function("step.forward"), _autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=0.0 if soft else self.cfg.label_smoothing)
        with record_function("step.backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("step.optimizer"):
            self.optimizer.step()
            self._average()
        self.steps_done += 1
        return loss.detach() * len(y), (logits.argmax(1) == (y.argmax(1) if soft else y)).sum()

    def _average(self) -> None:
        """After an optimizer step: every ``LOOKAHEAD_EVERY`` steps lookahead's slow weights step towards the trained
        ones, which jump back to them; then the weight average's update (of the weights training goes on from)."""
        if self.slow and (self.steps_done + 1) % LOOKAHEAD_EVERY == 0:
            self.slow.update(self.model, self.steps_done, LOOKAHEAD_EVERY)
            self.slow.pull(self.model)
        if self.average:
            self.average.update(self.model, self.steps_done)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, tta: bool = False) -> Evaluation:
        """:func:`evaluate` of the final model, each process of the group taking its share of the images."""
        share = self.group.share(len(images))
        parts = logits_of(self.final_model, images[share], tta, translate=self.cfg.tta_translate)
        whole = [None if part is None else self.group.gather_rows(part, share, len(images)) for part in parts]
        return summarise(*whole, labels)


class StatusFile:
    """A run's ``status.json``: its status and progress, written at most once a second unless forced.

    Only rank 0 of a data-parallel run writes it; another process keeps it in memory and says on
    stderr how it ended when that was not a success.
    """

    def __init__(self, folder: Path, rank: int = 0) -> None:
        self.folder = folder
        self.rank = rank
        # where it trains, and the identity a stop names (a reader on another machine cannot work it out)
        self.record = status_record(
            Status.STARTING, trainer_pid(), trainer=trainer_identity(trainer_pid()), **where_trained()
        )
        self.last_write = 0.0

    def write(self, status: str, force: bool = False, ending: bool = False, **fields) -> None:
        """Update the record; write it when forced or due (an ``ending`` even on a disk that refuses the atomic
        replace, see :func:`write_status`)."""
        self.record.update(status=status, pid=trainer_pid(), updated=time.time(), **fields)
        now = time.time()
        if self.rank:
            if fields.get("error"):
                print(f"cifarnet: process {self.rank}: {status}: {fields['error']}", file=sys.stderr)
        elif force or now - self.last_write >= STATUS_EVERY_S:
            self.last_write = now
            write_status(self.folder, self.record, ending)

    def end(self, status: str, **fields) -> str:
        """Record how the run ended (now, whatever the throttle and the disk) and return ``status``."""
        self.write(status, force=True, ending=True, **fields, finished=time.time())
        return status


class Run:
    """One run folder driven to its end: a :class:`Trainer`'s steps, with every record written as it happens."""

    def __init__(
        self,
        path: Path,
        trainer: Trainer,
        status: StatusFile,
        metrics: MetricsLog,
        started: float,
        echo: Callable[[dict], None] | None = None,
    ) -> None:
        self.path, self.trainer, self.cfg = path, trainer, trainer.cfg
        self.status, self.metrics, self.echo = status, metrics, echo
        self.stop_file = path / STOP_FILE
        self.identity = trainer_identity(trainer_pid())  # what a STOP for this trainer holds
        self.started = started
        self.elapsed_before = 0.0  # training time before a resume
        self.best_acc = -1.0
        self.main = trainer.group.is_main  # the one process that writes the folder
        self.share = CpuShare(path.parent, self.cfg.threads, trainer.device.type == "cpu", trainer.group.parallel)
        self.record_at = 0.0  # when a train record is due by time (monotonic); 0 until the first is written

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def _resume(self) -> None:
        """Continue from ``last.pt`` when the folder has one (a stopped or crashed run), else from the start.

        Either way the metrics log is cut back to the step training continues from: what a killed trainer
        logged after its last checkpoint is trained (and logged) again, never twice.
        """
        last = self.path / LAST_FILE
        state = self.trainer.group.from_main(lambda: read_checkpoint(last) if last.is_file() else None)
        if state is None:
            self._cut_metrics(0)
            return
        self.trainer.restore(
            model_from_checkpoint(state, str(last)),
            state["optimizer"],
            int(state["step"]),
            state.get("average"),
            state.get("slow"),
        )
        self.best_acc, self.elapsed_before = float(state["best_acc"]), float(state["elapsed"])
        self._cut_metrics(self.trainer.steps_done)

    def _cut_metrics(self, step: int) -> None:
        """Rank 0's log cut back to ``step`` (the other processes keep no log)."""
        if self.main:
            cut_metrics(self.metrics.path, step)

    def _save_last(self) -> None:
        if not self.main:
            return
        trainer = self.trainer
        average = {
            key: kept.model.state_dict() for key, kept in (("average", trainer.average), ("slow", trainer.slow)) if kept
        }
        save_checkpoint(
            self.path / LAST_FILE,
            trainer.model,
            optimizer=trainer.optimizer.state_dict(),
            step=trainer.steps_done,
            best_acc=self.best_acc,
            elapsed=self.elapsed(),
            **average,
        )

    def execute(self) -> str:
        """Train to the end (or a stop request, or divergence) and return the final status."""
        self._resume()
        trainer, cfg = self.trainer, self.cfg
        spe, total = cfg.steps_per_epoch, cfg.total_steps
        log_every = max(1, min(LOG_EVERY_MAX, spe // LOGS_PER_EPOCH))
        window = _Window(trainer.device, trainer.group)
        self.status.write(Status.RUNNING, force=True)
        self.share.update()
        while trainer.steps_done < total:
            epoch, first = divmod(trainer.steps_done, spe)
            for i, x, y in trainer.batches(epoch, first):
                window.add(*trainer.step(x, y), len(y))
                step = trainer.steps_done
                boundary = i == spe - 1 or step == total
                if step % log_every == 0 or boundary or self._record_due():
                    self._log_train(window.flush_train())
                if boundary or (cfg.eval_every and step % cfg.eval_every == 0):
                    self._log_eval(window)
                if trainer.group.stop_requested(self.stop_requested):
                    return self._stopped()
                if step == total:
                    break
            self._save_last()
        return self._finish()

    def stop_requested(self) -> bool:
        """Whether ``STOP`` asks this trainer to stop: it names the trainer it was made for. One left
        for an earlier trainer of the run (which died before it could stop) is removed, not obeyed: otherwise a
        resume would end after its first step."""
        try:
            addressed = (self.stop_file.read_text().splitlines() or [""])[0].strip()  # line 2: a rule's reason
        except FileNotFoundError:
            return False
        if addressed == self.identity:
            return True
        self.stop_file.unlink(missing_ok=True)
        return False

    def _where(self) -> dict:
        """Where the run stands, for every metrics record: step, epoch and training time."""
        step = self.trainer.steps_done
        return {"step": step, "epoch": step / self.cfg.steps_per_epoch, "time": round(self.elapsed(), 3)}

    def _log(self, kind: str, train: dict, **extra: float) -> dict:
        """Append a train or eval record: the training figures since the previous record of its kind."""
        record = {
            "kind": kind,
            **self._where(),
            "lr": lr_at(self.trainer.steps_done - 1, self.cfg),
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            **extra,
            "img_s": train["img_s"],
        }
        if self.main:
            self.metrics.append(record)
        return record

    def _record_due(self) -> bool:
        """Whether a train record is due by time (see :data:`RECORD_EVERY_S`); single-process runs only."""
        return not self.trainer.group.parallel and time.monotonic() >= self.record_at

    def _log_train(self, train: dict) -> None:
        if not math.isfinite(train["loss"]):
            raise Diverged(f"train loss became {train['loss']} at step {self.trainer.steps_done}")
        first = self.record_at == 0.0
        self._progress(self._log("train", train, **self.share.record()), force=first)  # the first shows at once
        self.record_at = time.monotonic() + RECORD_EVERY_S
        self.share.update()

    def _log_eval(self, window: _Window) -> None:
        train = window.flush_eval()
        started = time.time()
        result = self.trainer.evaluate(self.trainer.eval_x, self.trainer.eval_y)
        window.exclude(time.time() - started)
        record = self._log("eval", train, test_loss=result.loss, test_acc=result.acc)
        if result.acc > self.best_acc:
            self.best_acc = result.acc
            if self.main:
                save_checkpoint(
                    self.path / BEST_FILE, self.trainer.final_model, step=self.trainer.steps_done, test_acc=result.acc
                )
        self._progress(record, force=True)
        if self.main and self.trainer.steps_done < self.cfg.total_steps:
            # a sweep's early-stopping rule, if it has one
            stop_if_behind(self.path, self.trainer.steps_done, self.identity)

    def _progress(self, record: dict, force: bool = False) -> None:
        cfg, step = self.cfg, self.trainer.steps_done
        remaining = (cfg.total_steps - step) * cfg.batch_size
        img_s = record.get("img_s") or 0.0
        progress = {
            "step": step,
            "total_steps": cfg.total_steps,
            "epoch": round(record["epoch"], 3),
            "epochs": cfg.epochs,
            "img_s": img_s,
            "eta_s": remaining / img_s if img_s else None,
            "train_loss": record["train_loss"],
            "train_acc": record["train_acc"],
            "test_acc": record.get("test_acc", self.status.record.get("progress", {}).get("test_acc")),
            "elapsed_s": record["time"],
            **self.share.record(),
        }
        self.status.write(Status.RUNNING, force=force, progress=progress)
        if self.echo:
            self.echo(progress)

    def _stopped(self) -> str:
        self._save_last()
        reason = stop_reason(self.stop_file) if self.main else None
        if self.main:
            self.stop_file.unlink(missing_ok=True)
        return self.status.end(Status.STOPPED_EARLY, reason=reason) if reason else self.status.end(Status.STOPPED)

    def _finish(self) -> str:
        """Final full-test evaluation; rank 0 writes ``model.pt``, the predictions for the browser and the results."""
        trainer = self.trainer
        result = trainer.evaluate(trainer.test_x, trainer.test_y, tta=self.cfg.tta)
        if self.main:
            self._write_results(result)
        return self.status.end(Status.FINISHED)

    def _write_results(self, result: Evaluation) -> None:
        trainer = self.trainer
        save_checkpoint(self.path / MODEL_FILE, trainer.final_model, step=trainer.steps_done)
        labels = trainer.test_y.cpu().numpy()
        top_p, top_i = result.probs.topk(TOP_K, dim=1)
        predicted = top_i[:, 0].numpy()
        write_predictions(
            self.path,
            {
                "labels": labels.astype(np.uint8),
                "top_classes": top_i.numpy().astype(np.uint8),
                "top_probs": top_p.numpy().astype(np.float16),
            },
        )
        confusion = confusion_matrix(labels, predicted)
        per_class = (confusion.diagonal() / confusion.sum(1).clip(min=1)).tolist()
        results = {
            "test_acc": result.acc,
            "test_loss": result.loss,
            "tta_acc": result.tta_acc,
            "best_eval_acc": max(self.best_acc, result.acc),
            "per_class_acc": dict(zip(trainer.classes, per_class)),
            "confusion": confusion.tolist(),
            "classes": list(trainer.classes),
            "steps": trainer.steps_done,
            "epochs": trainer.steps_done / self.cfg.steps_per_epoch,
            "elapsed_s": self.elapsed(),
            "device": str(trainer.device),
            "precision": trainer.precision,
        }
        write_json(self.path / RESULTS_FILE, results)
        self.metrics.append(
            {
                "kind": "final",
                **self._where(),
                "test_loss": result.loss,
                "test_acc": result.acc,
                "tta_acc": result.tta_acc,
            }
        )
        self._save_last()


class _Window:
    """Running train loss / accuracy / throughput, kept on the device to avoid a sync per step.

    Read as sums over the group: the figures describe the whole batches, whatever their split.
    """

    def __init__(self, device: torch.device, group: Group = SINGLE) -> None:
        self.device, self.group = device, group
        self.train = self._fresh()
        self.since_eval = self._fresh()

    def _fresh(self) -> dict:
        return {
            "loss": torch.zeros((), device=self.device),
            "correct": torch.zeros((), device=self.device),
            "n": 0,
            "t0": time.time(),
            "excluded": 0.0,
        }

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
        local = torch.stack([acc["loss"], acc["correct"], torch.tensor(float(acc["n"]), device=self.device)])
        loss, correct, images = self.group.sum(local).tolist()
        n = max(images, 1)
        seconds = max(time.time() - acc["t0"] - acc["excluded"], 1e-9)
        return {"loss": loss / n, "acc": correct / n, "img_s": images / seconds}

    def flush_train(self) -> dict:
        out, self.train = self._read(self.train), self._fresh()
        return out

    def flush_eval(self) -> dict:
        out, self.since_eval = self._read(self.since_eval), self._fresh()
        return out


def _unfinished_config(path: Path) -> TrainConfig:
    """The run's config, unless it has finished (resuming it would log a second final record)."""
    cfg = load_run_config(path)
    if recorded_status(path) == Status.FINISHED:
        raise CifarnetError(f"run {shown(path.name)} has finished; nothing to resume")
    return cfg


def train_run(
    path: Path,
    data_dir: str | None = None,
    echo: Callable[[dict], None] | None = None,
    data: Cifar10 | None = None,
    group: Group = SINGLE,
) -> str:
    """Train the run in ``path`` (as one process of ``group``); every ending is recorded in its status (never
    raises for user errors, but refuses a finished run: there is nothing left to train)."""
    started = time.time()
    cfg = group.from_main(lambda: _unfinished_config(path))
    status = StatusFile(path, group.rank)
    stop_file = path / STOP_FILE

    def on_term(_signum, _frame) -> None:
        stop_file.write_text(trainer_identity(trainer_pid()))  # a stop addressed to this trainer (Run.stop_requested)

    handler = on_terminate if group.parallel else on_term
    previous = signal.signal(signal.SIGTERM, handler) if threading.current_thread() is threading.main_thread() else None
    try:
        status.write(Status.STARTING, force=True, error=None)
        if group.is_main:
            record_world_size(path, group.world_size, group.nodes)
        trainer = Trainer(cfg, data or load_cifar10(data_dir), group)
        with MetricsLog(path / METRICS_FILE) if group.is_main else nullcontext() as metrics:
            return Run(path, trainer, status, metrics, started, echo).execute()
    except Diverged as exc:
        return _ended(status, Status.DIVERGED, f"{exc}; lower the learning rate")
    except KeyboardInterrupt:
        return _ended(status, Status.STOPPED, "interrupted")
    except torch.OutOfMemoryError as exc:
        first = str(exc).splitlines()[0][:120]
        return _ended(status, Status.FAILED, f"out of memory ({first}); use a smaller batch_size")
    except CifarnetError as exc:
        return _ended(status, Status.FAILED, str(exc))
    except OSError as exc:
        return _ended(status, Status.FAILED, str(WriteError.of(Path(exc.filename or path), exc)))
    except Exception as exc:  # the run's record must say why it ended, whatever happened
        if reason := group.failure_reason(exc):
            return _ended(status, Status.FAILED, reason)
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = str(exc).strip().splitlines()[0][:200]
            return _ended(status, Status.FAILED, f"torch.compile failed ({first}); train again with compile off")
        return _ended(status, Status.FAILED, f"{type(exc).__name__}: {exc}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _ended(status: StatusFile, how: str, reason: str) -> str:
    """Record an ending with its reason; when even ``status.json`` cannot be written, say both on stderr (the
    terminal, or the run's ``log.txt``) so the reason is not lost."""
    try:
        return status.end(how, error=reason)
    except WriteError as exc:
        print(f"cifarnet: run {status.folder.name} {how}: {reason} ({exc})", file=sys.stderr)
        return how
