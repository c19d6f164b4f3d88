"""``python -m swiftlib.train`` (and ``torchrun ... -m swiftlib.train``): see :mod:`swiftlib.train.cli`."""
from swiftlib.train.cli import cli

if __name__ == "__main__":
    cli()
