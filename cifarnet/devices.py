"""Where a run computes: the device it asks for, and the precision that suits it.

Apart from the training engine: the device is also checked before a run folder exists
(:func:`cifarnet.runs.folders.create_run`), and the run folders cannot import the engine, which imports them (through
the run limit that sets its CPU share).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

from cifarnet.errors import CifarnetError


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is refused clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CifarnetError("device='cuda' was requested but no CUDA GPU is available; allowed here: auto, cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), from the kernel's CPU flags (Linux).

    Elsewhere, or when the flags cannot be read, False: without native support oneDNN emulates bfloat16,
    which is no faster than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 where it is native and faster (CUDA; a CPU with AVX512-BF16 or AMX), fp32 elsewhere.

    The convolutions run in bfloat16, weights and optimizer stay fp32, and evaluation is always fp32; over the
    measured runs bf16 ended within the spread of seeds of fp32 (docs/RESULTS.md).
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" or native_bf16_cpu() else "fp32"
    return precision
