"""Training and evaluation of SwiftFormer on image-classification datasets: ``python -m swiftlib.train``.

    >>> import swiftlib.train as T
    >>> cfg = T.resolve_config(recipe="subset", model="SwiftFormer-XS", data="fashion-mnist", download=True,
    ...                        img_size=32)
    >>> result = T.fit(cfg, epochs=1)                   # out/last.pth, best.pth, metrics.csv, config.json
    >>> T.evaluate_checkpoint("runs/train/best.pth")    # {"loss", "top1", "top5", "count", ...}

Modules, one job each:

* :mod:`~swiftlib.train.config`: :class:`TrainConfig`, the ``paper`` / ``subset`` :data:`RECIPES`,
  :func:`resolve_config`, the datasets a config names;
* :mod:`~swiftlib.train.checks`: what a config and the machine must satisfy before any work (each
  failure one ValueError naming the flag);
* :mod:`~swiftlib.train.setup`: everything built before the first step (model, optimizer, schedule,
  EMA, loaders, the resume);
* :mod:`~swiftlib.train.loop`: :func:`fit` (one epoch after another, evaluation, checkpoints);
* :mod:`~swiftlib.train.evaluation`: :func:`evaluate`, :func:`evaluate_checkpoint`;
* :mod:`~swiftlib.train.state`: the one checkpoint layout of ``best.pth`` / ``last.pth`` (it loads with
  ``torch.load(..., weights_only=True)``; nothing non-finite is written);
* :mod:`~swiftlib.train.resume`: resuming (which file, whether it is this run's, changed settings);
* :mod:`~swiftlib.train.files`: the run folder (writable, stale temporary files, a full disk);
* :mod:`~swiftlib.train.report`: the epoch table on stdout, decode failures of every worker in
  ``data_report.json``;
* :mod:`~swiftlib.train.sampling`: :class:`ResumableSampler`, the evaluation shards, sample seeds,
  the distributed helpers;
* :mod:`~swiftlib.train.cli`: the command line (``python -m swiftlib.train``, ``torchrun -m swiftlib.train``).

Images enter the model as ``[B, 3, S, S]`` (S = ``img_size``) and leave as logits ``[B, K]``.
"""
from swiftlib.train.cli import main
from swiftlib.train.config import (RECIPES, TrainConfig, build_datasets, build_train_dataset, build_val_dataset,
                                   resolve_config)
from swiftlib.train.evaluation import evaluate, evaluate_checkpoint
from swiftlib.train.loop import fit
from swiftlib.train.sampling import ResumableSampler

__all__ = ["TrainConfig", "RECIPES", "resolve_config", "fit", "evaluate", "evaluate_checkpoint",
           "ResumableSampler", "main", "build_train_dataset", "build_val_dataset", "build_datasets"]
