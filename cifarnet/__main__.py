"""``python -m cifarnet``: see :mod:`cifarnet.cli`."""

import sys

from cifarnet.cli import main

sys.exit(main())
