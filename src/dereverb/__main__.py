"""``python -m dereverb`` (and ``torchrun -m dereverb train ...``) run the CLI."""

import sys

from .cli import main

sys.exit(main())
