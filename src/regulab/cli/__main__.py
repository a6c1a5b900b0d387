"""`python -m regulab.cli` (torchrun starts the command this way)."""

import sys

from regulab.cli import main

sys.exit(main())
