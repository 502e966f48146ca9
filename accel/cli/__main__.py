"""``python -m accel.cli COMMAND ...``: the ``accel`` command (for ``torchrun -m accel.cli render ...``)."""

import sys

from accel.cli import main

sys.exit(main())
