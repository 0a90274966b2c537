"""``python -m cavlog_core`` runs the ``cavlog`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
