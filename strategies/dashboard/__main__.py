"""``python -m strategies.dashboard``: see :mod:`strategies.dashboard.cli`."""

import sys

from strategies.dashboard.cli import main

if __name__ == "__main__":
    sys.exit(main())
