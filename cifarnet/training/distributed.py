"""Data-parallel training on ``torch.distributed``: one run, several processes, one run folder.

PyTorch's own engine does the work. ``torchrun`` starts the processes and puts their rendezvous in
the environment; :func:`join` makes the process group (gloo for CPU tensors, NCCL for CUDA ones);
DistributedDataParallel averages the gradients. The training engine sees all of it through a
:class:`Group`, and a single process is a group of one whose collectives do nothing, so training has
one code path.

What keeps a data-parallel run equal to a single-process run with the same global batch:

- every process draws the same epoch order and the whole batch's augmentation, and keeps its rows
  (:meth:`Group.share`, :class:`cifarnet.data.augment.Rows`);
- BatchNorm statistics span the whole batch (``sync_bn``): ``torch.nn.SyncBatchNorm`` on GPUs, and on
  a CPU, where PyTorch refuses it, :class:`CpuSyncBatchNorm`;
- losses, accuracies and evaluations are summed over the group before anything is recorded.

Rank 0 alone reads and writes the run folder (:func:`is_main_process`); what it reads (the config, a
checkpoint) it hands to the others (:meth:`Group.from_main`), so machines need no shared file system.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cifarnet.errors import CifarnetError

T = TypeVar("T")
# How long a process waits in a collective for the others before the run fails: longer than anything one
# process does alone between two collectives (a checkpoint, a compile, loading the data set on a busy machine).
TIMEOUT_S = 300
# Each process's own stream for dropout, seeded seed * RANK_SEED_STRIDE + rank: the processes must not draw
# the same masks for different images.
RANK_SEED_STRIDE = 1_000_003
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent ends
TERMINATING = threading.Event()  # set by SIGTERM under DDP: the group stops after the current step
PARENT = os.getppid()  # as early as this process can know it: an orphan's parent changes
GROUP_STORE_ENV = "CIFARNET_GROUP_STORE"  # the file in which the processes of a relaunch meet (see torchrun_locally)
LOOPBACK = "lo0" if sys.platform == "darwin" else "lo"  # the loopback interface's name
LOCAL_ONLY_ENV = {
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # torchrun hosts no TCPStore for its processes' process group
    "GLOO_SOCKET_IFNAME": LOOPBACK,  # else gloo listens on the address the host name resolves to
    "NCCL_SOCKET_IFNAME": LOOPBACK,  # else NCCL's bootstrap listens on the first interface that is not loopback
}


def launched() -> bool:
    """Whether a launcher (``torchrun``) started this process as one of a group: it sets RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def under_torchrun() -> bool:
    """Whether torchrun's agent is this process's parent: it sets ``TORCHELASTIC_RUN_ID`` for the processes it
    starts, which are its children."""
    return launched() and "TORCHELASTIC_RUN_ID" in os.environ


def trainer_pid() -> int:
    """The process that stands for this run's trainer in its records (the status's pid, the one a ``STOP`` names).

    Under torchrun, the agent on this machine: it is there from the launch (a ``train --processes N`` records
    its pid before it becomes torchrun), it holds the run's locks, and its processes end with it
    (:func:`end_with_parent`), so it is alive exactly while the run may train. Otherwise this process.
    """
    return os.getppid() if under_torchrun() else os.getpid()


