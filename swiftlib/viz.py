"""Pure plotting functions for the notebooks: each takes data (or formulas) and returns a matplotlib
Figure, touches no global state, and is tested headlessly. Notebook widgets are thin wrappers.

Sections are grouped by the notebook that uses them.
"""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np

# ============================================================ notebook 01: attention zoo
