"""``python -m nfvha.guest`` = ``nfvha-guest``."""
import sys

from .cli import main

sys.exit(main())
