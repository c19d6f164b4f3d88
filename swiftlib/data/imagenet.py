"""ImageNet-1k class facts and subsets: class lists, WNID -> label index / human name, seeded picks.

No tensors: WNIDs (``"n01440764"``) in, label indices (0..999, timm's ``ImageNetInfo`` order) and
names (``"tench"``) out. Subsets are class lists committed in ``data/subsets`` (``imagenette``,
``imagewoof``, ``imagenet100``), files of WNIDs or sequences; :func:`select_classes` and
:func:`cap_per_class` draw seeded subsets of classes and of files per class.
:func:`imagenet_class_labels` is the one list of the 1000 class names (unique, in label order).
"""
from __future__ import annotations

import functools
import os
import random
from pathlib import Path
from typing import Sequence

from timm.data import ImageNetInfo

from swiftlib import DATA_DIR
from swiftlib.data.checks import check_int

__all__ = ["read_class_list", "imagenet_class_index", "imagenet_class_name", "require_imagenet_wnids",
           "imagenet_class_labels", "select_classes", "cap_per_class"]

SUBSETS_DIR = DATA_DIR / "subsets"


def read_class_list(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """WNIDs from a subset name (``imagenette``, ``imagewoof``, ``imagenet100`` in ``data/subsets``),
    a text file (one WNID a line, ``#`` comments) or a sequence of WNIDs; order preserved."""
    if not isinstance(spec, (str, os.PathLike)):
        wnids = [str(w) for w in spec]
    else:
        path = SUBSETS_DIR / f"{spec}.txt" if (SUBSETS_DIR / f"{spec}.txt").is_file() else Path(spec)
        if not path.is_file():
            known = sorted(p.stem for p in SUBSETS_DIR.glob("*.txt"))
            raise FileNotFoundError(f"class list {spec!r}: expected one of {known} or a file of WNIDs, "
                                    f"got no such file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"class list {path}: cannot be read as text, one WNID a line ({err})") from err
        wnids = [ln.split("#")[0].strip() for ln in text.splitlines()]
        wnids = [w for w in wnids if w]
    if not wnids:
        raise ValueError(f"class list {spec!r} is empty")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise ValueError(f"class list {spec!r} repeats {dup}")
    return wnids


@functools.lru_cache(maxsize=1)
def _imagenet_info() -> tuple[ImageNetInfo, dict[str, int]]:
    """timm's ImageNet-1k info (read once) and its WNID -> label index map."""
    info = ImageNetInfo()
    return info, {w: i for i, w in enumerate(info.label_names())}


def imagenet_class_index(wnid: str) -> int:
    """Index of a WNID in the ImageNet-1k label order (timm's ``ImageNetInfo``)."""
    index = _imagenet_info()[1].get(wnid)
    if index is None:
        raise ValueError(f"{wnid!r} is not one of the 1000 ImageNet-1k WNIDs (expected e.g. 'n01440764')")
    return index


def require_imagenet_wnids(wnids: Sequence[str], what: str) -> None:
    """Raise ValueError, naming ``what`` and the offenders, unless every WNID is one of ImageNet-1k's 1000."""
    index = _imagenet_info()[1]
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise ValueError(f"{what}: {len(unknown)} of {len(wnids)} names are not ImageNet-1k WNIDs: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''} (expected e.g. 'n01440764')")


def imagenet_class_name(wnid: str) -> str:
    """Short human name of an ImageNet WNID (``'n01440764' -> 'tench'``); the WNID itself if unknown."""
    info, index = _imagenet_info()
    return info.label_name_to_description(wnid).split(",")[0] if wnid in index else wnid


def imagenet_class_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in label order, short form ("tench", "goldfish" ...), each unique.

    The two short names that repeat ("crane" the bird and the machine, "maillot" twice) get their WNID
    appended, e.g. ``"crane (n02012849)"`` (Core ML classifier labels must be unique).
    """
    info = _imagenet_info()[0]
    short = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    counts = {s: short.count(s) for s in set(short)}
    return [f"{s} ({info.index_to_label_name(i)})" if counts[s] > 1 else s for i, s in enumerate(short)]


def select_classes(available: Sequence[str], *, classes=None, num_classes: int | None = None,
                   seed: int = 0) -> list[str]:
    """The classes a subset keeps: ``classes`` (list/name/file, must all be present, order kept), else
    ``num_classes`` drawn with ``random.Random(seed)`` from the sorted available ones (returned
    sorted), else all of them sorted."""
    available = sorted(available)
    if classes is not None:
        wanted = read_class_list(classes)
        missing = [w for w in wanted if w not in set(available)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} requested class folder(s) missing: {missing[:5]}"
                                    f"{' ...' if len(missing) > 5 else ''} (found {len(available)} class folders)")
        chosen = wanted
    else:
        chosen = available
    if num_classes is not None:
        check_int("num_classes", num_classes)
        if not 1 <= num_classes <= len(chosen):
            raise ValueError(f"num_classes must be in [1, {len(chosen)}] (classes available), got {num_classes}")
        chosen = sorted(random.Random(seed).sample(sorted(chosen), num_classes))
    return list(chosen)


def cap_per_class(files: Sequence[str], images_per_class: int | None, seed: int, key: str) -> list[str]:
    """At most ``images_per_class`` of ``files``: a seeded sample (by ``seed`` and class ``key``) of the
    sorted list, returned sorted; all of them when the cap is None or not reached."""
    files = sorted(files)
    images_per_class = check_int("images_per_class", images_per_class, allow_none=True)
    if images_per_class is None or len(files) <= images_per_class:
        return files
    return sorted(random.Random(f"{seed}:{key}").sample(files, images_per_class))
