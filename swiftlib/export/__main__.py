"""``python -m swiftlib.export ...``: see :mod:`swiftlib.export.cli`."""
import sys

from swiftlib.export.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