def end_with_parent() -> None:
    """Have the kernel kill this process (SIGKILL) the moment its parent, torchrun's agent, ends however it ends.

    torchrun starts its processes in sessions of their own and cannot stop them when it is killed itself (``kill
    -9``): they would train on without the run's locks, which the agent held, beside a resumed trainer. Killed at
    once, they record nothing more; the run reads as failed and resumes from its last checkpoint. Linux only
    (``prctl``); elsewhere processes outlive a killed launcher as before.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != PARENT:  # the agent ended before the request was made: the kernel will not send it now
        os.kill(os.getpid(), signal.SIGKILL)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise CifarnetError(f"{name}={raw!r} (set by the launcher) is not a whole number") from None


def is_main_process() -> bool:
    """Rank 0, or a process on its own: the one that reads and writes the run folder, prints, and holds
    whatever a run holds while it trains. Readable before the process group exists."""
    return _env_int("RANK", 0) == 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _GroupBatchNorm(torch.autograd.Function):
    """Batch norm over the whole group's batch for CPU tensors: one all-reduce forward, one backward.

    ``torch.nn.SyncBatchNorm``'s scheme with PyTorch's fused CPU kernels: each process reduces its share to
    per-channel moments (its mean and variance, combined over the group in float64, so the group's variance keeps
    float precision); the normalisation is the fused inference kernel with the group's statistics. Backward, the
    fused kernel's per-channel sums of the gradient (the bias and weight gradients) are what the input's gradient
    needs from the whole group: one all-reduce of those, then two in-place passes. The weight and bias gradients
    stay local: DistributedDataParallel averages them like any other.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        channels, count = x.shape[1], x.numel() // x.shape[1]
        # this share's mean and variance from the fused training kernel: several times faster than var_mean
        _, mean, invstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, 0.0)
        mean64 = mean.double()
        totals = torch.cat(
            [
                mean64 * count,
                (invstd.double() ** -2 + mean64.square()) * count,
                torch.tensor([count], dtype=torch.float64),
            ]
        )
        dist.all_reduce(totals)
        n = totals[-1]
        group_mean = totals[:channels] / n
        group_var = (totals[channels:-1] / n - group_mean.square()).clamp_min(0)
        mean32, var32 = group_mean.float(), group_var.float()
        y = torch.batch_norm(x, weight, bias, mean32, var32, False, 0.0, eps, False)
        ctx.save_for_backward(x, weight, mean32, var32)
        ctx.eps, ctx.count = eps, n.item()
        ctx.mark_non_differentiable(group_mean, group_var, n)
        return y, group_mean, group_var, n

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, dy: torch.Tensor, *_unused: torch.Tensor):
        x, weight, mean, var = ctx.saved_tensors
        # with the statistics held fixed: dy * weight * invstd, and the per-channel sums of dy * xhat and dy
        dx, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, mean, var, None, None, False, ctx.eps, [True, True, True]
        )
        sums = torch.cat([grad_bias, grad_weight])
        dist.all_reduce(sums)
        mean_dy, mean_dy_xhat = (sums / ctx.count).chunk(2)
        # minus the statistics' part: weight * invstd * (mean_dy + xhat * mean_dy_xhat), per channel a * x + b
        invstd = torch.rsqrt(var + ctx.eps)
        a = weight * invstd.square() * mean_dy_xhat
        b = weight * invstd * mean_dy - a * mean
        dx.addcmul_(x, a.view(1, -1, 1, 1), value=-1).sub_(b.view(1, -1, 1, 1))
        return dx, grad_weight, grad_bias, None


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics span the whole process group, for CPU tensors.

    ``torch.nn.SyncBatchNorm`` does this on GPUs only. Two all-reduces a layer and step (:class:`_GroupBatchNorm`),
    as many as ``SyncBatchNorm``; the figures match a single process's batch norm over the whole batch to float
    precision. Its state dict is a ``BatchNorm2d``'s, so checkpoints load into the plain model.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        y, mean, var, n = _GroupBatchNorm.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.running_mean.lerp_(mean.float(), self.momentum)
            self.running_var.lerp_((var * (n / (n - 1))).float(), self.momentum)
            self.num_batches_tracked += 1
        return y


