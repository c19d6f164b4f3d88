"""swiftlib: efficient attention for mobile vision, as a thin library behind teaching notebooks.

Ground floor: :mod:`swiftlib.attention` (the four token mixers and their cost formulas) and
:mod:`swiftlib.data` (datasets, transforms, caches). Above them :mod:`swiftlib.models` (SwiftFormer).
Top floor: :mod:`swiftlib.flops`, :mod:`swiftlib.bench`, :mod:`swiftlib.train`, :mod:`swiftlib.export`,
:mod:`swiftlib.viz`. Import the submodule you need; this package imports nothing heavy by itself.

Quiet start-up. Two third-party modules that swiftlib imports print a harmless message every time they
are imported; those two imports (and nothing else) run with that one message silenced:

- ``torch.utils.cpp_extension``, imported by ``torch.utils.benchmark`` (:mod:`swiftlib.measure`), logs
  "No CUDA runtime is found, using CUDA_HOME=..." on a machine with a CUDA folder but no GPU;
- ``fvcore.nn.focal_loss``, imported by ``fvcore.nn`` (:mod:`swiftlib.flops`), calls ``torch.jit.script``
  when imported, which warns that ``torch.jit.script`` is deprecated.

Your own code still sees both messages. (coremltools' Linux start-up noise is silenced where swiftlib
imports it: :func:`swiftlib.export.coreml.quiet_coremltools`.)
"""
import importlib.abc
import importlib.machinery
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

__version__ = "0.1.0"

#: Small committed facts (paper tables, subset class lists, recorded results): ``<repo>/data``.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: module -> (logger whose warnings its import drops, warning message (regex) its import ignores).
QUIET_IMPORTS = {
    "torch.utils.cpp_extension": ("torch.utils.cpp_extension", None),
    "fvcore.nn.focal_loss": (None, r"`torch\.jit\.script` is deprecated"),
}


@contextmanager
def quiet(logger: str | None = None, warning: str | None = None):
    """Inside the block only: the logger named ``logger`` drops everything below ERROR, and warnings whose
    message matches the regex ``warning`` are ignored. Both are restored afterwards."""
    log = logging.getLogger(logger) if logger else None
    level = log.level if log else logging.NOTSET
    if log:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if warning:
                warnings.filterwarnings("ignore", message=warning)
            yield
    finally:
        if log:
            log.setLevel(level)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`QUIET_IMPORTS` as Python would and runs their import inside :func:`quiet`."""

    def find_spec(self, name, path=None, target=None):
        if name not in QUIET_IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module  # the loader is this import's own object

            def exec_module(module, run=run, noise=QUIET_IMPORTS[name]):
                with quiet(*noise):
                    run(module)

            spec.loader.exec_module = exec_module
        return spec


if not any(isinstance(finder, _QuietImports) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImports())
