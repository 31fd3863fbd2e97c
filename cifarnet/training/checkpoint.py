"""Checkpoints: the model's config and weights together, loaded safely.

A checkpoint is a plain dict of tensors, numbers and strings, loaded with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused
by PyTorch's restricted unpickler before anything runs. The model config travels with
the weights, so :func:`load_model` rebuilds the right network from the file alone.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarnet.errors import CheckpointError, CifarnetError, shown
from cifarnet.nets.models import CifarNet, build_model
from cifarnet.runs.records import upgrade_model, write_file

FORMAT = "cifarnet-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, model: CifarNet, **extra: Any) -> None:
    """Serialised in memory (a small model's few MB) and written through :func:`cifarnet.runs.records.write_file`:
    atomic, and a full disk or an unwritable folder is a :class:`~cifarnet.errors.WriteError` naming the file,
    with no temporary file left behind."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(model.config),
        "state_dict": model.state_dict(),
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_file(path, buffer.getvalue())


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, or a :class:`CheckpointError` that says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} was refused: it asks to load {unsafe[1]}, which is not a weight or a setting "
                "(possibly code); nothing from it was run"
            ) from exc
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a readable PyTorch file)") from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a cifarnet checkpoint (no '{FORMAT}' header)")
    return payload


def model_from_checkpoint(payload: dict, source: str) -> CifarNet:
    """Rebuild the network named in the checkpoint and load its weights strictly."""
    config = payload.get("model")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {source} has no model config")
    try:
        model = build_model(**upgrade_model(config))
    except (CifarnetError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {source} names an unknown model ({exc})") from exc
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {source} has weights that do not fit arch={config.get('arch')!r} "
            f"norm={config.get('norm')!r} (saved from another architecture?)"
        ) from exc
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The saved model, in eval mode, ready for RGB [0, 1] input; refused when a weight is NaN or infinite.

    Such a model predicts NaN for every picture: its "explanations", top classes and accuracy would be noise
    drawn as if they meant something. (Resuming reads ``last.pt`` through :func:`model_from_checkpoint`, which
    does not ask this: a diverged run is told apart by its trainer.)
    """
    payload = read_checkpoint(path, device)
    weights = payload["state_dict"] if isinstance(payload["state_dict"], dict) else {}  # else refused below
    broken = [
        name
        for name, tensor in weights.items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite weights (in {len(broken)} tensor(s), first "
            f"{shown(broken[0])}): its training diverged or the file was altered; it cannot be "
            "used to predict"
        )
    return model_from_checkpoint(payload, str(path)).to(device).eval()