def sync_cpu_batchnorm(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` inside ``module`` with a :class:`CpuSyncBatchNorm` holding its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced.to(child.weight.device))
        else:
            sync_cpu_batchnorm(child)


@dataclass(frozen=True)
class Group:
    """The processes training one run: this one's rank among ``world_size``, and its place on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    nodes: int = 1  # machines (torchrun's node count)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def share(self, n: int) -> slice:
        """This process's rows of ``n``: contiguous, in rank order, equal when ``world_size`` divides ``n``."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def threads(self, asked: int) -> int:
        """CPU threads for this process: ``asked``; else, with several processes, an equal share of the
        machine's cores (0: PyTorch's own default, for a single process)."""
        if asked or not self.parallel:
            return asked
        return max(1, _cpus() // self.local_world_size)

    def device(self, chosen: torch.device) -> torch.device:
        """The device of this process: with several, GPU number ``local_rank`` of its machine."""
        if chosen.type != "cuda" or not self.parallel:
            return chosen
        if self.local_rank >= torch.cuda.device_count():
            raise CifarnetError(
                f"process {self.local_rank} of this machine needs GPU {self.local_rank}, but there "
                f"are {torch.cuda.device_count()}; allowed: at most one process per GPU"
            )
        return torch.device("cuda", self.local_rank)

    def replicate(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        """What trains ``model`` here: ``model`` itself for one process; else DistributedDataParallel around it,
        its BatchNorm layers synchronised first when ``sync_bn`` (in place: ``model`` keeps its weights' names),
        and this process's random stream (dropout) made its own. Build the optimizer after this: synchronising
        replaces the norm layers' parameters."""
        if not self.parallel:
            return model
        device = next(model.parameters()).device
        if sync_bn and device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif sync_bn:
            sync_cpu_batchnorm(model)
        torch.manual_seed(torch.initial_seed() * RANK_SEED_STRIDE + self.rank)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the group (in place)."""
        if self.parallel:
            dist.all_reduce(values)
        return values

    def stop_requested(self, asked: Callable[[], bool]) -> bool:
        """Whether to stop after this step: a ``STOP`` request (rank 0 alone calls ``asked``) or a SIGTERM to any
        process (:func:`on_terminate`). One answer for all, so every process stops after the same step."""
        flag = (self.is_main and asked()) or TERMINATING.is_set()
        if not self.parallel:
            return flag
        value = torch.tensor([int(flag)])  # a CPU tensor: gloo carries it, no GPU synchronisation
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather_rows(self, part: torch.Tensor, rows: slice, n: int) -> torch.Tensor:
        """The [n, ...] tensor whose rows ``rows`` each process holds as ``part`` (see :meth:`share`)."""
        if not self.parallel:
            return part
        whole = torch.zeros((n, *part.shape[1:]), dtype=part.dtype, device=part.device)
        whole[rows] = part
        return self.sum(whole)

    def from_main(self, read: Callable[[], T]) -> T:
        """``read()`` done by rank 0 alone and handed to every process; its refusal is every process's refusal."""
        if not self.parallel:
            return read()
        box: list = [None]
        if self.is_main:
            try:
                box[0] = (True, read())
            except Exception as exc:
                box[0] = (False, str(exc))
                dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
                raise
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        ok, value = box[0]
        if not ok:
            raise CifarnetError(value)
        return value

    def failure_reason(self, exc: BaseException) -> str | None:
        """What to record when another process of the group ended or stopped answering (None: not that)."""
        if not self.parallel or not isinstance(exc, (dist.DistError, RuntimeError)):
            return None
        text = " ".join(str(exc).split())
        if not isinstance(exc, dist.DistError) and not re.search(r"gloo|nccl|connection|timed out|peer", text, re.I):
            return None
        text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text)  # PyTorch's source locations
        text = text.split(". ")[0][:160]  # the first sentence says what happened; the rest is PyTorch's advice
        return (
            f"another process of this {self.world_size}-process run ended or stopped answering ({text}); its own "
            "message is in the trainer's output; resume the run to continue from its last checkpoint"
        )

    def leave(self) -> None:
        if self.parallel and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Group()


def join() -> Group:
    """This process's group: the one a launcher set up in the environment, else the process alone."""
    if not launched():
        return SINGLE
    group = Group(
        _env_int("RANK", 0),
        _env_int("WORLD_SIZE", 1),
        _env_int("LOCAL_RANK", 0),
        _env_int("LOCAL_WORLD_SIZE", _env_int("WORLD_SIZE", 1)),
        _env_int("GROUP_WORLD_SIZE", 1),
    )
    if not group.parallel:
        return SINGLE
    if under_torchrun():
        end_with_parent()
    cuda = torch.cuda.is_available() and group.local_rank < torch.cuda.device_count()
    if cuda:
        torch.cuda.set_device(group.local_rank)
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=TIMEOUT_S), **_meeting_place(group)
    )
    return group


def _meeting_place(group: Group) -> dict[str, object]:
    """Where the processes meet to form the process group: under :func:`torchrun_locally`, its file; else where the
    launcher's environment says (``MASTER_ADDR``, ``MASTER_PORT``). Read once: nothing this process starts inherits
    it."""
    path = os.environ.pop(GROUP_STORE_ENV, None)
    if path is None:
        return {}
    return {"store": dist.FileStore(path, group.world_size), "rank": group.rank, "world_size": group.world_size}


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Run a program's ``main`` and exit with its code: the one way out of every program torchrun may start (the
    trainer, the benches).

    A process of a data-parallel group ends without the interpreter's teardown. Under load, one whose work had
    ended (recorded, files closed, process group destroyed) sometimes aborted while Python tore down, in no Python
    frame ("terminate called without an active exception": C++, a thread still joinable when destroyed, as
    the distributed backend's objects are torn down), and torchrun then reported the whole run as failed. Nothing
    is left to do by then but flush the output. A process alone exits as usual.
    """
    if not launched():
        sys.exit(main())
    try:
        code = main() or 0
    except SystemExit as exc:  # argparse's refusals
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def on_terminate(_signum: int, _frame: object) -> None:
    """SIGTERM under DDP (``torchrun`` forwards its own to every process): the group stops after this step."""
    TERMINATING.set()


def relaunch(processes: int, args: list[str]) -> None:
    """Become ``torchrun`` starting ``processes`` copies of ``python -m cifarnet ARGS`` on this machine
    (:func:`torchrun_locally`).

    ``exec``, not a child: the process id stays the one the dashboard recorded, and the run ends when
    torchrun does. Each process gets an equal share of the cores (torchrun would give each one thread).
    """
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, _cpus() // processes)),
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from cifarnet.training.distributed import torchrun_locally; torchrun_locally(sys.argv[1:])",
        "--nproc_per_node",
        str(processes),
        "-m",
        "cifarnet",
        *args,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def torchrun_locally(argv: list[str]) -> None:
    """``torchrun ARGV`` for processes on this machine alone, none of which listens beyond loopback.

    Local by default: no door of cifarnet is open to the network unless the user opens it. ``torchrun
    --standalone`` would open two: its rendezvous and the process group's store are TCPStores, and a TCPStore
    server listens on every interface (``::``, else ``0.0.0.0``) whatever host it is given (both of PyTorch's
    backends, libuv's and the classic one). So nothing here is a TCPStore: torchrun's rendezvous is a file
    (``c10d`` with ``store_type=file``), torchrun hosts no store for the process group
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE``), and the processes meet in a file of their own (:func:`join`). Both
    files lie in a folder only this user can open, removed when torchrun ends (a ``kill -9`` leaves it behind in
    the temporary folder). What still listens, gloo's and NCCL's sockets, listens on the loopback interface
    (``GLOO_SOCKET_IFNAME``, ``NCCL_SOCKET_IFNAME``; gloo would take the host name's address). A torchrun the user
    starts (several machines) is left as its flags make it.
    """
    from torch.distributed.run import main  # torchrun itself: only this process, torchrun's agent, needs it

    with tempfile.TemporaryDirectory(prefix="cifarnet-ddp-") as folder:
        os.environ.update({**LOCAL_ONLY_ENV, GROUP_STORE_ENV: os.path.join(folder, "group")})
        main(
            [
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                os.path.join(folder, "rendezvous"),
                "--rdzv-conf",
                "store_type=file",
                *argv,
            ]
        )
