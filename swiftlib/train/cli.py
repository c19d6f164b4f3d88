"""``python -m swiftlib.train``: every :class:`~swiftlib.train.TrainConfig` field is a flag (``--img-size``,
``--no-cache``, ...) that overrides the recipe; ``--evaluate CHECKPOINT`` scores a saved run instead;
``--resume`` alone means ``--resume auto`` (``out/last.pth`` if there is one). Prints the epoch table
(one row per epoch, :class:`~swiftlib.train.report.EpochTable`; ``--no-progress`` leaves it out) and,
last, one JSON line: the run's summary, or the checkpoint's loss / top-1 / top-5 / count. Progress
bars and messages go to stderr.

A mistake is one line on stderr and exit status 2 (:func:`swiftlib.cli.run`): a bad flag value, a
missing file, a checkpoint of another run, a full disk, a loss that turned nan. ``--debug`` (or
``SWIFTLIB_DEBUG=1``) shows the traceback.

No tensors here: strings in, the config's plain values and a JSON line out.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=8 -m swiftlib.train ...`` (NCCL on GPU, gloo on
CPU); the same command runs as one CPU process without torchrun.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from swiftlib.cli import ArgumentParser, add_debug_argument, run
from swiftlib.data import DATASETS
from swiftlib.train.checks import CHOICES, flag
from swiftlib.train.config import RECIPE_NAMES, RECIPES, TrainConfig
from swiftlib.train.evaluation import evaluate_checkpoint
from swiftlib.train.loop import fit
from swiftlib.train.sampling import dist_info

__all__ = ["PROG", "main", "cli"]

PROG = "python -m swiftlib.train"
_CHOICES = {**CHOICES, "data": DATASETS, "recipe": RECIPE_NAMES}


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Train or evaluate SwiftFormer on an image-classification dataset.")
    p.add_argument("--evaluate", metavar="CHECKPOINT", default=None,
                   help="only evaluate this checkpoint on the validation split and print JSON")
    p.add_argument("--use-ema", action="store_true", help="with --evaluate: the EMA weights")
    add_debug_argument(p)
    for f in dataclasses.fields(TrainConfig):
        kind = str(f.type)
        default = f.default if f.default is not None else (
            "from the recipe" if any(f.name in r for r in RECIPES.values()) else "none")
        if "bool" in kind:
            p.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                           help=f"(default: {default})")
        elif f.name == "resume":
            p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="LAST_PTH",
                           help="continue a run from its last.pth; alone or 'auto': OUT/last.pth if present")
        else:
            conv = int if "int" in kind and "str" not in kind else float if "float" in kind else str
            p.add_argument(flag(f.name), type=conv, default=None, choices=_CHOICES.get(f.name),
                           help=f"(default: {default})")
    return p


def main(argv=None) -> dict:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns fit's or evaluate_checkpoint's result.

    Errors propagate (ValueError, FileNotFoundError, ...); :func:`cli` is the same with one-line answers.
    """
    args = _parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    if args.evaluate:
        res = evaluate_checkpoint(args.evaluate, use_ema=args.use_ema, **given)
        print(json.dumps({k: v for k, v in res.items() if k != "class_names"}))
        return res
    res = fit(TrainConfig(**given))
    if dist_info()[0] == 0:
        summary = {"status": res["status"], "best_top1": res["best_top1"], "out": res["out"],
                   "last": res["history"][-1] if res["history"] else None}
        print(json.dumps(summary))
    return res


def cli(argv=None) -> dict:
    """``python -m swiftlib.train``: :func:`main` with every user error answered in one line, exit status 2."""
    return run(main, argv, prog=PROG)
