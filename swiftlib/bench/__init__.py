"""swiftlib.bench: benchmark applications built on the measurement core, :mod:`swiftlib.measure`.

One module a job (shapes in each module's docstring; ``B, N, D`` tokens, ``B, C, H, W`` maps):

* :mod:`swiftlib.bench.attention` -- the attention sweep over token counts ``N`` (``x [B, N, D]``):
  the four attentions, swiftlib's inference module, its matrix-product floor and timm's module;
  exponents, ratios, crossovers (notebook 02).
* :mod:`swiftlib.bench.models` -- SwiftFormer ``[B, 3, H, W] -> [B, K]``: swiftlib (eager, fused,
  compiled, ONNX Runtime on the file :func:`swiftlib.export.to_onnx` writes) against timm on the
  same weights, the attention ablation, peers (notebook 03).
* :mod:`swiftlib.bench.train` -- training img/s of :func:`swiftlib.train.fit` against a plain loop (notebook 04).
* :mod:`swiftlib.bench.data_loading` -- img/s of a JPEG folder against its uint8 cache (notebook 04).
* :mod:`swiftlib.bench.cli` -- ``python -m swiftlib.bench attention|models|train``, ``--json``, ``--expect``
  (:func:`swiftlib.cli.parse_expectation`), one-line errors (:func:`swiftlib.cli.run`).
* :mod:`swiftlib.bench.checks` -- every flag of the command line checked before anything is measured.
* :mod:`swiftlib.bench.common` -- argument checks they share.

Timing, interleaving, paired ratios, peak memory, machine info and exponent fits are imported from
:mod:`swiftlib.measure`, their one home. Every performance claim is a ratio against a peer timed in
the same run; expectations on those ratios are arguments (``--expect``), never constants here.
"""
from swiftlib.bench.attention import (AdditiveMatmuls, TimmAdditiveOnTokens, attention_sweep, find_crossovers,
                                      map_size, summarize_sweep, sweep_crossovers, sweep_series)
from swiftlib.bench.cli import cli, main
from swiftlib.bench.data_loading import data_loading_throughput
from swiftlib.bench.models import MODEL_PEERS, models_benchmark, settle_batchnorm
from swiftlib.bench.train import train_throughput

__all__ = [
    "attention_sweep",
    "summarize_sweep",
    "find_crossovers",
    "sweep_series",
    "sweep_crossovers",
    "map_size",
    "TimmAdditiveOnTokens",
    "AdditiveMatmuls",
    "models_benchmark",
    "settle_batchnorm",
    "MODEL_PEERS",
    "train_throughput",
    "data_loading_throughput",
    "main",
    "cli",
]
