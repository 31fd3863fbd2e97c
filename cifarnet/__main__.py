"""``python -m cifarnet``: see :mod:`cifarnet.cli`."""

from cifarnet.cli import main
from cifarnet.training.distributed import exit_with

exit_with(main)
