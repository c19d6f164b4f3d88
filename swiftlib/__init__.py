"""swiftlib: efficient attention for mobile vision, as a thin library behind teaching notebooks.

Ground floor: :mod:`swiftlib.attention` (the four token mixers and their cost formulas) and
:mod:`swiftlib.data` (datasets, transforms, caches). Above them :mod:`swiftlib.models` (SwiftFormer).
Top floor: :mod:`swiftlib.flops`, :mod:`swiftlib.bench`, :mod:`swiftlib.train`, :mod:`swiftlib.export`,
:mod:`swiftlib.viz`. Import the submodule you need; this package imports nothing heavy by itself.
"""
from pathlib import Path

__version__ = "0.1.0"

#: Small committed facts (paper tables, subset class lists, recorded results): ``<repo>/data``.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
