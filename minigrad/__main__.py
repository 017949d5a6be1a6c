"""``python -m minigrad``: see ``minigrad.cli``."""
import sys

from minigrad.cli import main

sys.exit(main())
