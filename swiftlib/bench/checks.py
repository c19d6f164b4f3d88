"""What the flags of ``python -m swiftlib.bench`` must satisfy, checked before anything is measured.

Each failure is one ValueError whose message starts with the flag (``--d 30 is not divisible by
--heads 4``); :func:`swiftlib.bench.cli.main` answers it as a one-line usage error (exit status 2).
Sizes are token counts ``N``, batch sizes ``B``, embedding dims ``D`` and image sides ``H = W``.

* every subcommand: ``--device`` (:func:`swiftlib.measure.resolve_device`: ``cuda`` needs a GPU),
  ``--threads`` (>= 1), ``--json`` (not a folder; its folder exists and can be written into);
* ``attention``: ``--n``, ``--d``, ``--heads`` (``D`` divisible by it), ``--batch``, ``--rounds``,
  ``--min-run-time`` and ``--max-seconds-per-point`` (positive, finite), ``--variants`` (known
  names), ``--resume`` (needs ``--json``);
* ``models``: ``--model`` (:func:`swiftlib.models.resolve_name`), ``--batches``, ``--img`` (a multiple of
  32, the network's total stride), ``--peers`` (known names), ``--rounds``, ``--min-run-time``,
  ``--max-seconds``;
* ``train``: ``--model``, ``--sizes`` (>= :data:`swiftlib.models.MIN_INPUT_SIZE`), ``--batch`` (2 or
  more where the last feature map is 1 x 1), ``--steps``, ``--rounds``, ``--data-images`` (one image per
  class at least), ``--workers`` (>= 0), not both ``--skip-data`` and ``--skip-train``.

No tensors: the parsed flags (an ``argparse.Namespace``) in, the same namespace with the device
resolved and the name lists split, or a ValueError.
"""
from __future__ import annotations

import argparse
import math
import numbers
from pathlib import Path

from swiftlib.attention import VARIANTS
from swiftlib.bench.common import known_names
from swiftlib.bench.data_loading import JPEG_CLASSES
from swiftlib.bench.models import MODEL_PEERS
from swiftlib.export.common import check_img_size
from swiftlib.measure import resolve_device
from swiftlib.models import MIN_INPUT_SIZE, resolve_name, stage_shapes
from swiftlib.train.files import check_writable_folder

__all__ = ["check_args", "check_json", "split_names"]


def _int_at_least(flag: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _positive_finite(flag: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} must be a positive finite number of seconds, got {value!r}")


def split_names(flag: str, text: str | None, table, what: str, allow_empty: bool = False) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``, each a key of ``table`` (None stays None: all of them)."""
    if text is None:
        return None
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names and not allow_empty:
        raise ValueError(f"{flag} is empty; give at least one of {','.join(table)}")
    try:
        return known_names(names, table, what)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


def check_json(path: Path | None, resume: bool = False) -> None:
    """``--json``: a file path (not a folder) in an existing folder this process can write into."""
    if path is None:
        if resume:
            raise ValueError("--resume needs --json (the partial results are kept next to it)")
        return
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder; give the path of the results file, e.g. {path / 'bench.json'}")
    folder = path.parent
    if not folder.exists():
        raise ValueError(f"--json {path}: its folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise ValueError(f"--json {path}: {folder} is a file, not a folder")
    check_writable_folder("--json", folder)


def _check_model(args: argparse.Namespace) -> None:
    try:
        args.model = resolve_name(args.model)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--model: {e}") from None


def _check_attention(args: argparse.Namespace) -> None:
    for flag, value in (("--d", args.d), ("--heads", args.heads), ("--batch", args.batch), ("--rounds", args.rounds)):
        _int_at_least(flag, value)
    if args.d % args.heads:
        raise ValueError(f"--d {args.d} is not divisible by --heads {args.heads} (each head gets D / heads channels)")
    _positive_finite("--min-run-time", args.min_run_time)
    _positive_finite("--max-seconds-per-point", args.max_seconds_per_point)
    args.variants = split_names("--variants", args.variants, VARIANTS, "attention variant")
    check_json(args.json, args.resume)


def _check_models(args: argparse.Namespace) -> None:
    _check_model(args)
    _int_at_least("--rounds", args.rounds)
    try:
        check_img_size(args.img)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--img: {e}") from None
    _positive_finite("--min-run-time", args.min_run_time)
    _positive_finite("--max-seconds", args.max_seconds)
    args.peers = split_names("--peers", args.peers, MODEL_PEERS, "peer", allow_empty=True)
    check_json(args.json)


def _check_train(args: argparse.Namespace) -> None:
    if args.skip_data and args.skip_train:
        raise ValueError("--skip-data and --skip-train together leave nothing to run; give at most one")
    _check_model(args)
    for flag, value in (("--batch", args.batch), ("--steps", args.steps), ("--rounds", args.rounds)):
        _int_at_least(flag, value)
    _int_at_least("--workers", args.workers, 0)
    _int_at_least("--data-images", args.data_images, JPEG_CLASSES)
    small = [s for s in args.sizes if s < MIN_INPUT_SIZE]
    if small:
        raise ValueError(f"--sizes {','.join(map(str, small))}: below the smallest input SwiftFormer takes "
                         f"({MIN_INPUT_SIZE} px, the network's total stride)")
    one_by_one = [s for s in args.sizes if stage_shapes(args.model, s)[-1]["tokens"] == 1]
    if args.batch == 1 and one_by_one and not args.skip_train:
        raise ValueError(f"--batch 1 at --sizes {','.join(map(str, one_by_one))}: the last feature map is 1 x 1, so "
                         f"training-mode BatchNorm sees one value per channel; use --batch 2 or more")
    check_json(args.json)


_CHECKS = {"attention": _check_attention, "models": _check_models, "train": _check_train}


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` checked (a ValueError naming the flag), with ``device`` resolved to a string and the
    ``--variants`` / ``--peers`` lists split."""
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as e:
        raise ValueError(f"--device {args.device}: {e}") from None
    if args.threads is not None:
        _int_at_least("--threads", args.threads)
    _CHECKS[args.command](args)
    return args
