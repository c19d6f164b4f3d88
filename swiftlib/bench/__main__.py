"""``python -m swiftlib.bench attention|models|train [options]`` (see :mod:`swiftlib.bench.cli`)."""
from swiftlib.bench.cli import cli

if __name__ == "__main__":
    cli()
