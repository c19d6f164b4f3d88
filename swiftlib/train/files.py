"""The files of a run folder (``--out``): which ones a run writes, whether the folder can take them, the
temporary files an interrupted write left behind, and what a full disk means for them.

Every file of a run is written atomically by :mod:`swiftlib.io` (a temporary ``.{name}.XXXXXXXX.tmp``
in the same folder, then one rename): a reader sees the old file or the new one. A process killed in
the middle of a write (``kill -9``, a power cut) leaves that temporary file; the next run in the
folder removes the ones of its own files (:func:`remove_stale_temp_files`) and says so.
No tensors here: paths in, paths and messages out.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RUN_FILES", "check_writable_folder", "remove_stale_temp_files", "explain_disk_full", "format_bytes"]

#: The files a training run writes into its folder (all atomically).
RUN_FILES = ("last.pth", "best.pth", "config.json", "data_report.json", "metrics.json", "metrics.csv")


def check_writable_folder(flag: str, folder: str | os.PathLike) -> Path:
    """``folder`` as a Path if it is (or can be made as) a folder this process can write into, else a
    ValueError naming ``flag``. A missing folder is judged by its nearest existing parent. Permissions
    are asked with ``os.access`` and then tried with a temporary file (root passes ``os.access`` on
    any mode, not on a read-only or immutable file system)."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder (it holds last.pth, best.pth, metrics)")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {path}: {probe} is a file, so the folder cannot be created")
    where = "the folder" if probe == path else f"its parent {probe} (where it would be created)"
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {where} is not writable by this user")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: {where} cannot be written into ({e.strerror or e})") from e
    return path


def remove_stale_temp_files(folder: Path) -> list[str]:
    """Remove the ``.{name}.*.tmp`` files of :data:`RUN_FILES` in ``folder`` (left by a killed write);
    returns their names. Only this process's run writes them, so none of them is in use."""
    removed = []
    for name in RUN_FILES:
        for tmp in sorted(folder.glob(f".{name}.*.tmp")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def format_bytes(n: float) -> str:
    """``n`` bytes as ``'512 B'``, ``'3.2 MB'``, ``'1.5 GB'`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@contextlib.contextmanager
def explain_disk_full(path: Path, previous: str = "") -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) while writing ``path`` into one OSError naming the file, the free
    space of its folder and what is still on disk (``previous``, e.g. "the previous last.pth (epoch 3)")."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        try:
            free = format_bytes(shutil.disk_usage(path.parent).free) + " free"
        except OSError:
            free = "free space unknown"
        kept = previous or (f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} yet")
        raise OSError(e.errno, f"no space left on the device while writing {path} ({free} in {path.parent}); "
                               f"nothing was replaced: {kept}. Free some space, then resume with --resume") from e
