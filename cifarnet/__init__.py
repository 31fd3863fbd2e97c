"""cifarnet: small convolutional networks on CIFAR-10, built to be looked at.

The public entry points are re-exported here; each lives in the subpackage of its part (``nets``,
``data``, ``runs``, ``training``, ``analysis``, ``ui``; their docstrings say what each may import).
"""

from cifarnet.errors import CheckpointError, CifarnetError, DataError
from cifarnet.nets.models import ARCHS, build_model, count_params
from cifarnet.nets.norms import NORMS
from cifarnet.training.checkpoint import load_model

__all__ = [
    "ARCHS",
    "NORMS",
    "CheckpointError",
    "CifarnetError",
    "DataError",
    "build_model",
    "count_params",
    "load_model",
]
