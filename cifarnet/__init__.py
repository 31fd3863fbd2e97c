"""cifarnet: small convolutional networks on CIFAR-10, built to be looked at.

The public entry points are re-exported here; each lives in the module named for its
concept (data, norms, models, receptive_field, summary, config, train, runs, launch).
"""

from cifarnet.checkpoint import load_model
from cifarnet.errors import CheckpointError, CifarnetError, DataError
from cifarnet.models import ARCHS, build_model, count_params
from cifarnet.norms import NORMS

__all__ = ["ARCHS", "NORMS", "CheckpointError", "CifarnetError", "DataError", "build_model", "count_params",
           "load_model"]
