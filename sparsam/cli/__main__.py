"""``python -m sparsam.cli`` runs the command line, as ``python -m sparsam`` does."""

import sys

from . import main

sys.exit(main())
